"""Check a dataset in the contract layout before anything trains on it, and write its snapshot.

Every image is downloaded (in parallel) and decoded, every label file read as ultralytics
reads it (components.data.labels), and the problems that wasted runs in the field notes are
caught here in seconds: labels without images, boxes outside the image, class ids beyond the
names, the same picture in train and val, a split with nothing to learn. Each error names
the object key.
"""

from __future__ import annotations

import hashlib
import io
import statistics
import tempfile
import warnings as python_warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from components.config import CLASS_NAMES, SPLITS
from components.document import Block, Bullets, Heading, Paragraph, table, to_markdown
from components.errors import UserError
from components.data.labels import LabelVerdict, read_label
from components.data.near_duplicates import appearance, near_duplicate_leakage
from components.data.snapshot import IMAGE_ROLE, LABEL_ROLE, DatasetKey, Manifest, ManifestEntry, parse_key
from components.storage import ObjectStore, fetch_objects, open_store, write_atomic

_LISTED_PROBLEMS = 200
# PIL's names of the formats ultralytics reads (ultralytics.data.utils.IMG_FORMATS)
TRAINABLE_FORMATS = frozenset({"BMP", "JPEG", "JPEG2000", "MPO", "PNG", "TIFF", "WEBP"})
MIN_IMAGE_SIDE = 10  # ultralytics skips smaller images


@dataclass
class GroupCounts:
    images: int = 0
    backgrounds: int = 0
    instances: int = 0


@dataclass
class ValidationResult:
    usable: bool
    errors: list[str]
    warnings: list[str]
    counts: dict[str, dict[str, GroupCounts]]
    manifest: Manifest

    def metrics(self) -> dict[str, float]:
        """Flat numbers for a dashboard: `<split>_<count>` totals and `<split>_<modality>_<count>`."""
        flat: dict[str, float] = {}
        for split, groups in self.counts.items():
            for modality, group in groups.items():
                for name, value in vars(group).items():
                    flat[f"{split}_{modality}_{name}"] = float(value)
                    flat[f"{split}_{name}"] = flat.get(f"{split}_{name}", 0.0) + value
        return flat


def parse_names(text: str, where: str) -> dict[int, str]:
    """Class names from a data.yaml: a mapping {0: name} or a list [name]."""
    try:
        names = (yaml.safe_load(text) or {}).get("names")
    except (yaml.YAMLError, AttributeError) as exc:
        raise UserError(f"{where} is not a YAML mapping: {exc}") from None
    if isinstance(names, list) and names:
        return dict(enumerate(str(n) for n in names))
    if isinstance(names, dict) and names:
        try:
            numbered = {int(index): str(name) for index, name in names.items()}
        except ValueError:
            raise UserError(f"{where}: class ids in `names` must be integers") from None
        if sorted(numbered) != list(range(len(numbered))):
            raise UserError(f"{where}: class ids in `names` must be 0 to {len(numbered) - 1} (ultralytics requires "
                            f"it), got {sorted(numbered)}")
        return numbered
    raise UserError(f"{where} has no `names` (expected e.g. names: {{0: pogona_head}})")


def class_names(store: ObjectStore, keys: set[str]) -> dict[int, str]:
    """Names from the dataset's own data.yaml, else the contract's (components.config.CLASS_NAMES)."""
    if "data.yaml" not in keys:
        return dict(CLASS_NAMES)
    try:
        text = store.get_bytes("data.yaml").decode()
    except UnicodeDecodeError:
        raise UserError(f"{store.url('data.yaml')} is not UTF-8 text") from None
    return parse_names(text, store.url("data.yaml"))


@dataclass(frozen=True)
class ImageCheck:
    digest: str
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    looks: np.ndarray | None = None  # appearance signature (components.data.near_duplicates) of an image that decodes


def check_image(key: str, path: Path, near_duplicates: bool = True) -> ImageCheck:
    """The image's sha256, its appearance signature (when `near_duplicates`) and what ultralytics would make of
    it, naming `key` (not the local copy)."""
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    try:
        with python_warnings.catch_warnings():
            python_warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as image:
                image.verify()
            with Image.open(io.BytesIO(content)) as image:  # verify() leaves the image unusable: open again
                image.load()
                image_format, size = image.format or "unknown", image.size
                looks = appearance(image) if near_duplicates else None
    except Exception as exc:  # PIL raises many types for broken files; all mean "cannot train on it"
        reason = type(exc).__name__
        if not isinstance(exc, UnidentifiedImageError):  # whose message names only the in-memory buffer
            reason += f": {exc}"
        return ImageCheck(digest, (f"{key}: image does not decode ({reason})",))
    if image_format not in TRAINABLE_FORMATS:
        return ImageCheck(digest, (f"{key}: a {image_format} image; ultralytics skips it (it reads "
                                   f"{', '.join(sorted(TRAINABLE_FORMATS))})",))
    if min(size) < MIN_IMAGE_SIDE:
        return ImageCheck(digest, (f"{key}: {size[0]}x{size[1]} pixels; ultralytics skips images under "
                                   f"{MIN_IMAGE_SIDE} pixels a side",))
    if image_format == "JPEG" and not content.endswith(b"\xff\xd9"):
        return ImageCheck(digest, (), (f"{key}: does not end with the JPEG end marker; ultralytics re-saves "
                                       "its local copy on first read",), looks)
    return ImageCheck(digest, looks=looks)


def _leakage(hashes: dict[str, dict[str, str]]) -> list[str]:
    """One error per image whose exact content also appears in an earlier split."""
    errors, seen = [], {}
    for split in SPLITS:
        for key, digest in sorted(hashes.get(split, {}).items()):
            if digest in seen and seen[digest][0] != split:
                errors.append(f"{key}: leakage, same content as {seen[digest][1]} in {seen[digest][0]}")
            seen.setdefault(digest, (split, key))
    return errors


def validate_dataset(source: str, manifest_path: Path | None = None, report_path: Path | None = None,
                     cache_dir: Path | None = None, workers: int = 16,
                     near_duplicates: bool = True) -> ValidationResult:
    """List, download and check the dataset at `source`; write its manifest and Markdown report.

    `cache_dir` keeps the downloaded copy (a later sync into the same folder downloads nothing).
    `near_duplicates=False` leaves only byte-identical copies to catch across splits (the benchmark's
    baseline).
    """
    store = open_store(source)
    listing = list(store.list())
    names = class_names(store, {info.key for info in listing})
    errors: list[str] = []
    warnings: list[str] = []
    entries: list[ManifestEntry] = []
    places: dict[str, DatasetKey] = {}
    for info in listing:
        place = parse_key(info.key)
        if place is None:
            if info.key != "data.yaml":
                warnings.append(f"{info.key}: not an image or label under images|labels/train|val|test; ignored")
            continue
        places[info.key] = place
        entries.append(place.entry(info))
    entries.sort(key=lambda e: e.key)

    with tempfile.TemporaryDirectory(prefix="pogona-validate-") as scratch:
        local = Path(cache_dir) if cache_dir else Path(scratch)
        fetch_objects(store, [e.object_info() for e in entries], local, workers, progress=False, label="validate")
        images = [e for e in entries if e.role == IMAGE_ROLE]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            checked_images = list(pool.map(lambda e: check_image(e.key, local / e.key, near_duplicates), images))
        labels = [(e, (local / e.key).read_bytes()) for e in entries if e.role == LABEL_ROLE]
    # The hashes of what was read make the snapshot checkable wherever the bucket's ETags are not MD5s.
    content = {e.key: hashlib.sha256(data).hexdigest() for e, data in labels}
    content.update((image.key, checked.digest) for image, checked in zip(images, checked_images))
    entries = [replace(e, sha256=content[e.key]) for e in entries]

    label_verdicts = {(e.split, places[e.key].stem): (e, read_label(e.key, data, len(names)))
                      for e, data in labels}
    counts: dict[str, dict[str, GroupCounts]] = defaultdict(lambda: defaultdict(GroupCounts))
    hashes: dict[str, dict[str, str]] = defaultdict(dict)
    looks: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    box_sizes: list[float] = []
    read: set[str] = set()  # label keys that belong to an image (two images with one stem share it, as in ultralytics)
    for entry, checked in zip(images, checked_images):
        errors.extend(checked.errors)
        warnings.extend(checked.warnings)
        hashes[entry.split][entry.key] = checked.digest
        if checked.looks is not None:
            looks[entry.split][entry.key] = checked.looks
        label_entry, verdict = label_verdicts.get((entry.split, places[entry.key].stem), (None, LabelVerdict(())))
        if label_entry is not None and label_entry.key not in read:
            read.add(label_entry.key)
            errors.extend(verdict.errors)
            warnings.extend(verdict.warnings)
        group = counts[entry.split][entry.modality]
        group.images += 1
        group.instances += len(verdict.boxes)
        group.backgrounds += not verdict.boxes
        box_sizes.extend((w * h) ** 0.5 for _, _, _, w, h in verdict.boxes)
    errors.extend(f"{entry.key}: label without an image (expected images/{entry.split}/"
                  f"{places[entry.key].stem}.jpg or .png)" for entry, _ in label_verdicts.values()
                  if entry.key not in read)
    errors.extend(_leakage(hashes))
    if near_duplicates:
        errors.extend(near_duplicate_leakage(looks, {k: d for split in hashes.values() for k, d in split.items()}))
    for split in ("train", "val"):
        if split not in counts:
            errors.append(f"{store.url(f'images/{split}')}: the {split} split has no images")
    for split, groups in counts.items():
        if sum(g.instances for g in groups.values()) == 0:
            errors.append(f"{store.url(f'labels/{split}')}: the {split} split has no labeled instances")

    frozen_counts = {split: dict(groups) for split, groups in counts.items()}
    manifest = Manifest.build(store.uri, names, entries, errors)
    report = render_report(manifest, frozen_counts, box_sizes, errors, warnings)
    result = ValidationResult(not errors, errors, warnings, frozen_counts, manifest)
    if manifest_path:
        manifest.save(Path(manifest_path))
    if report_path:
        write_atomic(Path(report_path), report.encode())
    return result


def _problem_blocks(title: str, problems: list[str]) -> list[Block]:
    if not problems:
        return []
    items = [f"`{problem}`" for problem in problems[:_LISTED_PROBLEMS]]
    if len(problems) > _LISTED_PROBLEMS:
        items.append(f"… and {len(problems) - _LISTED_PROBLEMS} more")
    return [Heading(f"{title} ({len(problems)})", 3), Bullets(tuple(items))]


def render_report(manifest: Manifest, counts: dict[str, dict[str, GroupCounts]], box_sizes: list[float],
                  errors: list[str], warnings: list[str]) -> str:
    """The Markdown report: verdict, counts per split and modality, box-size spread, problems."""
    verdict = "usable" if not errors else f"not usable ({len(errors)} errors)"
    names = ", ".join(f"{i}: {n}" for i, n in sorted(manifest.names.items()))
    rows, total = [], GroupCounts()
    for split in SPLITS:
        for modality, group in sorted(counts.get(split, {}).items()):
            rows.append((split, modality, group.images, group.backgrounds, group.instances))
            total = GroupCounts(total.images + group.images, total.backgrounds + group.backgrounds,
                                total.instances + group.instances)
    rows.append(("**total**", "", total.images, total.backgrounds, total.instances))
    blocks: list[Block] = [
        Heading(f"Dataset validation: {manifest.source}", 1), Paragraph(f"**Verdict: {verdict}**"),
        Bullets((f"fingerprint: `{manifest.fingerprint}`", f"classes: {names}", f"objects: {len(manifest.entries)}")),
        Heading("Counts"), table(("split", "modality", "images", "backgrounds", "instances"), rows, "llrrr"),
        Heading("Box sizes")]
    if len(box_sizes) >= 2:
        deciles = statistics.quantiles(box_sizes, n=10)
        blocks += [Paragraph("Box size as a fraction of the image side (sqrt of width x height):"),
                   table(("min", "p10", "median", "p90", "max"),
                         [(min(box_sizes), deciles[0], statistics.median(box_sizes), deciles[-1], max(box_sizes))],
                         "rrrrr")]
    else:
        blocks.append(Paragraph(f"{len(box_sizes)} boxes: too few for a spread."))
    blocks += [Heading("Problems"), *_problem_blocks("Errors", errors), *_problem_blocks("Warnings", warnings)]
    if not errors and not warnings:
        blocks.append(Paragraph("None."))
    return to_markdown(blocks)
