"""Multi-epoch training: guarded by the dead-run detector, resumable from object storage.

`GuardedDetectionTrainer` carries the dead-run detector and the checkpoint upload in the
trainer class itself, because ultralytics runs DDP by re-creating the trainer from its class
in fresh worker processes, where callbacks added to a `YOLO` object do not follow. Checkpoints
upload in the background (`components.checkpoints`) and are all stored before the final
validation, or before an error leaves the trainer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import yaml

from components.batch_policy import BatchPlan, choose_batch, plan_batch
from components.checkpoints import CheckpointUploads
from components.config import CLASS_NAMES, IMAGE_SUFFIXES, SPLITS, TrainConfig
from components.deadrun import DeadRunDetector
from components.devices import check_device
from components.errors import UserError
from components.image_cache import choose_cache
from components.results_csv import EPOCH_COLUMNS, per_epoch, read_history, summarize_metrics
from components.snapshot import modality_of
from components.storage import open_store
from components.weights import BaseWeights, default_cache_dir, resolve_weights
from components.yolo_env import offline_ultralytics

offline_ultralytics()

from ultralytics import YOLO  # noqa: E402  (after offline_ultralytics, which must run first)
from ultralytics.cfg import DEFAULT_CFG  # noqa: E402
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.utils import LOGGER, RANK  # noqa: E402

CHECKPOINT_URI_ENV = "POGONA_CHECKPOINT_URI"
CPU_BATCH = 16
log = logging.getLogger("pogona")


def _watch_batch(trainer: GuardedDetectionTrainer) -> None:
    trainer.dead_run_detector.on_train_batch_end(trainer)


def _watch_epoch(trainer: GuardedDetectionTrainer) -> None:
    trainer.dead_run_detector.on_train_epoch_end(trainer)


def _upload_checkpoint(trainer: GuardedDetectionTrainer) -> None:
    """After every saved epoch, queue last.pt, results.csv and a new best.pt for where a restarted run finds them."""
    if trainer.checkpoint_uploads is None or RANK not in {-1, 0}:
        return
    files = {"results.csv": trainer.csv, "last.pt": trainer.last}
    if trainer.best_fitness == trainer.fitness and trainer.best.is_file():  # ultralytics just wrote a new best.pt
        files["best.pt"] = trainer.best
    trainer.checkpoint_uploads.submit(files)


class GuardedDetectionTrainer(DetectionTrainer):
    """DetectionTrainer with the dead-run detector and, when asked, per-epoch checkpoint upload.

    The checkpoint destination travels in the environment (`POGONA_CHECKPOINT_URI`), the one
    channel ultralytics' DDP launcher carries into its workers besides the trainer arguments.
    """

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict | None = None, _callbacks: dict | None = None):
        super().__init__(cfg, overrides, _callbacks)
        self.batch_plan: BatchPlan | None = None
        self.train_images = 0
        self.dead_run_detector = DeadRunDetector()
        checkpoint_uri = os.environ.get(CHECKPOINT_URI_ENV, "")
        # staged beside the save dir, not in it: ultralytics empties the save dir before it launches DDP workers
        self.checkpoint_uploads = CheckpointUploads(open_store(checkpoint_uri), self.save_dir.parent,
                                                    LOGGER.info) if checkpoint_uri else None
        hooks = [("on_train_batch_end", _watch_batch), ("on_train_epoch_end", _watch_epoch),
                 ("on_model_save", _upload_checkpoint)]
        for event, hook in hooks:
            if hook not in self.callbacks[event]:  # DDP workers receive the parent's callbacks pickled
                self.add_callback(event, hook)

    def optimizer_step(self) -> None:
        super().optimizer_step()
        self.dead_run_detector.count_optimizer_step()

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        """ultralytics' dataset; the train split's size is kept for the batch policy."""
        dataset = super().build_dataset(img_path, mode, batch)
        if mode == "train":
            self.train_images = len(dataset)
        return dataset

    def auto_batch(self) -> int:
        """AutoBatch's answer is a ceiling on GPU memory, not the batch: the policy picks within it
        (components.batch_policy), so that each epoch has enough optimizer steps."""
        memory_batch = super().auto_batch()  # builds the train dataset, so train_images is known
        self.batch_plan = choose_batch(memory_batch, self.train_images, self.epochs, self.world_size,
                                       nbs=self.args.nbs, warmup_epochs=self.args.warmup_epochs)
        return self.batch_plan.batch

    def _build_train_pipeline(self) -> None:
        """Build the loaders, then log what the batch means for this run (a given batch gets its plan too)."""
        super()._build_train_pipeline()
        chosen = self.batch_plan
        if chosen is None or chosen.batch != self.batch_size:
            reason = ("the batch given" if chosen is None else
                      f"ultralytics halved batch {chosen.batch} after running out of GPU memory")
            self.batch_plan = plan_batch(self.batch_size, len(self.train_loader.dataset), self.epochs,
                                         self.world_size, reason, self.args.nbs, self.args.warmup_epochs)
        if RANK in {-1, 0}:
            log.info(f"batch plan: {self.batch_plan.summary()}")

    def final_eval(self) -> None:
        """Store the last checkpoint before the final validation rewrites last.pt and best.pt without their
        training state; an upload that failed for good fails the step here."""
        if self.checkpoint_uploads is not None:
            self.checkpoint_uploads.wait()
        super().final_eval()

    def train(self) -> None:
        """Train; on an error, still store the checkpoints already queued, so a retry resumes from the newest."""
        try:
            super().train()
        except BaseException as error:
            if self.checkpoint_uploads is not None:
                _wait_beside(self.checkpoint_uploads, error)
            raise


def _wait_beside(uploads: CheckpointUploads, error: BaseException) -> None:
    """Wait for the queued uploads while `error` is on its way out; an upload failure is logged, never raised
    in its place."""
    try:
        uploads.wait()
    except Exception as failure:
        if failure is not error:
            LOGGER.error(f"pogona: {failure}")


@dataclass(frozen=True)
class Dataset:
    """A dataset as ultralytics needs it: root, class names, and each split's image folder or list."""

    root: Path
    names: dict[int, str]
    splits: dict[str, Path]

    def images(self, split: str) -> list[Path]:
        source = self.splits[split]
        if source.suffix == ".txt":
            return [Path(line.strip()) for line in source.read_text().splitlines() if line.strip()]
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)

    def write_yaml(self, path: Path, splits: dict[str, Path] | None = None) -> Path:
        """A data.yaml with absolute paths (ultralytics resolves relative ones against its own datasets dir)."""
        chosen = splits if splits is not None else self.splits
        content = {"path": str(self.root), **{s: str(p) for s, p in chosen.items()}, "names": self.names}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path


def image_modality(image: Path, split_source: Path) -> str:
    """The image's modality as validation counts it: `modality_of` on its path below the split's folder.

    An image from a .txt list (or outside the folder) is judged by its own folder and filename.
    """
    below = image.relative_to(split_source) if image.is_relative_to(split_source) else Path(image.parent.name,
                                                                                            image.name)
    return modality_of(PurePosixPath(below.as_posix()))


def load_dataset(data: Path) -> Dataset:
    """Read a dataset folder (with data.yaml) or a data.yaml; missing split entries default to images/<split>."""
    yaml_path = data / "data.yaml" if data.is_dir() else data
    if not yaml_path.is_file():
        raise UserError(f"{data} has no data.yaml (give a dataset folder containing data.yaml, or its path)")
    spec = yaml.safe_load(yaml_path.read_text()) or {}
    root = Path(spec.get("path") or yaml_path.parent)
    root = (root if root.is_absolute() else yaml_path.parent / root).resolve()
    names = spec.get("names") or CLASS_NAMES
    names = dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
    splits = {}
    for split in SPLITS:
        entry = spec.get(split) or (f"images/{split}" if (root / "images" / split).is_dir() else None)
        if entry is None:
            continue
        if not isinstance(entry, str):
            raise UserError(f"{yaml_path}: '{split}' must be one folder or one .txt list, not {entry!r}")
        # relative to `path`, `..` collapsed without following links (a symlinked split keeps its labels beside it)
        source = Path(entry) if Path(entry).is_absolute() else Path(os.path.normpath(root / entry))
        if not source.exists():
            raise UserError(f"{yaml_path}: {split} images {source} do not exist")
        splits[split] = source
    for required in ("train", "val"):
        if required not in splits:
            raise UserError(f"{yaml_path}: no {required} split (expected images/{required}/ under {root})")
    return Dataset(root, names, splits)


@dataclass(frozen=True)
class TrainResult:
    best: Path
    last: Path
    results_csv: Path
    args_yaml: Path
    metrics_json: Path
    epochs_completed: int
    metrics: dict[str, float] = field(default_factory=dict)


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


@dataclass(frozen=True)
class Checkpoint:
    """What a previous attempt of the same run left in the store."""

    last: Path
    epoch: int  # 0-based epoch of last.pt
    finished: bool
    train_args: dict[str, Any]  # the arguments the run was started with, saved in last.pt


def _fetch_checkpoint(checkpoint_uri: str, out_dir: Path, epochs: int) -> Checkpoint | None:
    """Download a previous attempt's checkpoint files into out_dir; None when there is none."""
    store = open_store(checkpoint_uri)
    if not store.exists("last.pt"):
        return None
    weights = out_dir / "weights"
    store.download("last.pt", weights / "last.pt")
    for name, target in (("results.csv", out_dir / "results.csv"), ("best.pt", weights / "best.pt")):
        if store.exists(name):
            store.download(name, target)
    import torch

    saved = torch.load(weights / "last.pt", map_location="cpu", weights_only=False)
    saved_epoch = saved.get("epoch", -1)
    if saved_epoch < 0:
        raise UserError(f"{store.url('last.pt')} holds no training state; start a new run with another --run-id")
    finished = saved_epoch + 1 >= epochs
    if finished and not (weights / "best.pt").is_file():
        raise UserError(f"{store.url('last.pt')} is a finished run (epoch {saved_epoch + 1} of {epochs}) without "
                        "best.pt beside it; start a new run with another --run-id")
    LOGGER.info(f"pogona: {'completing' if finished else 'resuming'} from {store.url('last.pt')} "
                f"after epoch {saved_epoch + 1} of {epochs}")
    return Checkpoint(weights / "last.pt", saved_epoch, finished, saved.get("train_args") or {})


def _complete_finished_run(checkpoint: Checkpoint, data_yaml: Path, out_dir: Path, config: TrainConfig,
                           device: str, base_weights: BaseWeights) -> TrainResult:
    """The previous attempt trained every epoch but died before its outputs: validate best.pt and write them."""
    train_args = checkpoint.train_args
    (out_dir / "args.yaml").write_text(yaml.safe_dump({**train_args, "save_dir": str(out_dir)}, sort_keys=False))
    validation = YOLO(str(out_dir / "weights" / "best.pt")).val(
        data=str(data_yaml), imgsz=train_args.get("imgsz", config.imgsz), batch=config.batch if config.batch >= 1
        else CPU_BATCH, device=device, project=str(out_dir.parent), name=f"{out_dir.name}-final", exist_ok=True)
    return _write_outputs(validation.results_dict, config.epochs, out_dir, config, device, base_weights)


def read_results(results_csv: Path) -> list[dict[str, float]]:
    """Per-epoch losses and metrics from ultralytics' results.csv, under the verdict/report names."""
    return per_epoch(read_history(results_csv)) if results_csv.is_file() else []


def train_model(data: Path, out_dir: Path, config: TrainConfig = TrainConfig(), store: str = "",
                run_id: str = "") -> TrainResult:
    """Train a detector into out_dir; with store and run_id, checkpoint every epoch and resume from there."""
    device = check_device(config.device)
    batch = training_batch(config.batch, device)
    dataset = load_dataset(data)
    on_gpu = device not in {"cpu", "mps"}  # ultralytics loads CPU training's batches in the main process
    cache = choose_cache(config.cache, dataset.images("train"), config.imgsz, workers=config.workers if on_gpu else 0,
                         ranks=len(device.split(",")) if on_gpu else 1)
    out_dir = out_dir.resolve()
    checkpoint_uri = open_store(store).url(f"runs/{run_id}/checkpoints") if store and run_id else ""
    checkpoint = _fetch_checkpoint(checkpoint_uri, out_dir, config.epochs) if checkpoint_uri else None
    # resolved before anything is written; a run that resumes trains on from its checkpoint, and records them
    base_weights = resolve_weights(config.weights, config.model, default_cache_dir(), store)
    out_dir.mkdir(parents=True, exist_ok=True)
    # beside out_dir, not in it: ultralytics empties the save dir before it launches DDP workers
    data_yaml = dataset.write_yaml(out_dir.parent / f"{out_dir.name}.data.yaml")
    if checkpoint and checkpoint.finished:
        return _complete_finished_run(checkpoint, data_yaml, out_dir, config, device, base_weights)
    resume_from = checkpoint.last if checkpoint else None
    model = YOLO(str(resume_from) if resume_from else base_weights.path)
    with _environment(CHECKPOINT_URI_ENV, checkpoint_uri):
        model.train(trainer=GuardedDetectionTrainer, data=str(data_yaml), save_dir=str(out_dir), exist_ok=True,
                    resume=str(resume_from) if resume_from else False, epochs=config.epochs,
                    patience=config.patience, imgsz=config.imgsz, batch=batch, device=device,
                    optimizer=config.optimizer, lr0=config.lr0, cos_lr=config.cos_lr, seed=config.seed,
                    workers=config.workers, cache=cache.setting, amp=on_gpu)
    reported = model.metrics  # DetMetrics in one process; the checkpoint's dict after DDP
    final_metrics = reported.results_dict if hasattr(reported, "results_dict") else reported or {}
    return _write_outputs(final_metrics, int(getattr(model.trainer, "epochs", config.epochs)), out_dir, config,
                          device, base_weights, _batch_plan(model.trainer, dataset))


def _batch_plan(trainer: GuardedDetectionTrainer, dataset: Dataset) -> BatchPlan:
    """The plan the trainer logged; a DDP parent, whose workers built the loaders, works it out from the same
    numbers."""
    return trainer.batch_plan or plan_batch(int(trainer.args.batch), len(dataset.images("train")), trainer.epochs,
                                            trainer.world_size, nbs=trainer.args.nbs,
                                            warmup_epochs=trainer.args.warmup_epochs)


def _write_outputs(metrics_source: dict[str, Any], trained_epochs: int, out_dir: Path, config: TrainConfig,
                   device: str, base_weights: BaseWeights, batch_plan: BatchPlan | None = None) -> TrainResult:
    """metrics.json and the TrainResult from the save dir and the final validation of best.pt."""
    history = read_history(out_dir / "results.csv")
    epochs = len(history.epochs)
    best = summarize_metrics(history).get("map50_95")
    names = {column: name for name, column in EPOCH_COLUMNS.items()}
    metrics = {names.get(key, key): float(value) for key, value in metrics_source.items() if _is_number(value)}
    summary = {
        "metrics": metrics, "best_epoch": best.best_epoch if best else 0, "epochs_completed": epochs,
        "epochs_requested": trained_epochs, "early_stopped": epochs < trained_epochs,
        "device": device, "config": asdict(config), "hyperparameters": history.args,
        "base_weights": base_weights.record(),
        "batch_plan": asdict(batch_plan) if batch_plan else None,
    }
    metrics_json = out_dir / "metrics.json"
    metrics_json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return TrainResult(best=out_dir / "weights" / "best.pt", last=out_dir / "weights" / "last.pt",
                       results_csv=out_dir / "results.csv", args_yaml=out_dir / "args.yaml",
                       metrics_json=metrics_json, epochs_completed=epochs, metrics=metrics)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
