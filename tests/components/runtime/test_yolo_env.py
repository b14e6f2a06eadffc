"""Ultralytics is prepared when a step needs it, never by importing a module; a DDP worker, which imports only
the trainer class, gets it prepared all the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
# every module of components/ and pipelines/ except the trainer class, which prepares ultralytics on purpose
IMPORT_ALL = """
import importlib, json, os, pkgutil, sys
import components, pipelines, pipelines.cli
for package in (components, pipelines, pipelines.cli):
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if module.name != "components.training.trainer":
            importlib.import_module(module.name)
print(json.dumps([[name for name in ("torch", "ultralytics") if name in sys.modules],
                  [key for key in os.environ if key.startswith("YOLO")]]))
"""
# what ultralytics' DDP worker script does: import ultralytics, then unpickle the trainer class by its module name
DDP_WORKER = """
import json
from ultralytics.utils import DEFAULT_CFG_DICT
from components.training.trainer import GuardedDetectionTrainer
from ultralytics.engine import trainer
from ultralytics.utils import SETTINGS, checks
print(json.dumps([trainer.check_amp.__module__, checks.AUTOINSTALL, SETTINGS["sync"]]))
"""


def _python(code: str, env: dict[str, str]) -> list:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def _without_yolo_variables() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("YOLO")}


def test_importing_any_step_or_pipeline_module_imports_no_torch_and_sets_no_yolo_variable():
    assert _python(IMPORT_ALL, _without_yolo_variables()) == [[], []]


def test_a_ddp_worker_importing_the_trainer_class_gets_ultralytics_offline(tmp_path: Path):
    # the variables a worker inherits from the parent, which prepared ultralytics before it launched it
    inherited = {**_without_yolo_variables(), "YOLO_CONFIG_DIR": str(tmp_path), "YOLO_OFFLINE": "true"}
    assert _python(DDP_WORKER, inherited) == ["components.runtime.yolo_env", False, False]
