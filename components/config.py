"""Configuration dataclasses carrying the field notes' defaults (seeds 000 and 004).

One place for the numbers: the CLI, the KFP pipeline parameters and the tests all start
from these, so a default changed here changes everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

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
    cache: str = "auto"  # decoded images in RAM: auto (when they fit the pod's memory limit), ram, disk, none


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


def _parameter(default: str | int | float | bool, description: str) -> Any:
    return field(default=default, metadata={"help": description})


@dataclass(frozen=True)
class RunParameters:
    """Every parameter of a pipeline run, with its default and its help: the pipeline's signature
    (the KFP UI's run form) and the `pogona run --local` flags are made from these fields, and the
    training numbers come from the configurations above."""

    dataset_uri: str = _parameter("s3://pogona/datasets/pogona-head",
                                  "Labeled dataset in the contract layout (s3://bucket/datasets/NAME or a folder).")
    store_uri: str = _parameter("s3://pogona",
                                "Object store root for runs, weights and the production pointer (s3://bucket).")
    model_name: str = _parameter("pogona-head", "Name of the published model (models/NAME/production.json).")
    model: str = _parameter(TrainConfig.model,
                            "Architecture when no base weights are given (yolo11n/s/m/l/x, built from YAML).")
    base_weights_uri: str = _parameter(TrainConfig.weights, "Optional pretrained weights in object storage "
                                                            "(s3://bucket/weights/yolo11s.pt).")
    epochs: int = _parameter(TrainConfig.epochs, "Maximum training epochs (the field notes found 50-80 enough).")
    patience: int = _parameter(TrainConfig.patience, "Early-stopping patience in epochs.")
    imgsz: int = _parameter(TrainConfig.imgsz, "Training and evaluation image size in pixels.")
    batch: float = _parameter(TrainConfig.batch, "Batch size; below 1, a fraction of GPU memory (0.95 = 95%, "
                                                 "single GPU only).")
    training_device: str = _parameter(TrainConfig.device, "cuda on GPU nodes; cpu only on kind or laptops.")
    num_gpus: str = _parameter("1", "GPUs for training (a whole number, given as text); above 1 trains with DDP "
                                    "on one node.")
    sanity_epochs: int = _parameter(SanityConfig.epochs, "Epochs of the CPU sanity gate.")
    sanity_batch: int = _parameter(SanityConfig.batch, "Batch size of the CPU sanity gate.")
    sanity_imgsz: int = _parameter(SanityConfig.imgsz, "Image size of the CPU sanity gate.")
    sanity_max_images: int = _parameter(SanityConfig.max_images, "Images in the stratified sanity subset.")
    sanity_min_loss_drop: float = _parameter(SanityConfig.min_loss_drop,
                                             "Fraction the total loss must fall during the sanity gate.")
    sanity_min_map50: float = _parameter(SanityConfig.min_map50, "mAP50 the sanity gate must reach when starting "
                                                                 "from pretrained weights.")
    min_map50: float = _parameter(PromotionConfig.min_map50,
                                  "Promotion floor on mAP50 (the field notes expect more than 0.95).")
    min_margin: float = _parameter(PromotionConfig.min_margin_map50_95,
                                   "mAP50-95 the challenger must gain over the champion to be promoted.")
    skip_if_unchanged: bool = _parameter(True, "Skip training when an earlier run trained this dataset snapshot "
                                               "with the same code and training parameters; false forces training.")
    export_formats: str = _parameter("onnx,int8", "Comma-separated exports (onnx, int8); empty for none.")
    s3_secret_name: str = _parameter("pogona-s3",
                                     "Kubernetes Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
    run_id: str = _parameter("", "Folder name under runs/ (defaults to the KFP run id).")


def run_parameter_types() -> dict[str, type]:
    """Each run parameter's Python type (str, int, float or bool)."""
    return get_type_hints(RunParameters)
