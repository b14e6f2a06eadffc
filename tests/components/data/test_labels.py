"""Label files as real datasets bring them, judged against ultralytics' own reader (the oracle).

Each case is a small label file (and, for the image cases, a small image) written in a tmp
folder; ultralytics' `verify_image_label` reads the same files, and pogona must give the same
verdict: refused, accepted with the same boxes, or accepted with a warning where ultralytics
changes something.
"""

from __future__ import annotations

import codecs
import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from components.data.labels import read_label
from components.data.validate import check_image, validate_dataset

BOX = "0 0.5 0.5 0.2 0.2"
OTHER = "0 0.25 0.3 0.1 0.15"
SQUARE = "0 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3"  # a polygon: class then x y pairs

# (case id, label bytes, class count, a phrase pogona's message must hold)
LABEL_CORPUS: list[tuple[str, bytes, int, str]] = [
    ("one box", f"{BOX}\n".encode(), 1, ""),
    ("two boxes", f"{BOX}\n{OTHER}\n".encode(), 1, ""),
    ("no final newline", f"{BOX}\n{OTHER}".encode(), 1, ""),
    ("windows line ends", f"{BOX}\r\n{OTHER}\r\n".encode(), 1, ""),
    ("old mac line ends", f"{BOX}\r{OTHER}\r".encode(), 1, ""),
    ("utf-8 byte-order mark", codecs.BOM_UTF8 + f"{BOX}\n".encode(), 1, ""),
    ("notepad: bom and crlf", codecs.BOM_UTF8 + f"{BOX}\r\n{OTHER}\r\n".encode(), 1, ""),
    ("trailing spaces", f"{BOX}   \n{OTHER} \t\n".encode(), 1, ""),
    ("tab separated", BOX.replace(" ", "\t").encode() + b"\n", 1, ""),
    ("runs of spaces and leading space", f"  0   0.5  0.5 0.2    0.2\n".encode(), 1, ""),
    ("non-breaking spaces", BOX.replace(" ", "\u00a0").encode() + b"\n", 1, ""),
    ("blank lines around and between", f"\n\n{BOX}\n\n  \n{OTHER}\n\n\n".encode(), 1, ""),
    ("empty file", b"", 1, ""),
    ("only whitespace", b" \r\n\t\n", 1, ""),
    ("scientific notation and signs", b"0 5e-1 +0.5 .2 2E-1\n", 1, ""),
    ("class written 0.0", b"0.0 0.5 0.5 0.2 0.2\n", 1, ""),
    ("second class of two", b"1 0.5 0.5 0.2 0.2\n", 2, ""),
    ("many decimals", b"0 0.512345678901 0.5 0.2 0.2\n", 1, ""),
    ("utf-16 le with bom", codecs.BOM_UTF16_LE + f"{BOX}\r\n".encode("utf-16-le"), 1, "UTF-16"),
    ("utf-16 be with bom", codecs.BOM_UTF16_BE + f"{BOX}\n".encode("utf-16-be"), 1, "UTF-16"),
    ("utf-16 without bom", f"{BOX}\n".encode("utf-16-le"), 1, "line 1: contains NUL bytes"),
    ("latin-1 byte", f"{BOX}\n".encode() + b"0 0.5 0.5 0.2 0.2 t\xeate\n", 1, "line 2: byte 0xea is not UTF-8"),
    ("four values", b"0 0.5 0.5 0.2\n", 1, "line 1: expected 5 values (class cx cy w h), got 4"),
    ("six values", b"0 0.5 0.5 0.2 0.2 0.9\n", 1, "line 1: expected 5 values (class cx cy w h), got 6"),
    ("one short line among good", f"{BOX}\n0 0.5 0.5\n".encode(), 1, "line 2: expected 5 values"),
    ("comment line", f"# class cx cy w h\n{BOX}\n".encode(), 1, "line 1: expected 5 values"),
    ("a word", b"0 0.5 0.5 0.2 wide\n", 1, "line 1: 'wide' is not a number"),
    ("decimal comma", b"0 0,5 0,5 0,2 0,2\n", 1, "line 1: '0,5' is not a number"),
    ("nan", b"0 nan 0.5 0.2 0.2\n", 1, "line 1: coordinates must be fractions"),
    ("inf", b"0 0.5 inf 0.2 0.2\n", 1, "line 1: coordinates must be fractions"),
    ("pixel coordinates", b"0 320 240 64 48\n", 1, "line 1: coordinates must be fractions of the image size"),
    ("just over the tolerance", b"0 1.02 0.5 0.2 0.2\n", 1, "line 1: coordinates must be fractions"),
    ("within the tolerance above", b"0 1.005 0.5 0.2 0.2\n", 1, "beyond the image"),
    ("within the tolerance below", b"0 -0.005 0.5 0.2 0.2\n", 1, "beyond the image"),
    ("below the tolerance", b"0 -0.02 0.5 0.2 0.2\n", 1, "line 1: negative values are not allowed"),
    ("slightly negative width", b"0 0.5 0.5 -0.005 0.2\n", 1, "line 1: negative values are not allowed"),
    ("box over the edge", b"0 0.95 0.5 0.2 0.2\n", 1, "line 1: the box reaches beyond the image"),
    ("zero width", b"0 0.5 0.5 0 0.2\n", 1, "line 1: the box has no width or height"),
    ("class beyond the names", b"3 0.5 0.5 0.2 0.2\n", 1, "line 1: class id 3 is not one of the 1 classes"),
    ("negative class", b"-1 0.5 0.5 0.2 0.2\n", 1, "line 1: negative values"),
    ("fractional class", b"0.5 0.5 0.5 0.2 0.2\n", 1, "line 1: class id 0.5 is not a whole number"),
    ("bad line last of many", f"{BOX}\n{OTHER}\n{BOX[:-4]}\n".encode(), 1, "line 3:"),
    ("duplicate row", f"{BOX}\n{OTHER}\n{BOX}\n".encode(), 1, "line 3: repeats line 1; ultralytics removes"),
    ("duplicate after float32 rounding", f"{BOX}\n0 0.5 0.5 0.2 0.20000000001\n".encode(), 1, "line 2: repeats"),
    ("three copies", f"{BOX}\n{BOX}\r\n{BOX}\n".encode(), 1, "line 3: repeats line 1"),
    ("polygon", f"{SQUARE}\n".encode(), 1, "polygon lines; ultralytics trains on their bounding boxes"),
    ("two polygons, one repeated", f"{SQUARE}\n{SQUARE}\n0 0.5 0.5 0.9 0.5 0.9 0.9\n".encode(), 1,
     "line 2: repeats line 1"),
    ("polygon and box mixed", f"{SQUARE}\n{BOX}\n".encode(), 1, "line 2: a box in a file of polygons"),
    ("polygon with an odd coordinate", f"{SQUARE} 0.2\n".encode(), 1, "line 1: a polygon needs a class and x y pairs"),
]


@pytest.fixture(scope="module")
def ultralytics_reader():
    """ultralytics' own label reader, imported offline."""
    from components.runtime.yolo_env import offline_ultralytics

    offline_ultralytics()
    from ultralytics.data.utils import verify_image_label

    return verify_image_label


def _jpeg(size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 60)).save(buffer, "JPEG", **save)
    return buffer.getvalue()


def _oracle(reader, folder: Path, image: bytes, label: bytes | None, class_count: int, suffix: str = ".jpg"):
    """ultralytics' verdict on one image and label: (boxes or None when it skips the image, its message)."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    image_path = folder / "images" / f"sample{suffix}"
    image_path.write_bytes(image)
    if label is not None:
        (folder / "labels" / "sample.txt").write_bytes(label)
    result = reader((str(image_path), str(folder / "labels" / "sample.txt"), "", False, class_count, 0, 0, False))
    return result[1], result[-1]


def _rows(boxes) -> list[tuple[float, ...]]:
    return sorted(tuple(round(float(v), 5) for v in row) for row in boxes)


@pytest.mark.parametrize("label, class_count, phrase", [case[1:] for case in LABEL_CORPUS],
                         ids=[case[0] for case in LABEL_CORPUS])
def test_each_label_file_gets_ultralytics_verdict(ultralytics_reader, tmp_path: Path, label: bytes,
                                                 class_count: int, phrase: str):
    expected, message = _oracle(ultralytics_reader, tmp_path, _jpeg(), label, class_count)
    verdict = read_label("labels/train/sample.txt", label, class_count)
    if expected is None:
        assert verdict.errors and not verdict.boxes, f"ultralytics skips it ({message}); pogona accepted it"
    else:
        assert not verdict.errors, f"ultralytics reads it; pogona refused it: {verdict.errors}"
        assert _rows(verdict.boxes) == _rows(expected)
    if "duplicate labels removed" in message:
        assert any("ultralytics removes the repeat" in warning for warning in verdict.warnings)
    problems = verdict.errors + verdict.warnings
    assert all(p.startswith("labels/train/sample.txt") for p in problems)
    if phrase:
        assert any(phrase in p for p in problems), problems
    else:
        assert problems == ()


def _png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, "PNG")
    return buffer.getvalue()


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (64, 64)).save(buffer, "GIF")
    return buffer.getvalue()


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[274] = 6  # orientation: rotate 90
    return _jpeg((64, 32), exif=exif)


# (case id, image bytes, file suffix, a phrase pogona's message must hold)
IMAGE_CORPUS: list[tuple[str, bytes, str, str]] = [
    ("jpeg", _jpeg(), ".jpg", ""),
    ("grayscale png", _png((64, 64)), ".png", ""),
    ("png named .jpg", _png((64, 64)), ".jpg", ""),
    ("exif rotated", _rotated_jpeg(), ".jpg", ""),
    ("progressive jpeg", _jpeg(progressive=True), ".jpg", ""),
    ("gif named .jpg", _gif(), ".jpg", "a GIF image; ultralytics skips it"),
    ("8 pixels tall", _png((64, 8)), ".png", "64x8 pixels; ultralytics skips images under 10 pixels"),
    ("not an image", b"<html>404</html>", ".jpg", "image does not decode"),
    ("jpeg cut short", _jpeg()[:200], ".jpg", "image does not decode"),
    ("jpeg without its end marker", _jpeg()[:-2], ".jpg", "image does not decode"),
    ("jpeg with bytes after its end", _jpeg() + bytes(16), ".jpg", "does not end with the JPEG end marker"),
]


@pytest.mark.parametrize("image, suffix, phrase", [case[1:] for case in IMAGE_CORPUS],
                         ids=[case[0] for case in IMAGE_CORPUS])
def test_each_image_gets_ultralytics_verdict(ultralytics_reader, tmp_path: Path, image: bytes, suffix: str,
                                             phrase: str):
    (tmp_path / "pogona").mkdir()
    (tmp_path / "pogona" / f"sample{suffix}").write_bytes(image)
    checked = check_image(f"images/train/sample{suffix}", tmp_path / "pogona" / f"sample{suffix}")
    expected, message = _oracle(ultralytics_reader, tmp_path / "ultralytics", image, f"{BOX}\n".encode(), 1, suffix)
    assert bool(checked.errors) == (expected is None), (checked, message)
    assert bool(checked.warnings) == bool(message and expected is not None), (checked, message)
    problems = checked.errors + checked.warnings
    assert all(p.startswith(f"images/train/sample{suffix}: ") for p in problems)
    assert (any(phrase in p for p in problems) if phrase else problems == ()), problems


@pytest.fixture
def root(demo_dataset_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the demo dataset."""
    copy = tmp_path / "dataset"
    shutil.copytree(demo_dataset_dir, copy, ignore=shutil.ignore_patterns("*.cache"))
    return copy


def test_a_dataset_saved_by_a_windows_editor_is_usable_with_every_box_counted(root: Path):
    before = validate_dataset(str(root))
    for label in (root / "labels").rglob("*.txt"):
        label.write_bytes(codecs.BOM_UTF8 + label.read_text().replace("\n", " \r\n").encode())
    after = validate_dataset(str(root))
    assert after.usable, after.errors[:3]
    assert after.warnings == []
    assert after.counts == before.counts


def test_duplicate_rows_are_counted_once_with_a_warning_naming_the_file(root: Path):
    before = validate_dataset(str(root))
    key = sorted(p.relative_to(root).as_posix() for p in root.glob("labels/train/thermal/*.txt")
                 if p.read_text().strip())[0]
    text = (root / key).read_text()
    (root / key).write_text(text + text)
    after = validate_dataset(str(root))
    assert after.usable and after.counts == before.counts
    assert after.warnings and all(w.startswith(f"{key} line ") and "repeats line" in w for w in after.warnings)
