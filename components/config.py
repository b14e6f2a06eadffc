"""Configuration dataclasses carrying the field notes' defaults (seeds 000 and 004).

One place for the numbers: the CLI, the KFP pipeline parameters and the tests all start
from these, so a default changed here changes everywhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, TypeVar, get_type_hints

from components.errors import UserError


CLASS_NAMES: dict[int, str] = {0: "pogona_head"}
MODALITIES: tuple[str, ...] = ("thermal", "visible")
MODEL_NAME = "pogona-head"  # the published model's default name: models/<name>/production.json
SPLITS: tuple[str, ...] = ("train", "val", "test")
# the image formats ultralytics reads (ultralytics.data.utils.IMG_FORMATS) that validation decodes with PIL;
# HEIC/HEIF need a plugin and DNG is raw sensor data: those stay outside every split
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".mpo", ".jp2", ".avif")


def cache_root() -> Path:
    """Where pogona keeps what it downloads between runs (weights, datasets, ultralytics' config):
    $XDG_CACHE_HOME/pogona, else ~/.cache/pogona."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pogona"


def _parameter(default: str | int | float | bool, description: str) -> Any:
    """A field a user may set: a run parameter and a command-line flag, with `description` as its help."""
    return field(default=default, metadata={"help": description})


def _fixed(default: str | int | float | bool, reason: str) -> Any:
    """A field no run parameter or flag sets; `reason` says why it stays as it is."""
    return field(default=default, metadata={"fixed": reason})


RECIPE = "the field notes' recipe: changing it is a change of code, not of a run"
WORKERS = "data loader processes, sized with the step's CPU request"


@dataclass(frozen=True)
class TrainConfig:
    """Full training run (seed 004: yolo11s; seed 000: 100 epochs, patience 10, batch 95% of GPU memory)."""

    model: str = _parameter("yolo11s", "Architecture (yolo11n/s/m/l/x); without given weights its pretrained "
                                       "weights come from <store>/weights/<model>.pt, else the image, else it is "
                                       "built from YAML and trained from scratch (a .yaml model always is).")
    weights: str = _parameter("", "Base weights: s3://.../<model>.pt or a file path; empty: the model's default "
                                  "(see model).")
    epochs: int = _parameter(100, "Maximum training epochs (the field notes found 50-80 enough).")
    patience: int = _parameter(10, "Early-stopping patience in epochs.")
    imgsz: int = _parameter(640, "Training and evaluation image size in pixels.")
    batch: float = _parameter(0.95, "Batch size; below 1, a fraction of GPU memory (0.95 = 95%, single GPU only).")
    device: str = _parameter("cuda", "cuda, a GPU list such as 0,1,2,3 (DDP), cpu, or mps (never chosen "
                                     "automatically).")
    optimizer: str = _fixed("AdamW", RECIPE)
    lr0: float = _fixed(0.001, RECIPE)
    cos_lr: bool = _fixed(True, RECIPE)
    seed: int = _fixed(42, "the same snapshot and parameters train the same way")
    workers: int = _fixed(8, WORKERS)
    cache: str = _fixed("auto", "decoded images in RAM when they fit the pod's memory limit (components/training/image_cache.py)")


@dataclass(frozen=True)
class SanityConfig:
    """CPU sanity gate (seed 004: CPU, 3 epochs, batch 8, workers 2, seed 42).

    max_images 64 gives a verdict in about 3.4 minutes with yolo11s at 640 on 2 CPU cores (seed 004's
    full-dataset CPU run took 49.68 minutes); see docs/benchmarks.md, "Sanity".
    """

    epochs: int = _parameter(3, "Epochs of the CPU sanity gate.")
    batch: int = _parameter(8, "Batch size of the CPU sanity gate.")
    imgsz: int = _parameter(640, "Image size of the CPU sanity gate.")
    max_images: int = _parameter(64, "Images in the stratified sanity subset (train and val).")
    workers: int = _fixed(2, WORKERS)
    min_loss_drop: float = _parameter(0.05, "Fraction the total loss must fall during the sanity gate.")
    min_map50: float = _parameter(0.5, "mAP50 the sanity gate must reach when starting from pretrained weights.")


# Every YOLO11 detector downsamples by 32: ultralytics rounds any other image size up to a multiple of it.
MODEL_STRIDE = 32
_MODEL_NAME = re.compile(r"yolo11[nsmlx](\.pt|\.ya?ml)?")
_DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?|\d+(,\d+)*")


def check_settings(train: TrainConfig | None = None, sanity: SanityConfig | None = None) -> None:
    """Refuse a setting outside its range before any work, in one line naming it and the admitted range: ultralytics
    would fail on it only after its setup, or, for an image size, round it silently. The CLI and the pipeline's
    decide step both call this."""
    problems = ([] if train is None else _train_problems(train)) + ([] if sanity is None else _sanity_problems(sanity))
    if problems:
        raise UserError("; ".join(problems))


def _train_problems(config: TrainConfig) -> list[str]:
    problems = _at_least("epochs", config.epochs, 1) + _at_least("patience", config.patience, 0)
    problems += _image_size("imgsz", config.imgsz)
    if not (0 < config.batch < 1 or (config.batch >= 1 and config.batch == int(config.batch))):
        problems.append(f"batch {config.batch:g} is out of range: a whole number >= 1, or a fraction of GPU memory "
                        "between 0 and 1 (exclusive)")
    if not _DEVICE.fullmatch(config.device.strip().lower()):
        problems.append(f"device {config.device!r} is not one of cpu, mps, cuda, cuda:N or a GPU list such as 0,1")
    if not (_MODEL_NAME.fullmatch(config.model) or config.model.endswith((".yaml", ".yml"))):
        problems.append(f"model {config.model!r} is not one of yolo11n, yolo11s, yolo11m, yolo11l, yolo11x "
                        "(optionally .pt or .yaml) or an architecture .yaml file")
    return problems


def _sanity_problems(config: SanityConfig) -> list[str]:
    problems = [text for name in ("epochs", "batch") for text in _at_least(f"sanity {name}", getattr(config, name), 1)]
    problems += _image_size("sanity imgsz", config.imgsz) + _at_least("sanity max_images", config.max_images, 1)
    for name in ("min_loss_drop", "min_map50"):
        value = getattr(config, name)
        if not 0 <= value <= 1:
            problems.append(f"sanity {name} {value:g} is out of range: a fraction between 0 and 1")
    return problems


def _at_least(name: str, value: int, least: int) -> list[str]:
    return [] if value >= least else [f"{name} {value} is out of range: a whole number >= {least}"]


def _image_size(name: str, value: int) -> list[str]:
    """An image size the model takes as it is: a positive multiple of its stride."""
    if value >= MODEL_STRIDE and value % MODEL_STRIDE == 0:
        return []
    return [f"{name} {value} is out of range: a multiple of the model's stride {MODEL_STRIDE} (32, 64, ..., 640, ...)"]


def user_settings(config: type) -> tuple[str, ...]:
    """The fields of a configuration a user may set: each is a run parameter and a command-line flag."""
    return tuple(item.name for item in fields(config) if "help" in item.metadata)


@dataclass(frozen=True)
class PromotionConfig:
    """When a challenger replaces the champion (seed 004 expects mAP@0.5 > 0.95 on the real data).

    A challenger needs mAP50 >= `min_map50` and an mAP50-95 strictly above the champion's, by at
    least `min_margin_map50_95`; a tie never replaces the champion.
    """

    min_map50: float = 0.95
    min_margin_map50_95: float = 0.0


def _from_config(config: type, name: str, description: str = "") -> Any:
    """A run parameter that sets `config`'s field `name`: that field's default, and its help unless the pipeline
    words it otherwise."""
    setting = next(item for item in fields(config) if item.name == name)
    return field(default=setting.default, metadata={"help": description or setting.metadata["help"],
                                                    "config": config, "field": name})


@dataclass(frozen=True)
class RunParameters:
    """Every parameter of a pipeline run, with its default and its help: the pipeline's signature
    (the KFP UI's run form) and the `pogona run --local` flags are made from these fields, and the
    training numbers come from the configurations above: each of their settings is one run parameter
    (`run_parameters_of`), which reaches the components that use it as an input of its own."""

    dataset_uri: str = _parameter("s3://pogona/datasets/pogona-head",
                                  "Labeled dataset in the contract layout (s3://bucket/datasets/NAME or a folder).")
    store_uri: str = _parameter("s3://pogona",
                                "Object store root for runs, weights and the production pointer (s3://bucket).")
    model_name: str = _parameter(MODEL_NAME, "Name of the published model (models/NAME/production.json).")
    model: str = _from_config(TrainConfig, "model")
    base_weights_uri: str = _from_config(TrainConfig, "weights", "Pretrained weights in object storage "
                                                                 "(s3://bucket/weights/yolo11s.pt); empty: the "
                                                                 "model's default (see model).")
    epochs: int = _from_config(TrainConfig, "epochs")
    patience: int = _from_config(TrainConfig, "patience")
    imgsz: int = _from_config(TrainConfig, "imgsz")
    batch: float = _from_config(TrainConfig, "batch")
    training_device: str = _from_config(TrainConfig, "device", "cuda on GPU nodes; cpu only on kind or laptops.")
    num_gpus: str = _parameter("1", "GPUs for training (a whole number, given as text); above 1 trains with DDP "
                                    "on one node.")
    sanity_epochs: int = _from_config(SanityConfig, "epochs")
    sanity_batch: int = _from_config(SanityConfig, "batch")
    sanity_imgsz: int = _from_config(SanityConfig, "imgsz")
    sanity_max_images: int = _from_config(SanityConfig, "max_images")
    sanity_min_loss_drop: float = _from_config(SanityConfig, "min_loss_drop")
    sanity_min_map50: float = _from_config(SanityConfig, "min_map50")
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


def run_parameters_of(config: type) -> dict[str, str]:
    """The run parameters that set fields of `config`: {run parameter: field}."""
    return {item.name: item.metadata["field"] for item in fields(RunParameters) if item.metadata.get("config") is config}


Config = TypeVar("Config")


def config_from_run(config: type[Config], arguments: Mapping[str, Any]) -> Config:
    """`config` from a step's arguments: the run parameters that set its fields (`run_parameters_of`), each
    converted to the field's type (a KFP backend hands the float 16.0 as 16); the other fields keep their
    defaults."""
    types = get_type_hints(config)
    return config(**{name: types[name](arguments[parameter]) for parameter, name in run_parameters_of(config).items()})
