"""Multi-epoch training: guarded by the dead-run detector, resumable from object storage.

`train_model` checks the device and batch, fetches what an earlier attempt of the run left in the
store (`components.resume`), and trains with `components.guarded_trainer.GuardedDetectionTrainer`,
which stops dead runs and uploads a checkpoint every epoch. Its outputs are written by
`components.train_outputs`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from components.config import TrainConfig
from components.dataset import load_dataset
from components.errors import UserError
from components.resume import complete_finished_run, fetch_checkpoint
from components.storage import open_store
from components.train_outputs import TrainResult, write_outputs
from components.weights import default_cache_dir, resolve_weights
from components.yolo_env import offline_ultralytics

LOGGER = logging.getLogger("ultralytics")  # ultralytics' own logger; set up once ultralytics is prepared
CPU_BATCH = 16


def check_device(device: str) -> str:
    """Refuse CUDA training without CUDA at once: a silent fallback would run 100 epochs on CPU."""
    import torch

    wanted = device.strip().lower()
    if wanted in {"cpu", "mps"}:
        return wanted
    indices = [] if wanted in {"cuda", ""} else wanted.replace("cuda:", "").split(",")
    if not torch.cuda.is_available():
        raise UserError(f"device {device!r} asks for CUDA, but CUDA is not available on this machine "
                        "(torch.cuda.is_available() is False); pass --device cpu to train on CPU on purpose")
    if any(not index.isdigit() or int(index) >= torch.cuda.device_count() for index in indices):
        raise UserError(f"device {device!r} names a GPU this machine does not have "
                        f"({torch.cuda.device_count()} visible)")
    return ",".join(indices) if indices else "0"


def training_batch(batch: float, device: str) -> float | int:
    """A fractional batch is a share of GPU memory (AutoBatch); elsewhere it becomes a fixed batch size."""
    if batch >= 1:
        return int(batch)
    if device in {"cpu", "mps"}:
        LOGGER.info(f"pogona: batch {batch} is a fraction of GPU memory; on {device} training uses batch {CPU_BATCH}")
        return CPU_BATCH
    if "," in device:
        raise UserError(f"batch {batch} (a share of GPU memory) cannot be used with several GPUs ({device}); "
                        "give an integer batch that is a multiple of the GPU count")
    return batch


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def train_model(data: Path, out_dir: Path, config: TrainConfig = TrainConfig(), store: str = "",
                run_id: str = "") -> TrainResult:
    """Train a detector into out_dir; with store and run_id, checkpoint every epoch and resume from there."""
    device = check_device(config.device)
    ultralytics = offline_ultralytics()
    from components.guarded_trainer import CHECKPOINT_URI_ENV, GuardedDetectionTrainer

    batch = training_batch(config.batch, device)
    dataset = load_dataset(data)
    out_dir = out_dir.resolve()
    checkpoint_uri = open_store(store).url(f"runs/{run_id}/checkpoints") if store and run_id else ""
    checkpoint = fetch_checkpoint(checkpoint_uri, out_dir, config.epochs) if checkpoint_uri else None
    # a run that resumes needs no base weights; a new one resolves them before it writes anything
    base_weights = None if checkpoint else resolve_weights(config.weights, config.model, default_cache_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    # beside out_dir, not in it: ultralytics empties the save dir before it launches DDP workers
    data_yaml = dataset.write_yaml(out_dir.parent / f"{out_dir.name}.data.yaml")
    if checkpoint and checkpoint.finished:
        validation_batch = int(config.batch) if config.batch >= 1 else CPU_BATCH
        return complete_finished_run(checkpoint, data_yaml, out_dir, config, device, validation_batch)
    resume_from = checkpoint.last if checkpoint else None
    model = ultralytics.YOLO(str(resume_from) if resume_from else base_weights)
    with _environment(CHECKPOINT_URI_ENV, checkpoint_uri):
        model.train(trainer=GuardedDetectionTrainer, data=str(data_yaml), save_dir=str(out_dir), exist_ok=True,
                    resume=str(resume_from) if resume_from else False, epochs=config.epochs,
                    patience=config.patience, imgsz=config.imgsz, batch=batch, device=device,
                    optimizer=config.optimizer, lr0=config.lr0, cos_lr=config.cos_lr, seed=config.seed,
                    workers=config.workers, amp=device not in {"cpu", "mps"})
    reported = model.metrics  # DetMetrics in one process; the checkpoint's dict after DDP
    final_metrics = reported.results_dict if hasattr(reported, "results_dict") else reported or {}
    return write_outputs(final_metrics, int(getattr(model.trainer, "epochs", config.epochs)), out_dir, config,
                         device)
