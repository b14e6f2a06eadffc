"""Evaluate a trained detector on val (and test), overall and per modality, at its training image size.

Thermal and visible images fail differently; an overall mAP can hide a modality the model
cannot see. The overall figures come from ultralytics' own validator on the full split, so
they match what `yolo val` reports for the same weights and data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from components.data.dataset import Dataset, load_dataset
from components.runtime.devices import check_single_device
from components.errors import UserError
from components.evaluation.failures import worst_images
from components.runtime.yolo_env import offline_ultralytics

WORST_DIR = "worst"  # beside evaluation.json: the drawn worst validation images
PLOTS = {"BoxPR_curve.png": "pr_curve.png", "confusion_matrix.png": "confusion_matrix.png"}


def _scores(metrics: Any) -> dict[str, float]:
    box = metrics.box
    return {"precision": float(box.mp), "recall": float(box.mr), "map50": float(box.map50),
            "map50_95": float(box.map)}


def _run_val(model: Any, data_yaml: Path, split: str, imgsz: int, device: str, save_dir: Path) -> Any:
    return model.val(data=str(data_yaml), split=split, imgsz=imgsz, device=device, save_dir=str(save_dir),
                     exist_ok=True, plots=True, verbose=False)


def _by_modality(model: Any, dataset: Dataset, work: Path, imgsz: int, device: str) -> dict[str, dict[str, float]]:
    """Score each modality's share of the val split with a val run of its own."""
    groups: dict[str, list[Path]] = {}
    for image in dataset.images("val"):
        groups.setdefault(dataset.modality(image, "val"), []).append(image)
    scores = {}
    for modality, images in sorted(groups.items()):
        listing = work / f"val-{modality}.txt"
        listing.write_text("".join(f"{image.resolve()}\n" for image in images))
        data_yaml = dataset.write_yaml(work / f"data-{modality}.yaml", {**dataset.splits, "val": listing})
        scores[modality] = {**_scores(_run_val(model, data_yaml, "val", imgsz, device, work / modality)),
                            "images": len(images)}
    return scores


def evaluate_model(weights: Path, data: Path, out_path: Path, device: str = "cpu") -> dict:
    """Write evaluation JSON (overall: the val split, by_modality, speed_ms, worst_images: the validation images
    with most missed heads and false detections per modality, drawn into worst/, and splits: the test split when
    the dataset has one) plus PR-curve and confusion-matrix PNGs.

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
    overall = _run_val(model, data_yaml, "val", imgsz, device, work / "overall")
    result: dict[str, Any] = {
        "weights": str(weights), "imgsz": imgsz, "device": device,
        "overall": _scores(overall),
        "by_modality": _by_modality(model, dataset, work, imgsz, device),
        "speed_ms": {stage: float(ms) for stage, ms in overall.speed.items()},
        "worst_images": worst_images(model, dataset, imgsz, device, out_dir / WORST_DIR),
    }
    if "test" in dataset.splits:
        result["splits"] = {"test": _scores(_run_val(model, data_yaml, "test", imgsz, device, work / "test"))}
    for source, target in PLOTS.items():
        if (work / "overall" / source).is_file():
            shutil.copyfile(work / "overall" / source, out_dir / target)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    return result
