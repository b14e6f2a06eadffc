"""Resume a training run from what an earlier attempt of the same run left in the object store.

A pod lost mid-training is retried with the same run id; the guarded trainer uploaded a
checkpoint after every epoch (`runs/<id>/checkpoints/`), so the retry downloads it and goes on
from there. An attempt that trained every epoch but died before writing its outputs trains no
more: its best.pt is validated and the outputs are written from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.config import TrainConfig
from components.errors import UserError
from components.log import LOG
from components.storage import open_store
from components.training.checkpoints import trim_results
from components.training.outputs import TrainResult, write_outputs
from components.training.weights import BaseWeights
from components.runtime.yolo_env import offline_ultralytics


@dataclass(frozen=True)
class Checkpoint:
    """What a previous attempt of the same run left in the store."""

    last: Path
    finished: bool
    train_args: dict[str, Any]  # the arguments the run was started with, saved in last.pt

    def base_weights(self) -> BaseWeights:
        """What the run started from, as its first attempt loaded it: resuming needs neither those weights nor
        their store, so a retry never fails on weights removed since."""
        started = str(self.train_args.get("model") or "")
        return BaseWeights(started, "resumed", "", pretrained=not started.endswith((".yaml", ".yml")))


def fetch_checkpoint(checkpoint_uri: str, out_dir: Path, epochs: int) -> Checkpoint | None:
    """Download a previous attempt's checkpoint files into out_dir; None when there is none."""
    store = open_store(checkpoint_uri)
    if not store.exists("last.pt"):
        return None
    weights = out_dir / "weights"
    store.download("last.pt", weights / "last.pt")
    for name, target in (("results.csv", out_dir / "results.csv"), ("best.pt", weights / "best.pt")):
        if store.exists(name):
            store.download(name, target)
    offline_ultralytics()  # last.pt holds ultralytics objects: loading it imports ultralytics
    import torch

    saved = torch.load(weights / "last.pt", map_location="cpu", weights_only=False)
    saved_epoch = saved.get("epoch", -1)
    if saved_epoch < 0:
        raise UserError(f"{store.url('last.pt')} holds no training state; start a new run with another --run-id")
    finished = saved_epoch + 1 >= epochs
    if finished and not (weights / "best.pt").is_file():
        raise UserError(f"{store.url('last.pt')} is a finished run (epoch {saved_epoch + 1} of {epochs}) without "
                        "best.pt beside it; start a new run with another --run-id")
    LOG.info(f"{'completing' if finished else 'resuming'} from {store.url('last.pt')} "
             f"after epoch {saved_epoch + 1} of {epochs}")
    trim_results(out_dir / "results.csv", saved_epoch + 1)  # it may have landed after last.pt's epoch, last.pt not
    return Checkpoint(weights / "last.pt", finished, saved.get("train_args") or {})


def complete_finished_run(checkpoint: Checkpoint, data_yaml: Path, out_dir: Path, config: TrainConfig,
                          device: str, batch: int, base_weights: BaseWeights) -> TrainResult:
    """The previous attempt trained every epoch but died before its outputs: validate best.pt and write them."""
    train_args = checkpoint.train_args
    (out_dir / "args.yaml").write_text(yaml.safe_dump({**train_args, "save_dir": str(out_dir)}, sort_keys=False))
    validation = offline_ultralytics().YOLO(str(out_dir / "weights" / "best.pt")).val(
        data=str(data_yaml), imgsz=train_args.get("imgsz", config.imgsz), batch=batch, device=device,
        project=str(out_dir.parent), name=f"{out_dir.name}-final", exist_ok=True)
    return write_outputs(validation.results_dict, config.epochs, out_dir, config, device, base_weights)
