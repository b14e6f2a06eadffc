"""Prepare ultralytics to run with no network: no font, hub, weight or pip downloads.

Cluster pods often have no egress, and neither do CI machines. Ultralytics reaches for the
network in three places during training: the Arial fonts for plot labels, the AMP check
(it downloads a reference model on CUDA), and settings/hub sync. This module closes all
three before `ultralytics` is imported. Importing a pogona module prepares nothing: every
function that imports from ultralytics calls `offline_ultralytics()` just before, and the first
call in a process prepares it (later calls return the prepared module at once).
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from components.config import cache_root
from components.log import LOG

_FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


def _config_dir() -> Path:
    configured = os.environ.get("YOLO_CONFIG_DIR")
    if configured:
        return Path(configured)
    return cache_root() / "ultralytics"


def _install_fonts(config_dir: Path) -> None:
    """Ultralytics looks for Arial in its config dir before downloading it; give it matplotlib's DejaVu."""
    import matplotlib

    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in _FONT_NAMES:
        target = config_dir / "Ultralytics" / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundled, target)


def _amp_check_offline(model: Any) -> bool:
    """Replaces ultralytics' AMP check, which downloads a model; the dead-run detector guards AMP instead.

    Like the original, it keeps AMP off on CPU and MPS, where ultralytics does not use it.
    """
    device = next(model.parameters()).device
    if device.type in {"cpu", "mps"}:
        return False
    LOG.info("AMP: enabled; the dead-run detector aborts on zero or NaN losses instead of ultralytics' "
             "download-based AMP check")
    return True


@functools.cache
def offline_ultralytics() -> ModuleType:
    """Configure the environment, import ultralytics and return it, guaranteed not to touch the network.

    The config dir and offline mode take effect only if this runs before anything imports ultralytics;
    the pip-install switch, hub sync and the AMP check are set on the imported modules, so they hold either way.
    """
    config_dir = _config_dir()
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ["YOLO_OFFLINE"] = "true"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("YOLO_VERBOSE", "true")
    _install_fonts(config_dir)

    import ultralytics
    from ultralytics.engine import trainer
    from ultralytics.utils import SETTINGS, checks

    integrations = ("sync", "wandb", "mlflow", "comet", "clearml", "neptune", "dvc", "raytune", "tensorboard")
    SETTINGS.update({key: False for key in integrations if key in SETTINGS})
    checks.AUTOINSTALL = False  # read from YOLO_AUTOINSTALL when ultralytics is imported
    trainer.check_amp = _amp_check_offline
    return ultralytics
