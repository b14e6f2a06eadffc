"""A procedurally generated stand-in for the Pogona head dataset.

Real images stay in the lab's bucket; this gives every laptop, test and CI run a dataset in
the same layout (thermal + visible, one class, backgrounds, one or two heads, train/val)
that a short CPU training learns, deterministically from a seed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from components.config import CLASS_NAMES, MODALITIES
from components.data.dataset import data_yaml_text
from components.data.dataset_layout import DATA_YAML
from components.errors import UserError
from components.log import LOG
from components.storage import open_store


@dataclass(frozen=True)
class DemoSpec:
    images: int = 300
    seed: int = 42
    size: int = 160
    val_fraction: float = 0.2
    background_fraction: float = 0.1
    two_heads_fraction: float = 0.25
    layout: str = "contract"  # a key of DEMO_LAYOUTS


@dataclass(frozen=True)
class DemoLayout:
    """Where an image and its label go, and the data.yaml that says so (ultralytics reads each unchanged)."""

    image: str  # formatted with split, modality and stem
    label: str
    splits: dict[str, str]  # data.yaml's split entries
    split_names: dict[str, str]  # pogona's split -> the folder name the layout gives it


DEMO_LAYOUTS = {
    "contract": DemoLayout("images/{split}/{modality}/{stem}.jpg", "labels/{split}/{modality}/{stem}.txt",
                           {"train": "images/train", "val": "images/val"}, {"train": "train", "val": "val"}),
    # what Roboflow's "YOLOv8/YOLO11" export writes: flat split folders, data.yaml paths from one level down
    "roboflow": DemoLayout("{split}/images/{stem}.jpg", "{split}/labels/{stem}.txt",
                           {"train": "../train/images", "val": "../valid/images"}, {"train": "train", "val": "valid"}),
}


def _background(rng: np.random.Generator, size: int, modality: str) -> Image.Image:
    """Smooth clutter: a gradient, blurred noise and a few branch-like strokes."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * math.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(20, 60)
    noise = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1))
    noise = np.kron(noise, np.ones((8, 8)))[:size, :size] * rng.uniform(6, 14)
    if modality == "thermal":
        base = rng.uniform(40, 90) + gradient + noise
        gray = np.clip(base, 0, 255).astype(np.uint8)
        image = Image.fromarray(np.stack([gray] * 3, axis=-1))
    else:
        tint = rng.uniform([120, 100, 60], [200, 170, 120])
        rgb = tint[None, None, :] + (gradient + noise)[..., None]
        image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 4)):
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        shade = int(rng.uniform(60, 140)) if modality == "thermal" else None
        colour = (shade,) * 3 if shade is not None else tuple(int(c) for c in rng.uniform(60, 120, 3))
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(2, 5)))
    return image


def _draw_head(draw: ImageDraw.ImageDraw, rng: np.random.Generator, box: tuple[float, float, float, float],
               modality: str) -> None:
    """A wedge-shaped head (the Pogona's triangular skull) with two eyes, pointing a random way."""
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
    if rng.random() < 0.5:
        outline = [(x0, cy - h * 0.35), (x0 + w * 0.25, y0), (x1, cy), (x0 + w * 0.25, y1), (x0, cy + h * 0.35)]
    else:
        outline = [(x1, cy - h * 0.35), (x1 - w * 0.25, y0), (x0, cy), (x1 - w * 0.25, y1), (x1, cy + h * 0.35)]
    if modality == "thermal":
        fill, eye = (int(rng.uniform(200, 255)),) * 3, (int(rng.uniform(120, 160)),) * 3
    else:
        fill = tuple(int(c) for c in rng.uniform([70, 50, 20], [120, 90, 50]))
        eye = (15, 15, 15)
    draw.polygon(outline, fill=fill)
    radius = max(1.0, min(w, h) * 0.08)
    for ey in (cy - h * 0.2, cy + h * 0.2):
        draw.ellipse([cx - radius, ey - radius, cx + radius, ey + radius], fill=eye)


def _boxes(rng: np.random.Generator, size: int, count: int) -> list[tuple[float, float, float, float]]:
    boxes: list[tuple[float, float, float, float]] = []
    while len(boxes) < count:
        w = size * rng.uniform(0.18, 0.45)
        h = w * rng.uniform(0.7, 1.1)
        x0, y0 = rng.uniform(1, size - w - 1), rng.uniform(1, size - h - 1)
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in boxes):
            boxes.append(box)
    return boxes


def render_sample(rng: np.random.Generator, size: int, modality: str, heads: int) -> tuple[bytes, str]:
    """One JPEG and its YOLO label text (empty for a background image)."""
    image = _background(rng, size, modality)
    draw = ImageDraw.Draw(image)
    lines = []
    for box in _boxes(rng, size, heads):
        _draw_head(draw, rng, box, modality)
        x0, y0, x1, y1 = box
        lines.append(f"0 {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
                     f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}")
    image = image.filter(ImageFilter.GaussianBlur(radius=0.6))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "\n".join(lines) + ("\n" if lines else "")


def _val_indices(spec: DemoSpec) -> set[int]:
    """The images that go to val: each modality's `val_fraction` of its own images (they alternate), picked by
    the seed from a stream of their own, so the images a seed draws stay the same."""
    if not 0 < spec.val_fraction < 1:
        raise UserError(f"val_fraction {spec.val_fraction} is not between 0 and 1")
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed).spawn(1)[0])
    chosen: set[int] = set()
    for first in range(len(MODALITIES)):
        indices = np.arange(first, spec.images, len(MODALITIES))
        chosen.update(rng.choice(indices, size=round(len(indices) * spec.val_fraction), replace=False).tolist())
    return chosen


def generate_demo_dataset(out: str, spec: DemoSpec = DemoSpec(), progress: bool = True) -> dict[str, int]:
    """Write the demo dataset under `out` (any store URI) in `spec.layout` and return counts per split.

    Filenames start with the modality (`thermal_00001`), so the house modality rule finds it in either layout.
    """
    if spec.layout not in DEMO_LAYOUTS:
        raise UserError(f"demo layout {spec.layout!r} is not one of {', '.join(DEMO_LAYOUTS)}")
    layout = DEMO_LAYOUTS[spec.layout]
    val = _val_indices(spec)
    store = open_store(out)
    rng = np.random.default_rng(spec.seed)
    counts: dict[str, int] = {}
    for index in range(spec.images):
        split = "val" if index in val else "train"
        modality = MODALITIES[index % len(MODALITIES)]
        roll = rng.random()
        heads = 0 if roll < spec.background_fraction else (2 if roll < spec.background_fraction
                                                           + spec.two_heads_fraction else 1)
        image, label = render_sample(rng, spec.size, modality, heads)
        place = {"split": layout.split_names[split], "modality": modality, "stem": f"{modality}_{index:05d}"}
        store.put_bytes(layout.image.format(**place), image)
        store.put_bytes(layout.label.format(**place), label.encode())
        counts[split] = counts.get(split, 0) + 1
        if progress and (index + 1) % 100 == 0:
            LOG.info(f"demo dataset: {index + 1}/{spec.images} images")
    store.put_bytes(DATA_YAML, data_yaml_text(None, layout.splits, CLASS_NAMES,
                                              comment=f"Pogona demo dataset (generated, seed {spec.seed})").encode())
    return counts
