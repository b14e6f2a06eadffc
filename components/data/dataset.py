"""A local dataset as the steps that train, check and evaluate on it read it: its data.yaml, resolved.

Sanity, training, evaluation and export all start from a dataset folder or a data.yaml, and
validation counts images by modality; this module reads the folder the same way for all of
them, and writes the data.yaml with absolute paths that ultralytics is then given. It imports
neither torch nor ultralytics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from components.config import CLASS_NAMES, IMAGE_SUFFIXES, SPLITS
from components.errors import UserError
from components.data.snapshot import modality_of


@dataclass(frozen=True)
class Dataset:
    """A dataset as ultralytics needs it: root, class names, and each split's image folder or list."""

    root: Path
    names: dict[int, str]
    splits: dict[str, Path]

    def images(self, split: str) -> list[Path]:
        source = self.splits[split]
        if source.suffix == ".txt":
            return [Path(line.strip()) for line in source.read_text().splitlines() if line.strip()]
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)

    def write_yaml(self, path: Path, splits: dict[str, Path] | None = None) -> Path:
        """A data.yaml with absolute paths (ultralytics resolves relative ones against its own datasets dir)."""
        chosen = splits if splits is not None else self.splits
        content = {"path": str(self.root), **{s: str(p) for s, p in chosen.items()}, "names": self.names}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path


def image_modality(image: Path, split_source: Path) -> str:
    """The image's modality as validation counts it: `modality_of` on its path below the split's folder.

    An image from a .txt list (or outside the folder) is judged by its own folder and filename.
    """
    below = image.relative_to(split_source) if image.is_relative_to(split_source) else Path(image.parent.name,
                                                                                            image.name)
    return modality_of(PurePosixPath(below.as_posix()))


def load_dataset(data: Path) -> Dataset:
    """Read a dataset folder (with data.yaml) or a data.yaml; missing split entries default to images/<split>."""
    yaml_path = data / "data.yaml" if data.is_dir() else data
    if not yaml_path.is_file():
        raise UserError(f"{data} has no data.yaml (give a dataset folder containing data.yaml, or its path)")
    spec = yaml.safe_load(yaml_path.read_text()) or {}
    root = Path(spec.get("path") or yaml_path.parent)
    root = (root if root.is_absolute() else yaml_path.parent / root).resolve()
    names = spec.get("names") or CLASS_NAMES
    names = dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
    splits = {}
    for split in SPLITS:
        entry = spec.get(split) or (f"images/{split}" if (root / "images" / split).is_dir() else None)
        if entry is None:
            continue
        if not isinstance(entry, str):
            raise UserError(f"{yaml_path}: '{split}' must be one folder or one .txt list, not {entry!r}")
        # relative to `path`, `..` collapsed without following links (a symlinked split keeps its labels beside it)
        source = Path(entry) if Path(entry).is_absolute() else Path(os.path.normpath(root / entry))
        if not source.exists():
            raise UserError(f"{yaml_path}: {split} images {source} do not exist")
        splits[split] = source
    for required in ("train", "val"):
        if required not in splits:
            raise UserError(f"{yaml_path}: no {required} split (expected images/{required}/ under {root})")
    return Dataset(root, names, splits)
