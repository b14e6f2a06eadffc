"""A local dataset as the steps that train, check and evaluate on it read it: its data.yaml, resolved.

Sanity, training, evaluation and export all start from a dataset folder or a data.yaml, and
validation counts images by modality; this module reads the folder the same way for all of
them, and writes the data.yaml with absolute paths that ultralytics is then given (every
data.yaml pogona writes comes from `data_yaml_text`). It imports neither torch nor ultralytics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from components.config import CLASS_NAMES, IMAGE_SUFFIXES, SPLITS
from components.data.dataset_layout import DATA_YAML, ModalityRule, parse_names, read_spec
from components.errors import UserError
from components.storage import write_atomic

SplitSource = Path | tuple[Path, ...]  # one folder or .txt list, or several as data.yaml lists them


def data_yaml_text(root: str | None, splits: dict[str, str | list[str]], names: dict[int, str],
                   modalities: ModalityRule = ModalityRule(), comment: str = "") -> str:
    """A data.yaml that ultralytics reads unchanged (`modalities` is pogona's own key, which it ignores).

    `root` None leaves `path` out: the data.yaml's own folder is the root, wherever the dataset is copied.
    """
    content: dict[str, object] = {**({"path": root} if root is not None else {}), **splits, "names": dict(names)}
    if modalities.to_spec():
        content["modalities"] = modalities.to_spec()
    return "".join(f"# {line}\n" for line in comment.splitlines()) + yaml.safe_dump(content, sort_keys=False)


def _sources(source: SplitSource) -> tuple[Path, ...]:
    return source if isinstance(source, tuple) else (source,)


@dataclass(frozen=True)
class Dataset:
    """A dataset as ultralytics needs it: root, class names, and each split's image folders or lists."""

    root: Path
    names: dict[int, str]
    splits: dict[str, SplitSource]
    modalities: ModalityRule = field(default_factory=ModalityRule)

    def images(self, split: str) -> list[Path]:
        images: list[Path] = []
        for source in _sources(self.splits[split]):
            if source.suffix == ".txt":
                lines = [line.strip() for line in source.read_text(encoding="utf-8-sig").splitlines()]
                images += [source.parent / line[2:] if line.startswith("./") else Path(line) for line in lines if line]
            else:
                images += sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return images

    def modality(self, image: Path, split: str) -> str:
        """The image's modality by the dataset's rule, exactly as validation counted it."""
        below_root = image.relative_to(self.root).as_posix() if image.is_relative_to(self.root) else image.name
        return self.modalities.modality(below_root, _below_split(image, self.splits[split]))

    def write_yaml(self, path: Path, splits: dict[str, SplitSource] | None = None) -> Path:
        """A data.yaml with absolute paths (ultralytics resolves relative ones against its own datasets dir)."""
        chosen = splits if splits is not None else self.splits
        listed = {s: [str(p) for p in _sources(p)] if isinstance(p, tuple) else str(p) for s, p in chosen.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data_yaml_text(str(self.root), listed, self.names, self.modalities).encode())
        return path


def _below_split(image: Path, split_source: SplitSource) -> str:
    folder = next((s for s in _sources(split_source) if s.suffix != ".txt" and image.is_relative_to(s)), None)
    return (image.relative_to(folder) if folder else Path(image.parent.name, image.name)).as_posix()


def load_dataset(data: Path) -> Dataset:
    """Read a dataset folder (with data.yaml) or a data.yaml; missing split entries default to images/<split>."""
    yaml_path = data / DATA_YAML if data.is_dir() else data
    if not yaml_path.is_file():
        raise UserError(f"{data} has no data.yaml (give a dataset folder containing data.yaml, or its path)")
    spec = read_spec(yaml_path.read_text(), str(yaml_path))
    root = Path(spec.get("path") or yaml_path.parent)
    root = (root if root.is_absolute() else yaml_path.parent / root).resolve()
    names = parse_names(spec, str(yaml_path)) if spec.get("names") else dict(CLASS_NAMES)
    splits: dict[str, SplitSource] = {}
    for split in SPLITS:
        entry = spec.get(split) or (f"images/{split}" if (root / "images" / split).is_dir() else None)
        if entry is None:
            continue
        entries = [entry] if isinstance(entry, str) else entry
        if not isinstance(entries, list) or not entries or not all(isinstance(e, str) for e in entries):
            raise UserError(f"{yaml_path}: '{split}' must be a folder, a .txt list or a list of them, not {entry!r}")
        sources = tuple(_split_source(yaml_path, root, split, e, isinstance(entry, str)) for e in entries)
        splits[split] = sources[0] if isinstance(entry, str) else sources
    for required in ("train", "val"):
        if required not in splits:
            raise UserError(f"{yaml_path}: no {required} split (expected images/{required}/ under {root})")
    return Dataset(root, names, splits, ModalityRule.from_spec(spec, str(yaml_path)))


def _split_source(yaml_path: Path, root: Path, split: str, entry: str, fallback: bool) -> Path:
    """One split entry resolved as ultralytics does: from `path`, and without a leading `../` if that names nothing."""
    # `..` collapsed without following links (a symlinked split keeps its labels beside it)
    candidates = [Path(entry) if Path(entry).is_absolute() else Path(os.path.normpath(root / entry))]
    if fallback and entry.startswith("../"):
        candidates.append(Path(os.path.normpath(root / entry[3:])))
    source = next((c for c in candidates if c.exists()), None)
    if source is None:
        raise UserError(f"{yaml_path}: {split} images {candidates[0]} do not exist")
    return source
