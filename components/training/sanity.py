"""The CPU sanity gate: a short training on a stratified subset that must show the data is learnable.

Seed 004: a CPU run proved the data fine after an MPS run had trained 43 minutes with every
loss at 0. CPU is the reference backend, so this gate runs there, on a subset capped by
`max_images`, so its cost does not grow with the dataset. Its verdict file is the baseline
later reports compare against.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.config import SanityConfig, TrainConfig
from components.data.dataset import Dataset, load_dataset
from components.training.deadrun import DeadRunError, Verdict
from components.errors import UserError
from components.metrics.results_csv import LOSS_KINDS
from components.training.outputs import read_results
from components.training.weights import default_cache_dir, resolve_weights
from components.runtime.yolo_env import offline_ultralytics


@dataclass(frozen=True)
class SanityVerdict:
    verdict: Verdict
    reasons: list[str]
    steps: int
    wall_seconds: float
    device: str
    epochs: list[dict[str, float]]
    base_weights: dict[str, Any]

    @property
    def healthy(self) -> bool:
        return self.verdict == Verdict.HEALTHY


def stratified_subset(dataset: Dataset, max_images: int) -> dict[str, list[Path]]:
    """Train and val images, about max_images in all, in the proportions of each split x modality group.

    Every group keeps at least one image, so with more groups than max_images the subset exceeds it.
    """
    groups: dict[tuple[str, str], list[Path]] = {}
    for split in ("train", "val"):
        for image in dataset.images(split):
            groups.setdefault((split, dataset.modality(image, split)), []).append(image)
    total = sum(len(images) for images in groups.values())
    if total == 0:
        raise UserError(f"{dataset.root} has no train or val images")
    chosen: dict[str, list[Path]] = {split: [] for split in ("train", "val")}
    for (split, _), images in sorted(groups.items()):
        quota = min(len(images), max(1, round(max_images * len(images) / total)))
        stride = len(images) / quota
        chosen[split] += [images[int(i * stride)] for i in range(quota)]  # evenly spread over the sorted list
    return chosen


def judge(epochs: list[dict[str, float]], config: SanityConfig, pretrained: bool) -> tuple[Verdict, list[str]]:
    """The verdict with the reasons, from the per-epoch figures of a finished run."""
    broken = [f"epoch {i + 1} {name}={row[name]}" for i, row in enumerate(epochs) for name in LOSS_KINDS
              if not math.isfinite(row[name]) or row[name] == 0.0]
    if broken:
        return Verdict.DEAD, ["losses must be finite and non-zero: " + ", ".join(broken)]
    first, last = (sum(row[name] for name in LOSS_KINDS) for row in (epochs[0], epochs[-1]))
    drop = (first - last) / first
    facts = [f"all losses finite and non-zero over {len(epochs)} epochs",
             f"total loss fell {drop:.1%} ({first:.3f} -> {last:.3f}); required at least {config.min_loss_drop:.0%}"]
    problems = [] if drop >= config.min_loss_drop else [f"total loss fell only {drop:.1%} from epoch 1 to "
                                                        f"{len(epochs)} ({first:.3f} -> {last:.3f}); "
                                                        f"required at least {config.min_loss_drop:.0%}"]
    if pretrained:
        map50 = epochs[-1]["map50"]
        line = f"mAP50 {map50:.3f} from pretrained weights; required at least {config.min_map50:.2f}"
        (facts if map50 >= config.min_map50 else problems).append(line)
    return (Verdict.NOT_LEARNING, problems) if problems else (Verdict.HEALTHY, facts)


def sanity_train_args(config: SanityConfig, data_yaml: Path, save_dir: Path) -> dict[str, Any]:
    """The ultralytics train arguments of a sanity run: CPU, the config's sizes, the full run's optimizer and seed.

    nbs=batch steps the optimizer every batch: at ultralytics' nominal batch of 64, a 64-image subset
    would see about 4 optimizer steps in 3 epochs, too few to show learning or fill the dead-run window.
    """
    seeds = TrainConfig()
    return dict(data=str(data_yaml), save_dir=str(save_dir), exist_ok=True, device="cpu", amp=False,
                epochs=config.epochs, batch=config.batch, nbs=config.batch, imgsz=config.imgsz,
                workers=config.workers, optimizer=seeds.optimizer, lr0=seeds.lr0, cos_lr=seeds.cos_lr,
                seed=seeds.seed, plots=False)


def run_sanity(data: Path, verdict_path: Path, config: SanityConfig = SanityConfig(), weights: str = "",
               model: str = "yolo11s", workdir: Path | None = None, store: str = "") -> SanityVerdict:
    """Train briefly on CPU and write the verdict file (also when the run is dead); with no weights, from the
    base weights training would start from (`resolve_weights`, on the run's store)."""
    if config.epochs < 2:
        raise UserError(f"the sanity gate needs at least 2 epochs to see the loss fall (got {config.epochs})")
    started = time.monotonic()
    dataset = load_dataset(data)
    workdir = (workdir or verdict_path.parent / "sanity-run").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    lists = {}
    for split, images in stratified_subset(dataset, config.max_images).items():
        lists[split] = workdir / f"{split}.txt"
        lists[split].write_text("".join(f"{image.resolve()}\n" for image in images))
    data_yaml = dataset.write_yaml(workdir / "data.yaml", lists)
    base_weights = resolve_weights(weights, model, default_cache_dir(), store)
    ultralytics = offline_ultralytics()
    from components.training.trainer import GuardedDetectionTrainer

    yolo = ultralytics.YOLO(base_weights.path)
    dead_run: DeadRunError | None = None
    try:
        yolo.train(trainer=GuardedDetectionTrainer, **sanity_train_args(config, data_yaml, workdir / "train"))
    except DeadRunError as error:
        dead_run = error
    epochs = read_results(workdir / "train" / "results.csv")
    verdict, reasons = ((Verdict.DEAD, [str(dead_run)]) if dead_run
                        else judge(epochs, config, pretrained=base_weights.pretrained))
    result = SanityVerdict(verdict=verdict, reasons=reasons, steps=yolo.trainer.dead_run_detector.steps,
                           wall_seconds=round(time.monotonic() - started, 2), device="cpu", epochs=epochs,
                           base_weights=base_weights.record())
    verdict_path.parent.mkdir(parents=True, exist_ok=True)
    verdict_path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result
