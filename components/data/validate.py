"""Check a dataset, in whatever layout its data.yaml describes, before anything trains on it, and write its snapshot.

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
from PIL import Image, UnidentifiedImageError

from components.config import SPLITS
from components.document import Block, Bullets, Heading, Paragraph, table, to_markdown
from components.data.labels import LabelVerdict, read_label
from components.data.dataset_layout import (DATA_YAML, NO_MODALITY, DatasetLayout, has_modalities, label_key, modality_group,
                                    read_layout)
from components.data.near_duplicates import appearance, near_duplicate_leakage
from components.data.snapshot import IMAGE_ROLE, LABEL_ROLE, LIST_ROLE, Manifest, ManifestEntry
from components.data.sync import StopsOnEviction
from components.errors import UserError
from components.runtime.eviction import raise_if_evicted
from components.storage import ObjectStore, fetch_objects, open_store, write_atomic

_LISTED_PROBLEMS = 200
# PIL's names of the formats ultralytics reads (ultralytics.data.utils.IMG_FORMATS)
TRAINABLE_FORMATS = frozenset({"AVIF", "BMP", "JPEG", "JPEG2000", "MPO", "PNG", "TIFF", "WEBP"})
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
        """Flat numbers for a dashboard: `<split>_<count>` totals, and `<split>_<modality>_<count>` where the dataset
        has modalities (the images without one as `no_modality`)."""
        per_modality = has_modalities(modality for groups in self.counts.values() for modality in groups)
        flat: dict[str, float] = {}
        for split, groups in self.counts.items():
            for modality, group in groups.items():
                for name, value in vars(group).items():
                    if per_modality:
                        flat[f"{split}_{modality_group(modality).replace(' ', '_')}_{name}"] = float(value)
                    flat[f"{split}_{name}"] = flat.get(f"{split}_{name}", 0.0) + value
        return flat


def read_store_layout(store: ObjectStore, keys: set[str]) -> DatasetLayout:
    """The dataset's splits from its data.yaml (components.data.dataset_layout), read through `store`."""
    def read_text(key: str) -> str:
        try:
            return store.get_bytes(key).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UserError(f"{store.url(key)} is not UTF-8 text") from None
    return read_layout(keys, read_text, store.url)


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


@dataclass(frozen=True)
class _Plan:
    """What the listing and data.yaml say the snapshot holds, before any byte is read."""

    layout: DatasetLayout
    entries: list[ManifestEntry]
    warnings: list[str]


def _plan(store: ObjectStore) -> _Plan:
    listing = list(store.list())
    layout = read_store_layout(store, {info.key for info in listing})
    images = {image.key: image for image in layout.images}
    entries, warnings = [], []
    for info in listing:
        if info.key in images:
            image = images[info.key]
            entries.append(ManifestEntry(info.key, info.size, info.etag, image.split, image.modality, IMAGE_ROLE))
        elif info.key in layout.labels or info.key in layout.orphan_labels:
            place = layout.labels.get(info.key) or layout.orphan_labels[info.key]
            entries.append(ManifestEntry(info.key, info.size, info.etag, place.split, place.modality, LABEL_ROLE))
        elif info.key in layout.lists:
            entries.append(ManifestEntry(info.key, info.size, info.etag, layout.lists[info.key], NO_MODALITY,
                                         LIST_ROLE))
        elif info.key != DATA_YAML:
            warnings.append(f"{info.key}: not an image, label or image list of a split in data.yaml; ignored")
    return _Plan(layout, sorted(entries, key=lambda e: e.key), warnings)


@dataclass(frozen=True)
class _Read:
    """The plan's entries with their content hashes, each image's check and each label's bytes."""

    entries: list[ManifestEntry]
    images: list[tuple[ManifestEntry, ImageCheck]]
    labels: dict[str, bytes]


def _read(store: ObjectStore, entries: list[ManifestEntry], cache_dir: Path | None, workers: int,
          near_duplicates: bool) -> _Read:
    with tempfile.TemporaryDirectory(prefix="pogona-validate-") as scratch:
        local = Path(cache_dir) if cache_dir else Path(scratch)
        fetch_objects(StopsOnEviction(store), [e.object_info() for e in entries], local, workers, progress=False,
                      label="validate")
        images = [e for e in entries if e.role == IMAGE_ROLE]

        def check(entry: ManifestEntry) -> ImageCheck:
            raise_if_evicted()  # SIGTERM stops only the main thread: queued checks would otherwise all run first
            return check_image(entry.key, local / entry.key, near_duplicates)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            checked = list(pool.map(check, images))
        others = {e.key: (local / e.key).read_bytes() for e in entries if e.role != IMAGE_ROLE}
    # The hashes of what was read make the snapshot checkable wherever the bucket's ETags are not MD5s.
    content = {key: hashlib.sha256(data).hexdigest() for key, data in others.items()}
    content.update((image.key, check.digest) for image, check in zip(images, checked))
    hashed = [replace(e, sha256=content[e.key]) for e in entries]
    labels = {e.key: others[e.key] for e in entries if e.role == LABEL_ROLE}
    return _Read(hashed, list(zip(images, checked)), labels)


@dataclass
class _Findings:
    errors: list[str]
    warnings: list[str]
    counts: dict[str, dict[str, GroupCounts]]
    box_sizes: list[float]


def _count(read: _Read, plan: _Plan) -> _Findings:
    """Each image's check and label verdict, counted by split and modality."""
    found = _Findings([], list(plan.warnings), defaultdict(lambda: defaultdict(GroupCounts)), [])
    class_count = len(plan.layout.names)
    verdicts = {key: read_label(key, data, class_count) for key, data in read.labels.items()}
    counted: set[str] = set()  # label keys that belong to an image (two images with one stem share it, as in ultralytics)
    for entry, checked in read.images:
        found.errors.extend(checked.errors)
        found.warnings.extend(checked.warnings)
        key = label_key(entry.key)
        verdict = verdicts.get(key, LabelVerdict(()))
        if key in verdicts and key not in counted:
            counted.add(key)
            found.errors.extend(verdict.errors)
            found.warnings.extend(verdict.warnings)
        group = found.counts[entry.split][entry.modality]
        group.images += 1
        group.instances += len(verdict.boxes)
        group.backgrounds += not verdict.boxes
        found.box_sizes.extend((w * h) ** 0.5 for _, _, _, w, h in verdict.boxes)
    found.errors.extend(f"{key}: label without an image (expected {_image_stem(key)}.jpg or .png)"
                        for key in plan.layout.orphan_labels)
    return found


def _image_stem(label: str) -> str:
    head, found, tail = f"/{label}".rpartition("/labels/")
    return (f"{head}/images/{tail}" if found else f"/{label}").lstrip("/").removesuffix(".txt")


def _split_errors(store: ObjectStore, plan: _Plan, read: _Read, found: _Findings, near_duplicates: bool) -> list[str]:
    """Problems of whole splits: the same picture in two of them, train or val empty, a split with nothing labeled."""
    hashes: dict[str, dict[str, str]] = defaultdict(dict)
    looks: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for entry, checked in read.images:
        hashes[entry.split][entry.key] = checked.digest
        if checked.looks is not None:
            looks[entry.split][entry.key] = checked.looks
    errors = _leakage(hashes)
    if near_duplicates:
        errors.extend(near_duplicate_leakage(looks, {k: d for split in hashes.values() for k, d in split.items()}))
    for split in ("train", "val"):
        if split not in found.counts:
            where = ", ".join(plan.layout.sources.get(split, ())) or f"images/{split}"
            errors.append(f"{store.url(where)}: the {split} split has no images")
    for split, groups in found.counts.items():
        if sum(g.instances for g in groups.values()) == 0:
            labels = sorted({label_key(f"{s}/x.jpg").rpartition("/")[0] for s in plan.layout.sources[split]})
            errors.append(f"{store.url(labels[0] if len(labels) == 1 else '')}: the {split} split has no "
                          "labeled instances")
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
    plan = _plan(store)
    read = _read(store, plan.entries, cache_dir, workers, near_duplicates)
    found = _count(read, plan)
    errors = found.errors + _split_errors(store, plan, read, found, near_duplicates)
    frozen_counts = {split: dict(groups) for split, groups in found.counts.items()}
    manifest = Manifest.build(store.uri, plan.layout.names, read.entries, errors, plan.layout.sources,
                              plan.layout.modalities.to_spec())
    report = render_report(manifest, frozen_counts, found.box_sizes, errors, found.warnings)
    result = ValidationResult(not errors, errors, found.warnings, frozen_counts, manifest)
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


def _counts_table(counts: dict[str, dict[str, GroupCounts]]) -> Block:
    """Images, backgrounds and instances per split and modality, and in all; per split only in a dataset without
    modalities."""
    per_modality = has_modalities(modality for groups in counts.values() for modality in groups)
    rows, total = [], GroupCounts()
    for split in SPLITS:
        for modality, group in sorted(counts.get(split, {}).items()):
            rows.append((split, *((modality_group(modality),) if per_modality else ()), group.images,
                         group.backgrounds, group.instances))
            total = GroupCounts(total.images + group.images, total.backgrounds + group.backgrounds,
                                total.instances + group.instances)
    modality = ("modality",) if per_modality else ()
    rows.append(("**total**", *(("",) if per_modality else ()), total.images, total.backgrounds, total.instances))
    return table(("split", *modality, "images", "backgrounds", "instances"), rows, "l" * (1 + len(modality)) + "rrr")


def render_report(manifest: Manifest, counts: dict[str, dict[str, GroupCounts]], box_sizes: list[float],
                  errors: list[str], warnings: list[str]) -> str:
    """The Markdown report: verdict, counts per split (and modality, where the dataset has them), box-size spread,
    problems."""
    verdict = "usable" if not errors else f"not usable ({len(errors)} errors)"
    names = ", ".join(f"{i}: {n}" for i, n in sorted(manifest.names.items()))
    blocks: list[Block] = [
        Heading(f"Dataset validation: {manifest.source}", 1), Paragraph(f"**Verdict: {verdict}**"),
        Bullets((f"fingerprint: `{manifest.fingerprint}`", f"classes: {names}", f"objects: {len(manifest.entries)}")),
        Heading("Counts"), _counts_table(counts), Heading("Box sizes")]
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
