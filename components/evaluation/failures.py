"""Where the model fails: the validation images with the most missed heads and false detections.

Numbers say how often the model fails; these pictures say what it fails on, so the person
labeling data sees what to label next. No image is predicted for this: the evaluation's own
overall validator pass records each image's detections of confidence 0.25 or more
(`collecting_validator`), in the original image's coordinates as `predict` gives them. A
detection matches an unmatched ground-truth box of its class at IoU >= 0.5, highest confidence
first (as mAP50 counts it). The worst images of each modality (of the whole split, for a
dataset without modalities) are drawn small, ground truth in green (thick where missed),
detections in blue and false ones in red with their confidence.
"""

from __future__ import annotations

import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from components.data.dataset import Dataset
from components.data.dataset_layout import modality_group
from components.data.labels import read_label
from components.metrics.artifacts import WorstImage
from components.runtime.yolo_env import offline_ultralytics

MIN_CONFIDENCE = 0.25  # ultralytics' default prediction threshold
MIN_IOU = 0.5
SHOWN_PER_MODALITY = 3
OVERALL = "overall"  # the worst images' group in a dataset without modalities
DRAWN_SIDE = 320  # pixels; keeps report.html small
GROUND_TRUTH, DETECTION, FALSE_DETECTION = (40, 200, 60), (60, 120, 255), (235, 40, 40)

XYXY = tuple[float, float, float, float]  # fractions of the image
Prediction = tuple[int, XYXY, float]  # class, box, confidence


@dataclass(frozen=True)
class Detection:
    box: XYXY
    confidence: float
    correct: bool


@dataclass(frozen=True)
class ImageFailures:
    path: Path
    key: str  # the image's path below the dataset root, as the store names it
    modality: str
    truth: tuple[XYXY, ...]
    missed: tuple[bool, ...]  # per ground-truth box
    detections: tuple[Detection, ...]

    @property
    def errors(self) -> int:
        return sum(self.missed) + sum(not d.correct for d in self.detections)

    def caption(self) -> str:
        false = [f"{d.confidence:.2f}" for d in self.detections if not d.correct]
        return (f"{self.key}: {sum(self.missed)} of {len(self.truth)} heads missed, {len(false)} false detections"
                + (f" (confidence {', '.join(false)})" if false else ""))


def _iou(a: XYXY, b: XYXY) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - overlap
    return overlap / union if union > 0 else 0.0


def match(truth: list[tuple[int, XYXY]], predictions: list[Prediction]) -> tuple[list[bool], list[Detection]]:
    """Which ground-truth boxes are missed, and which predictions are correct (greedy by confidence)."""
    missed = [True] * len(truth)
    detections = []
    for cls, box, confidence in sorted(predictions, key=lambda p: -p[2]):
        candidates = [(_iou(box, t_box), index) for index, (t_cls, t_box) in enumerate(truth)
                      if missed[index] and t_cls == cls]
        best = max(candidates, default=(0.0, -1))
        if best[0] >= MIN_IOU:
            missed[best[1]] = False
        detections.append(Detection(box, confidence, best[0] >= MIN_IOU))
    return missed, detections


def _truth(image: Path, class_count: int) -> list[tuple[int, XYXY]]:
    """The image's boxes, from the label file ultralytics pairs with it, read as ultralytics reads it."""
    offline_ultralytics()
    from ultralytics.data.utils import img2label_paths

    label = Path(img2label_paths([str(image)])[0])
    if not label.is_file():
        return []
    return [(cls, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            for cls, cx, cy, w, h in read_label(str(label), label.read_bytes(), class_count).boxes]


def collecting_validator(predictions: dict[Path, list[Prediction]]) -> type:
    """Ultralytics' detection validator, recording into `predictions` what it detects on each image it scores
    with confidence MIN_CONFIDENCE or more, keyed by the image's resolved path, as fractions of that image."""
    offline_ultralytics()
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils import ops

    class CollectingValidator(DetectionValidator):
        def update_metrics(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
            for index, pred in enumerate(preds):
                kept = pred["conf"] >= MIN_CONFIDENCE
                height, width = batch["ori_shape"][index]
                boxes = ops.scale_boxes(batch["img"].shape[2:], pred["bboxes"][kept].clone(), (height, width),
                                        ratio_pad=batch["ratio_pad"][index])
                predictions[Path(batch["im_file"][index]).resolve()] = [
                    (int(cls), (x1 / width, y1 / height, x2 / width, y2 / height), float(confidence))
                    for cls, (x1, y1, x2, y2), confidence in
                    zip(pred["cls"][kept].tolist(), boxes.tolist(), pred["conf"][kept].tolist())]
            super().update_metrics(preds, batch)

    return CollectingValidator


def judge(image: Path, predictions: list[Prediction], dataset: Dataset) -> ImageFailures:
    """Match one validation image's detections with its ground truth."""
    truth = _truth(image, len(dataset.names))
    missed, detections = match(truth, predictions)
    key = image.relative_to(dataset.root).as_posix() if image.is_relative_to(dataset.root) else str(image)
    return ImageFailures(image, key, dataset.modality(image, "val"), tuple(box for _, box in truth),
                         tuple(missed), tuple(detections))


def find_failures(predictions: dict[Path, list[Prediction]], dataset: Dataset) -> list[ImageFailures]:
    """Every validation image with a missed head or a false detection, worst first."""
    judged = (judge(image, predictions.get(image.resolve(), []), dataset) for image in dataset.images("val"))
    return sorted((failures for failures in judged if failures.errors), key=lambda f: (-f.errors, f.key))


def draw(failures: ImageFailures) -> bytes:
    """The image scaled to DRAWN_SIDE pixels on its long side with its boxes drawn, as JPEG."""
    with Image.open(failures.path) as opened:
        image = ImageOps.exif_transpose(opened).convert("RGB")
    scale = DRAWN_SIDE / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    pen, font = ImageDraw.Draw(image), ImageFont.load_default(size=12)

    def pixels(box: XYXY) -> list[float]:
        return [box[0] * image.width, box[1] * image.height, box[2] * image.width, box[3] * image.height]

    def tag(corner: tuple[float, float], text: str, colour: tuple[int, int, int]) -> None:
        pen.rectangle(pen.textbbox(corner, text, font=font), fill=colour)
        pen.text(corner, text, fill=(255, 255, 255), font=font)

    for box, missed in zip(failures.truth, failures.missed):
        left, _, _, bottom = pixels(box)
        pen.rectangle(pixels(box), outline=GROUND_TRUTH, width=4 if missed else 2)
        if missed:
            tag((left + 4, bottom - 16), "missed", GROUND_TRUTH)
    for detection in failures.detections:
        colour = DETECTION if detection.correct else FALSE_DETECTION
        left, top, _, _ = pixels(detection.box)
        pen.rectangle(pixels(detection.box), outline=colour, width=2)
        tag((left + 4, top + 4), f"{detection.confidence:.2f}", colour)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def worst_images(predictions: dict[Path, list[Prediction]], dataset: Dataset, out_dir: Path,
                 per_modality: bool) -> dict[str, tuple[WorstImage, ...]]:
    """Draw the SHOWN_PER_MODALITY worst validation images of each modality (`per_modality`), else of the whole
    split, into `out_dir`; their records (key, counts, caption, the drawing's path relative to out_dir's parent)
    per group, for evaluation.json."""
    shutil.rmtree(out_dir, ignore_errors=True)  # no drawing of an earlier evaluation stays beside these
    shown: dict[str, list[WorstImage]] = {}
    for failures in find_failures(predictions, dataset):
        group = modality_group(failures.modality) if per_modality else OVERALL
        records = shown.setdefault(group, [])
        if len(records) == SHOWN_PER_MODALITY:
            continue
        stem = re.sub(r"[^\w.-]+", "-", group)  # a modality's name made a file name ("no modality": no-modality)
        name = f"{stem}-{len(records) + 1}.jpg"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_bytes(draw(failures))
        records.append(WorstImage(failures.key, sum(failures.missed), sum(not d.correct for d in failures.detections),
                                  failures.caption(), f"{out_dir.name}/{name}"))
    return {group: tuple(records) for group, records in shown.items()}
