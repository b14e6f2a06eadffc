"""Configuration dataclasses carrying the field notes' defaults (seeds 000 and 004).

One place for the numbers: the CLI, the KFP pipeline parameters and the tests all start
from these, so a default changed here changes everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLASS_NAMES: dict[int, str] = {0: "pogona_head"}
MODALITIES: tuple[str, ...] = ("thermal", "visible")
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")


def cache_root() -> Path:
    """Where pogona keeps what it downloads between runs (weights, datasets, ultralytics' config):
    $XDG_CACHE_HOME/pogona, else ~/.cache/pogona."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pogona"


@dataclass(frozen=True)
class TrainConfig:
    """Full training run (seed 004: yolo11s; seed 000: 100 epochs, patience 10, batch 95% of GPU memory)."""

    model: str = "yolo11s"
    weights: str = ""
    epochs: int = 100
    patience: int = 10
    imgsz: int = 640
    batch: float = 0.95
    device: str = "cuda"
    optimizer: str = "AdamW"
    lr0: float = 0.001
    cos_lr: bool = True
    seed: int = 42
    workers: int = 8


@dataclass(frozen=True)
class SanityConfig:
    """CPU sanity gate (seed 004: CPU, 3 epochs, batch 8, workers 2, seed 42).

    max_images 64 gives a verdict in about 3.4 minutes with yolo11s at 640 on 2 CPU cores (seed 004's
    full-dataset CPU run took 49.68 minutes); see docs/benchmarks.md, "Sanity".
    """

    epochs: int = 3
    batch: int = 8
    imgsz: int = 640
    max_images: int = 64
    workers: int = 2
    min_loss_drop: float = 0.05
    min_map50: float = 0.5


@dataclass(frozen=True)
class PromotionConfig:
    """When a challenger replaces the champion (seed 004 expects mAP@0.5 > 0.95 on the real data).

    A challenger needs mAP50 >= `min_map50` and an mAP50-95 strictly above the champion's, by at
    least `min_margin_map50_95`; a tie never replaces the champion.
    """

    min_map50: float = 0.95
    min_margin_map50_95: float = 0.0
