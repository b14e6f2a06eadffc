"""Where the model fails: the validation images with the most missed heads and false detections.

Numbers say how often the model fails; these pictures say what it fails on, so the person
labeling data sees what to label next. Each image is predicted once at the evaluation's
image size; a prediction matches an unmatched ground-truth box of its class at IoU >= 0.5,
highest confidence first (as mAP50 counts it). The worst images of each modality are drawn
small, ground truth in green (thick where missed), detections in blue and false ones in red
with their confidence.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from components.data.dataset import Dataset
from components.data.labels import read_label
from components.runtime.yolo_env import offline_ultralytics

MIN_CONFIDENCE = 0.25  # ultralytics' default prediction threshold
MIN_IOU = 0.5
SHOWN_PER_MODALITY = 3
DRAWN_SIDE = 320  # pixels; keeps report.html small
GROUND_TRUTH, DETECTION, FALSE_DETECTION = (40, 200, 60), (60, 120, 255), (235, 40, 40)

XYXY = tuple[float, float, float, float]  # fractions of the image


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


def match(truth: list[tuple[int, XYXY]],
          predictions: list[tuple[int, XYXY, float]]) -> tuple[list[bool], list[Detection]]:
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


def judge(model: Any, image: Path, dataset: Dataset, imgsz: int, device: str) -> ImageFailures:
    """Predict one validation image and match its detections with its ground truth."""
    truth = _truth(image, len(dataset.names))
    result = model.predict(str(image), imgsz=imgsz, conf=MIN_CONFIDENCE, device=device, verbose=False)[0]
    predictions = [(int(cls), tuple(float(v) for v in box), float(confidence)) for cls, box, confidence in
                   zip(result.boxes.cls.tolist(), result.boxes.xyxyn.tolist(), result.boxes.conf.tolist())]
    missed, detections = match(truth, predictions)
    key = image.relative_to(dataset.root).as_posix() if image.is_relative_to(dataset.root) else str(image)
    return ImageFailures(image, key, dataset.modality(image, "val"), tuple(box for _, box in truth),
                         tuple(missed), tuple(detections))


def find_failures(model: Any, dataset: Dataset, imgsz: int, device: str) -> list[ImageFailures]:
    """Every validation image with a missed head or a false detection, worst first."""
    judged = (judge(model, image, dataset, imgsz, device) for image in dataset.images("val"))
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


def worst_images(model: Any, dataset: Dataset, imgsz: int, device: str, out_dir: Path) -> dict[str, list[dict]]:
    """Draw the SHOWN_PER_MODALITY worst validation images of each modality into `out_dir`; their records
    (key, counts, caption, the drawing's path relative to out_dir's parent) per modality, for evaluation.json."""
    shutil.rmtree(out_dir, ignore_errors=True)  # no drawing of an earlier evaluation stays beside these
    shown: dict[str, list[dict]] = {}
    for failures in find_failures(model, dataset, imgsz, device):
        records = shown.setdefault(failures.modality, [])
        if len(records) == SHOWN_PER_MODALITY:
            continue
        name = f"{failures.modality}-{len(records) + 1}.jpg"
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_bytes(draw(failures))
        records.append({"key": failures.key, "missed": sum(failures.missed),
                        "false_detections": sum(not d.correct for d in failures.detections),
                        "caption": failures.caption(), "drawing": f"{out_dir.name}/{name}"})
    return shown
