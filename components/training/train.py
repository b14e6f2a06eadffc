"""Multi-epoch training: guarded by the dead-run detector, resumable from object storage.

`train_model` checks the device and batch, fetches what an earlier attempt of the run left in the
store (`components.training.resume`), and trains with `components.training.trainer.GuardedDetectionTrainer`,
which stops dead runs, plans the batch and uploads a checkpoint every epoch. Its outputs are
written by `components.training.outputs`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from components import layout
from components.training.batch_policy import BatchPlan, plan_batch
from components.config import TrainConfig, check_settings
from components.data.dataset import Dataset, load_dataset
from components.runtime.devices import check_device
from components.errors import UserError
from components.training.image_cache import choose_cache
from components.log import LOG
from components.training.resume import complete_finished_run, fetch_checkpoint
from components.storage import open_store
from components.training.outputs import TrainResult, write_outputs
from components.training.weights import default_cache_dir, resolve_weights
from components.runtime.yolo_env import offline_ultralytics

CPU_BATCH = 16


def training_batch(batch: float, device: str) -> float | int:
    """A fractional batch is a share of GPU memory (AutoBatch); elsewhere it becomes a fixed batch size."""
    if batch >= 1:
        return int(batch)
    if device in {"cpu", "mps"}:
        LOG.info(f"batch {batch} is a fraction of GPU memory; on {device} training uses batch {CPU_BATCH}")
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
    check_settings(config)
    device = check_device(config.device)
    ultralytics = offline_ultralytics()
    from components.training.trainer import CHECKPOINT_URI_ENV, GuardedDetectionTrainer

    batch = training_batch(config.batch, device)
    dataset = load_dataset(data)
    on_gpu = device not in {"cpu", "mps"}  # ultralytics loads CPU training's batches in the main process
    cache = choose_cache(config.cache, dataset.images("train"), config.imgsz, workers=config.workers if on_gpu else 0,
                         ranks=len(device.split(",")) if on_gpu else 1)
    out_dir = out_dir.resolve()
    checkpoint_uri = open_store(store).url(layout.run_checkpoints(run_id)) if store and run_id else ""
    checkpoint = fetch_checkpoint(checkpoint_uri, out_dir, config.epochs) if checkpoint_uri else None
    # a new run resolves them before anything is written; a resumed one trains on from its checkpoint
    base_weights = checkpoint.base_weights() if checkpoint else resolve_weights(config.weights, config.model,
                                                                                default_cache_dir(), store)
    out_dir.mkdir(parents=True, exist_ok=True)
    # beside out_dir, not in it: ultralytics empties the save dir before it launches DDP workers
    data_yaml = dataset.write_yaml(out_dir.parent / f"{out_dir.name}.data.yaml")
    if checkpoint and checkpoint.finished:
        validation_batch = int(config.batch) if config.batch >= 1 else CPU_BATCH
        return complete_finished_run(checkpoint, data_yaml, out_dir, config, device, validation_batch, base_weights)
    resume_from = checkpoint.last if checkpoint else None
    model = ultralytics.YOLO(str(resume_from) if resume_from else base_weights.path)
    with _environment(CHECKPOINT_URI_ENV, checkpoint_uri):
        model.train(trainer=GuardedDetectionTrainer, data=str(data_yaml), save_dir=str(out_dir), exist_ok=True,
                    resume=str(resume_from) if resume_from else False, epochs=config.epochs,
                    patience=config.patience, imgsz=config.imgsz, batch=batch, device=device,
                    optimizer=config.optimizer, lr0=config.lr0, cos_lr=config.cos_lr, seed=config.seed,
                    workers=config.workers, cache=cache.setting, amp=on_gpu)
    reported = model.metrics  # DetMetrics in one process; the checkpoint's dict after DDP
    final_metrics = reported.results_dict if hasattr(reported, "results_dict") else reported or {}
    return write_outputs(final_metrics, int(getattr(model.trainer, "epochs", config.epochs)), out_dir, config,
                         device, base_weights, _batch_plan(model.trainer, dataset))


def _batch_plan(trainer: Any, dataset: Dataset) -> BatchPlan:
    """The plan the trainer logged; a DDP parent, whose workers built the loaders, works it out from the same
    numbers."""
    return trainer.batch_plan or plan_batch(int(trainer.args.batch), len(dataset.images("train")), trainer.epochs,
                                            trainer.world_size, nbs=trainer.args.nbs,
                                            warmup_epochs=trainer.args.warmup_epochs)
