"""Which objects of a dataset each split holds, read from its data.yaml the way ultralytics reads it.

Exports come in many layouts: `images/train`, Roboflow's `train/images` with `../train/images` in
data.yaml, COCO's `images/train2017`, `.txt` image lists, several folders per split. ultralytics
trains on all of them (`check_det_dataset`, `img2label_paths`), so the snapshot follows the same
rules over a bucket listing: `path` and split entries resolve from the data.yaml's folder, a split
entry that starts with `../` and names nothing falls back to the same path without it, a folder
holds every image below it, a list line starting with `./` is relative to the list, and a label
sits where the last `images` folder of its image's key becomes `labels`. Everything stays below
the dataset prefix; what leaves it or names nothing is refused, naming the yaml key or list line.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import yaml

from components.config import CLASS_NAMES, IMAGE_SUFFIXES, MODALITIES, SPLITS
from components.errors import UserError

DATA_YAML = "data.yaml"
NO_MODALITY = "unknown"  # the modality of an image no rule places (kept: snapshot fingerprints include it)
NO_MODALITY_GROUP = "no modality"  # how figures and reports name those images beside the modalities of the others


def modality_group(modality: str) -> str:
    """The name under which figures and reports show images of `modality`."""
    return NO_MODALITY_GROUP if modality == NO_MODALITY else modality


def has_modalities(modalities: Iterable[str]) -> bool:
    """Whether images of these modalities call for figures per modality: a dataset whose images all lack one
    gets overall figures only."""
    return any(modality != NO_MODALITY for modality in modalities)


def parse_names(spec: dict[str, Any], where: str) -> dict[int, str]:
    """Class names from a data.yaml's mapping: `names` as {0: name} or [name], agreeing with `nc` when both are given."""
    names = spec.get("names")
    if isinstance(names, list) and names:
        numbered = dict(enumerate(str(n) for n in names))
    elif isinstance(names, dict) and names:
        try:
            numbered = {int(index): str(name) for index, name in names.items()}
        except ValueError:
            raise UserError(f"{where}: class ids in `names` must be integers") from None
        if sorted(numbered) != list(range(len(numbered))):
            raise UserError(f"{where}: class ids in `names` must be 0 to {len(numbered) - 1} (ultralytics requires "
                            f"it), got {sorted(numbered)}")
    else:
        raise UserError(f"{where} has no `names` (expected e.g. names: {{0: pogona_head}})")
    if "nc" in spec and str(spec["nc"]).strip() != str(len(numbered)):
        raise UserError(f"{where}: `nc: {spec['nc']}` disagrees with the {len(numbered)} classes in `names` "
                        f"({', '.join(numbered.values())}); ultralytics refuses such a file: fix `nc` or remove it")
    return numbered


def read_spec(text: str, where: str) -> dict[str, Any]:
    """A data.yaml's mapping; anything else is refused naming `where`."""
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{where} is not a YAML mapping: {exc}") from None
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise UserError(f"{where} is not a YAML mapping (got {type(spec).__name__})")
    return spec


@dataclass(frozen=True)
class ModalityRule:
    """How an image's modality is read from its path.

    The dataset states it in data.yaml as `modalities: {thermal: "*/thermal/*", visible: [...]}`: glob patterns
    (`*` crosses folders) matched against the image's path below the dataset root, the first modality that matches
    wins. Without the key, the house rule: a first folder below the split folder, or a filename prefix
    (`thermal_`), named like one of components.config.MODALITIES. An image no rule places has no modality.
    """

    patterns: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_spec(cls, spec: dict[str, Any], where: str) -> ModalityRule:
        stated = spec.get("modalities")
        if stated is None:
            return cls()
        if not isinstance(stated, dict) or not stated:
            raise UserError(f"{where}: `modalities` must map each modality to glob patterns, e.g. "
                            "modalities: {thermal: '*/thermal/*', visible: '*/visible_*'}")
        patterns = []
        for modality, globs in stated.items():
            globs = [globs] if isinstance(globs, str) else globs
            if not isinstance(globs, list) or not globs or not all(isinstance(g, str) for g in globs):
                raise UserError(f"{where}: `modalities: {modality}` must be a glob pattern or a list of them")
            patterns.append((str(modality), tuple(globs)))
        return cls(tuple(patterns))

    def to_spec(self) -> dict[str, list[str]] | None:
        """The `modalities` value of a data.yaml that states this rule (None: the house rule, no key)."""
        return {modality: list(globs) for modality, globs in self.patterns} or None

    def modality(self, below_root: str, below_split: str) -> str:
        """The modality of an image at `below_root` (relative to the dataset root) and `below_split` (relative
        to its split's folder; its own folder and name when it came from a list)."""
        if self.patterns:
            return next((modality for modality, globs in self.patterns
                         if any(fnmatch.fnmatchcase(below_root, g) for g in globs)), NO_MODALITY)
        path = PurePosixPath(below_split)
        if len(path.parts) > 1 and path.parts[0].lower() in MODALITIES:
            return path.parts[0].lower()
        name = path.name.lower()
        return next((m for m in MODALITIES if name.startswith(f"{m}_")), NO_MODALITY)


def label_key(image_key: str) -> str:
    """Where ultralytics looks for an image's label (`img2label_paths`): the last `images` folder becomes `labels`,
    the suffix `.txt`."""
    head, found, tail = f"/{image_key}".rpartition("/images/")
    path = f"{head}/labels/{tail}" if found else f"/{image_key}"
    return posixpath.splitext(path)[0].lstrip("/") + ".txt"


def is_image(key: str) -> bool:
    return PurePosixPath(key).suffix.lower() in IMAGE_SUFFIXES


@dataclass(frozen=True)
class SplitImage:
    key: str
    split: str
    modality: str


@dataclass(frozen=True)
class DatasetLayout:
    """A dataset's splits as keys below its prefix: what the snapshot records and sync materializes."""

    names: dict[int, str]
    sources: dict[str, tuple[str, ...]]  # split -> the folders and .txt lists data.yaml names, resolved
    images: tuple[SplitImage, ...]
    labels: dict[str, SplitImage]  # label key -> the image whose label it is (split and modality)
    lists: dict[str, str]  # .txt list key -> split
    modalities: ModalityRule
    orphan_labels: dict[str, SplitImage]  # a label file in a split's labels folder with no image: where it would be


def _inside(path: str, refusal: str) -> str:
    """`path` normalized as a key below the dataset prefix ("" for the prefix itself); `refusal` if it leaves it."""
    normal = posixpath.normpath(path)
    if posixpath.isabs(path) or normal == ".." or normal.startswith("../"):
        raise UserError(refusal)
    return "" if normal == "." else normal


class _Resolver:
    """Resolves one data.yaml's entries against the listing; `where` names a key in refusals."""

    def __init__(self, keys: set[str], read_text: Callable[[str], str], where: Callable[[str], str], root: str):
        self.keys, self.read_text, self.where, self.root = keys, read_text, where, root
        self.folders = {str(p) for key in keys for p in PurePosixPath(key).parents if str(p) != "."}

    def source(self, split: str, entry: str, fallback: bool) -> str:
        """A split entry as a key: a folder or a .txt list (`fallback`: ultralytics' `../` rule for a single entry).

        An entry that names nothing stays as written (an empty folder does not exist in a bucket)."""
        candidates = [posixpath.join(self.root, entry)]
        if fallback and entry.startswith("../"):
            candidates.append(posixpath.join(self.root, entry[3:]))
        within = [posixpath.normpath(c) for c in candidates
                  if not posixpath.isabs(c) and not posixpath.normpath(c).startswith("..")]
        if not within:
            raise UserError(f"{self.where(DATA_YAML)}: `{split}: {entry}` leaves the dataset; give the split "
                            f"relative to the data.yaml's folder (e.g. {split}: images/{split}) and keep its files "
                            "below it")
        keys = ["" if key == "." else key for key in within]
        return next((key for key in keys if key in self.keys or key in self.folders or key == ""), keys[0])

    def images_of(self, source: str) -> list[str]:
        if source in self.keys:
            return self.listed_images(source)
        prefix = f"{source}/" if source else ""
        return sorted(key for key in self.keys if key.startswith(prefix) and is_image(key))

    def listed_images(self, list_key: str) -> list[str]:
        """The images a .txt list names: `./` lines relative to the list, as ultralytics resolves them."""
        images = []
        for number, line in enumerate(self.read_text(list_key).splitlines(), start=1):
            line = line.strip()
            if not line or not is_image(line):
                continue
            at = f"{self.where(list_key)} line {number}: {line}"
            if not line.startswith("./"):
                raise UserError(f"{at} is not relative to the list; ultralytics reads only lines starting with ./ "
                                "relative to the list's folder: write it as ./<path from the list's folder>")
            key = _inside(posixpath.join(posixpath.dirname(list_key), line[2:]),
                          f"{at} leaves the dataset; keep listed images below it")
            if key not in self.keys:
                raise UserError(f"{at} names {key}, which is not in the dataset; upload the image or remove the line")
            images.append(key)
        return images


def read_layout(keys: Iterable[str], read_text: Callable[[str], str], where: Callable[[str], str]) -> DatasetLayout:
    """The dataset's layout from its listing (`keys`), reading data.yaml and lists through `read_text`.

    Without data.yaml, the contract layout: `images/<split>` and the contract's class names.
    """
    keys = set(keys)
    spec = read_spec(read_text(DATA_YAML), where(DATA_YAML)) if DATA_YAML in keys else {}
    names = parse_names(spec, where(DATA_YAML)) if DATA_YAML in keys else dict(CLASS_NAMES)
    path = spec.get("path")
    # An absolute `path` names a folder on the machine that wrote the file: the data.yaml's folder is the root.
    root = "" if not isinstance(path, str) or posixpath.isabs(path) else path
    root = _inside(root, f"{where(DATA_YAML)}: `path: {path}` leaves the dataset; remove `path` or give it "
                         "relative to the data.yaml's folder")
    resolver = _Resolver(keys, read_text, where, root)
    sources: dict[str, tuple[str, ...]] = {}
    for split in SPLITS:
        entry = spec.get(split)
        if entry is None:
            default = posixpath.join(root, "images", split)
            if default in resolver.folders:
                sources[split] = (default,)
            continue
        entries = [entry] if isinstance(entry, str) else entry
        if not isinstance(entries, list) or not entries or not all(isinstance(e, str) for e in entries):
            raise UserError(f"{where(DATA_YAML)}: `{split}` must be a folder, a .txt list or a list of them, "
                            f"not {entry!r}")
        sources[split] = tuple(resolver.source(split, e, isinstance(entry, str)) for e in entries)
    return _placed(names, sources, resolver, ModalityRule.from_spec(spec, where(DATA_YAML)))


def _placed(names: dict[int, str], sources: dict[str, tuple[str, ...]], resolver: _Resolver,
            modalities: ModalityRule) -> DatasetLayout:
    """Each split's images, their labels and the labels left without an image."""
    split_of: dict[str, str] = {}
    images, lists = [], {}
    for split, split_sources in sources.items():
        for source in split_sources:
            if source in resolver.keys:
                lists[source] = split
            for key in resolver.images_of(source):
                if split_of.setdefault(key, split) != split:
                    raise UserError(f"{resolver.where(DATA_YAML)}: {key} is in both {split_of[key]} and {split}; "
                                    "an image in two splits leaks: keep it in one")
                below_root = key[len(resolver.root) + 1:] if resolver.root else key
                if source in resolver.keys:  # from a list: judged by its own folder and name
                    below_split = posixpath.join(*PurePosixPath(key).parts[-2:])
                else:
                    below_split = key[len(source) + 1:] if source else key
                images.append(SplitImage(key, split, modalities.modality(below_root, below_split)))
    labels = {label_key(image.key): image for image in images if label_key(image.key) in resolver.keys}
    label_folders = {split: [(source, label_key(f"{source}/x.jpg").rpartition("/")[0]) for source in split_sources
                             if source not in resolver.keys] for split, split_sources in sources.items()}
    orphans = {}
    for key in sorted(resolver.keys - set(labels) - set(lists)):
        for split, folders in label_folders.items():
            for source, folder in folders:
                if key.endswith(".txt") and "labels" in folder.split("/") and key.startswith(f"{folder}/"):
                    below = key[len(folder) + 1:]
                    below_root = posixpath.join(source, below)[len(resolver.root) + 1 if resolver.root else 0:]
                    orphans[key] = SplitImage(key, split, modalities.modality(below_root, below))
    return DatasetLayout(names, sources, tuple(sorted(images, key=lambda i: i.key)), labels, lists, modalities,
                         orphans)
