"""Evaluate a trained detector on val (and test), overall and per modality, at its training image size.

Thermal and visible images fail differently; an overall mAP can hide a modality the model
cannot see. The overall figures come from ultralytics' own validator on the full split, so
they match what `yolo val` reports for the same weights and data. A dataset whose validation
images have no modality gets the overall figures only: a group holding every image would
repeat them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from components.data.dataset import Dataset, load_dataset
from components.data.dataset_layout import has_modalities, modality_group
from components.errors import UserError
from components.evaluation.failures import Prediction, collecting_validator, worst_images
from components.metrics.artifacts import Evaluation, Scores
from components.runtime.devices import check_single_device
from components.runtime.yolo_env import offline_ultralytics

WORST_DIR = "worst"  # beside evaluation.json: the drawn worst validation images
PLOTS = {"BoxPR_curve.png": "pr_curve.png", "confusion_matrix.png": "confusion_matrix.png"}


def _scores(metrics: Any, images: int | None = None) -> Scores:
    box = metrics.box
    return Scores(float(box.mp), float(box.mr), float(box.map50), float(box.map), images)


def _run_val(model: Any, data_yaml: Path, split: str, imgsz: int, device: str, save_dir: Path,
             validator: type | None = None) -> Any:
    return model.val(validator=validator, data=str(data_yaml), split=split, imgsz=imgsz, device=device,
                     save_dir=str(save_dir), exist_ok=True, plots=True, verbose=False)


def modality_groups(dataset: Dataset) -> dict[str, list[Path]]:
    """The validation images by the name their modality is shown under; empty when none has a modality."""
    modalities = {image: dataset.modality(image, "val") for image in dataset.images("val")}
    groups: dict[str, list[Path]] = {}
    if has_modalities(modalities.values()):
        for image, modality in modalities.items():
            groups.setdefault(modality_group(modality), []).append(image)
    return groups


def _by_modality(model: Any, dataset: Dataset, work: Path, imgsz: int, device: str) -> dict[str, Scores]:
    """Score each modality's share of the val split with a val run of its own."""
    scores = {}
    for index, (group, images) in enumerate(sorted(modality_groups(dataset).items())):
        listing = work / f"val-{index}.txt"  # numbered: a modality's name need not make a file name
        listing.write_text("".join(f"{image.resolve()}\n" for image in images))
        data_yaml = dataset.write_yaml(work / f"data-{index}.yaml", {**dataset.splits, "val": listing})
        scores[group] = _scores(_run_val(model, data_yaml, "val", imgsz, device, work / f"modality-{index}"),
                                len(images))
    return scores


def evaluate_model(weights: Path, data: Path, out_path: Path, device: str = "cpu") -> Evaluation:
    """Write evaluation JSON (overall: the val split, by_modality: empty for a dataset without modalities,
    speed_ms, worst_images: the validation images with most missed heads and false detections per modality, or
    overall, drawn into worst/, and splits: the test split when the dataset has one) plus PR-curve and
    confusion-matrix PNGs.

    `device` is "cpu", "cuda" or "cuda:N"; CUDA without CUDA is refused before anything is read, and the
    device recorded is the one torch ran on ("cuda:0" for "cuda"), since speed_ms depends on it.
    """
    device = check_single_device(device)
    if not weights.is_file():  # else ultralytics takes the name for one to download
        raise UserError(f"weights {weights} do not exist")
    model = offline_ultralytics().YOLO(str(weights))
    imgsz = int((model.ckpt or {}).get("train_args", {}).get("imgsz", 640))
    dataset = load_dataset(data)
    out_dir = out_path.resolve().parent
    work = out_dir / "evaluation-work"
    data_yaml = dataset.write_yaml(work / "data.yaml")
    predictions: dict[Path, list[Prediction]] = {}
    overall = _run_val(model, data_yaml, "val", imgsz, device, work / "overall", collecting_validator(predictions))
    by_modality = _by_modality(model, dataset, work, imgsz, device)
    splits = ({"test": _scores(_run_val(model, data_yaml, "test", imgsz, device, work / "test"))}
              if "test" in dataset.splits else {})
    result = Evaluation(str(weights), imgsz, device, _scores(overall), by_modality,
                        {stage: float(ms) for stage, ms in overall.speed.items()},
                        worst_images(predictions, dataset, out_dir / WORST_DIR, per_modality=bool(by_modality)),
                        splits)
    for source, target in PLOTS.items():
        if (work / "overall" / source).is_file():
            shutil.copyfile(work / "overall" / source, out_dir / target)
    result.save(out_path)
    return result
