"""YOLO label files read the way ultralytics reads them (`ultralytics.data.utils.verify_image_label`).

Training sees what ultralytics' reader makes of a file, so validation gives each file the
same verdict: accepted with the same boxes; accepted with a warning that says what
ultralytics will change (repeated rows removed, polygons reduced to their boxes, boxes
clipped at the image edge); or refused, naming the line and the reason, where ultralytics
would skip the image and every box in it.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import numpy as np

COORDINATE_TOLERANCE = 0.01  # ultralytics accepts coordinates from -0.01 to 1.01
EDGE_TOLERANCE = 0.001  # a box this close to the edge is at the edge (rounding in labeling tools)

Box = tuple[int, float, float, float, float]  # class, centre x, centre y, width, height (fractions of the image)


@dataclass(frozen=True)
class LabelVerdict:
    """What training gets from one label file: its boxes, or nothing when `errors` is not empty."""

    boxes: tuple[Box, ...]
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def _decode(key: str, data: bytes) -> tuple[str | None, str | None]:
    """The text ultralytics reads (UTF-8, with or without a byte-order mark), or why it cannot read it."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None, f"{key}: saved as UTF-16 text; ultralytics reads labels only as UTF-8 (save it as UTF-8)"
    if b"\x00" in data:
        line = data[:data.index(b"\x00")].count(b"\n") + 1
        return None, f"{key} line {line}: contains NUL bytes (UTF-16 text without a byte-order mark?); " \
                     "ultralytics reads labels only as UTF-8"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        return None, (f"{key} line {line}: byte {data[exc.start]:#04x} is not UTF-8 text; ultralytics reads "
                      "labels only as UTF-8 (save it as UTF-8)")


def _row_box(fields: list[str], polygon: bool) -> tuple[np.ndarray | None, str | None]:
    """A line as ultralytics' float32 row (class, cx, cy, w, h), or why it is not one."""
    if polygon and len(fields) == 5:
        return None, "a box in a file of polygons; ultralytics refuses files that mix the two"
    if polygon and (len(fields) < 3 or len(fields) % 2 == 0):
        return None, f"a polygon needs a class and x y pairs, got {len(fields)} values"
    if not polygon and len(fields) != 5:
        return None, f"expected 5 values (class cx cy w h), got {len(fields)}"
    try:
        values = np.array(fields, dtype=np.float32)
    except ValueError:
        bad = next(f for f in fields if not _is_number(f))
        return None, f"{bad!r} is not a number"
    if not polygon:
        return values, None
    points = values[1:].reshape(-1, 2)
    (x1, y1), (x2, y2) = points.min(0), points.max(0)
    return np.array([values[0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dtype=np.float32), None


def _is_number(field: str) -> bool:
    try:
        np.float32(field)
    except ValueError:
        return False
    return True


def _row_error(row: np.ndarray, class_count: int) -> str | None:
    """ultralytics' checks on one row, as a plain reason."""
    cls, coordinates = row[0], row[1:]
    shown = " ".join(f"{v:g}" for v in row)
    if not np.all(coordinates <= 1 + COORDINATE_TOLERANCE):  # NaN fails this too, as in ultralytics
        return f"coordinates must be fractions of the image size (0 to 1), got {shown} (pixels?)"
    if row.min() < -COORDINATE_TOLERANCE or row[3:5].min() < 0:
        return f"negative values are not allowed, got {shown}"
    if cls % 1 != 0:
        return f"class id {cls:g} is not a whole number"
    if cls >= class_count:
        return f"class id {cls:g} is not one of the {class_count} classes in data.yaml (0-{class_count - 1})"
    return None


def _row_warning(row: np.ndarray) -> str | None:
    """What ultralytics' training augmentation changes about an accepted box."""
    _, cx, cy, w, h = (float(v) for v in row)
    if w == 0 or h == 0:
        return "the box has no width or height; ultralytics drops it in training"
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if min(x1, y1) < -EDGE_TOLERANCE or max(x2, y2) > 1 + EDGE_TOLERANCE:
        return (f"the box reaches beyond the image (x {x1:.3f} to {x2:.3f}, y {y1:.3f} to {y2:.3f}); "
                "ultralytics clips it at the edge in training")
    return None


def read_label(key: str, data: bytes, class_count: int) -> LabelVerdict:
    """Read one label file (`key` names it in messages) into the boxes ultralytics trains on."""
    text, unreadable = _decode(key, data)
    if text is None:
        return LabelVerdict((), (unreadable,))
    lines = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    polygon = any(len(fields) > 6 for _, fields in lines)
    rows, errors, warnings = [], [], []
    for number, fields in lines:
        row, problem = _row_box(fields, polygon)
        problem = problem or _row_error(row, class_count)
        if problem:
            errors.append(f"{key} line {number}: {problem}")
        else:
            rows.append((number, fields, row))
    if errors:
        return LabelVerdict((), tuple(errors))
    if polygon:
        warnings.append(f"{key}: {len(rows)} polygon lines; ultralytics trains on their bounding boxes")
    first_line: dict[tuple, int] = {}
    boxes = []
    for number, fields, row in rows:
        identity = (row[0], tuple(np.array(fields[1:], dtype=np.float32))) if polygon else tuple(row)
        if identity in first_line:
            warnings.append(f"{key} line {number}: repeats line {first_line[identity]}; ultralytics removes the repeat")
            continue
        first_line[identity] = number
        if problem := _row_warning(row):
            warnings.append(f"{key} line {number}: {problem}")
        boxes.append((int(row[0]), *(float(v) for v in row[1:])))
    return LabelVerdict(tuple(boxes), (), tuple(warnings))
