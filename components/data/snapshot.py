"""The snapshot manifest: exactly which objects a run trains on, and a fingerprint of them.

Validation writes it from a bucket listing; every later step materializes exactly these
objects (verified by size, ETag and the content's sha256), so a run is reproducible while the bucket changes under
it, and an unchanged fingerprint tells a nightly run that there is nothing new to learn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from components.config import IMAGE_SUFFIXES, SPLITS
from components.data.dataset_layout import ModalityRule
from components.errors import UserError
from components.storage import ObjectInfo, write_atomic

IMAGE_ROLE = "image"
LABEL_ROLE = "label"
LIST_ROLE = "list"  # a .txt image list that data.yaml names as (part of) a split


@dataclass(frozen=True)
class ManifestEntry:
    key: str
    size: int
    etag: str
    split: str
    modality: str
    role: str
    sha256: str | None = None  # the content hash validation read; checks copies where the ETag is no MD5

    def object_info(self) -> ObjectInfo:
        return ObjectInfo(self.key, self.size, self.etag, self.sha256)

    @property
    def content(self) -> str:
        """What stands for the bytes: the content sha256, or the ETag in a manifest written before content hashes."""
        return self.sha256 or self.etag

    def same_content(self, other: ManifestEntry) -> bool:
        """Same bytes: by sha256 where both entries have one (whatever the buckets' ETags), else by ETag."""
        if self.size != other.size:
            return False
        return self.sha256 == other.sha256 if self.sha256 and other.sha256 else self.etag == other.etag


@dataclass(frozen=True)
class DatasetKey:
    """Where a key sits in the contract layout: `<role dir>/<split>/[<modality>/]<file>`."""

    role: str
    split: str
    modality: str
    stem: str

    def entry(self, info: ObjectInfo) -> ManifestEntry:
        """The manifest entry of the listed object that sits here."""
        return ManifestEntry(info.key, info.size, info.etag, self.split, self.modality, self.role, info.sha256)


def parse_key(key: str) -> DatasetKey | None:
    """Place a key in the contract layout (`images|labels/<split>/…`, what the demo and benchmarks write), or None.

    `stem` is the path below the split without its suffix: an image and its label share it.
    """
    parts = PurePosixPath(key).parts
    if len(parts) < 3 or parts[1] not in SPLITS:
        return None
    top, split, rest = parts[0], parts[1], PurePosixPath(*parts[2:])
    if top == "images" and rest.suffix.lower() in IMAGE_SUFFIXES:
        role = IMAGE_ROLE
    elif top == "labels" and rest.suffix == ".txt":
        role = LABEL_ROLE
    else:
        return None
    return DatasetKey(role, split, modality_of(rest), rest.with_suffix("").as_posix())


def modality_of(path_below_split: PurePosixPath) -> str:
    """The modality by the house rule (layout.ModalityRule without patterns): first folder, else filename prefix."""
    return ModalityRule().modality(path_below_split.as_posix(), path_below_split.as_posix())


def _entry_line(entry: ManifestEntry, content: str) -> bytes:
    return "\t".join(str(v) for v in (entry.key, entry.size, content, entry.split, entry.modality,
                                      entry.role)).encode() + b"\n"


def fingerprint(entries: list[ManifestEntry] | tuple[ManifestEntry, ...], names: dict[int, str]) -> str:
    """sha256 over the class names and the sorted entries: equal fingerprints mean the same classes and
    the same bytes in the same places; where the dataset lives, when it was read and how the bucket
    computes ETags do not count (`ManifestEntry.content`)."""
    digest = hashlib.sha256(json.dumps(sorted(names.items())).encode() + b"\n")
    for entry in sorted(entries, key=lambda e: e.key):
        digest.update(_entry_line(entry, entry.content))
    return digest.hexdigest()


def _entries_only_fingerprint(entries: tuple[ManifestEntry, ...]) -> str | None:
    """The fingerprint of manifests written before it covered class names and content hashes (entries with ETags
    only), so a champion's or a resumed run's older manifest still reads; None for a newer manifest."""
    if any(entry.sha256 for entry in entries):
        return None
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.key):
        digest.update(_entry_line(entry, entry.etag))
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    source: str
    names: dict[int, str]
    entries: tuple[ManifestEntry, ...]
    fingerprint: str
    created: str
    errors: tuple[str, ...] = ()  # what validation found wrong; any error makes the snapshot unusable
    # What data.yaml names as each split (folders and .txt lists, keys below the dataset prefix) and the modality
    # patterns it states: sync writes them into the local data.yaml. Manifests written before these fields had
    # the contract layout (`images/<split>`) and the house modality rule.
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    modalities: dict[str, list[str]] | None = None

    @classmethod
    def build(cls, source: str, names: dict[int, str], entries: list[ManifestEntry],
              errors: list[str] | tuple[str, ...] = (), sources: dict[str, tuple[str, ...]] | None = None,
              modalities: dict[str, list[str]] | None = None) -> Manifest:
        ordered = tuple(sorted(entries, key=lambda e: e.key))
        return cls(source, dict(names), ordered, fingerprint(ordered, names),
                   datetime.now(timezone.utc).isoformat(timespec="seconds"), tuple(errors),
                   _present_sources(ordered, sources), modalities)

    @property
    def usable(self) -> bool:
        return not self.errors

    @property
    def splits(self) -> list[str]:
        present = {entry.split for entry in self.entries if entry.role == IMAGE_ROLE}
        return [split for split in SPLITS if split in present]

    @property
    def split_sources(self) -> dict[str, tuple[str, ...]]:
        """Each present split's folders and lists, in SPLITS order."""
        return {split: self.sources[split] for split in self.splits}

    def save(self, path: Path) -> None:
        document = asdict(self)
        document["names"] = {str(index): name for index, name in self.names.items()}
        write_atomic(Path(path), (json.dumps(document, indent=1) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise UserError(f"manifest {path} does not exist (write one with `pogona dataset validate`)") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, where: str) -> Manifest:
        """A manifest from its JSON text; `where` names it in errors."""
        try:
            document = json.loads(text)
            entries = tuple(ManifestEntry(**entry) for entry in document["entries"])
            manifest = cls(document["source"], {int(i): n for i, n in document["names"].items()}, entries,
                           document["fingerprint"], document["created"], tuple(document.get("errors", ())))
            manifest = replace(manifest, sources=_present_sources(entries, document.get("sources")),
                               modalities=ModalityRule.from_spec(document, where).to_spec())
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"manifest {where} is not a snapshot manifest: {exc!r}") from None
        except UserError as exc:
            raise UserError(f"manifest {where} is not a snapshot manifest: {exc}") from None
        if manifest.fingerprint not in (fingerprint(entries, manifest.names), _entries_only_fingerprint(entries)):
            raise UserError(f"manifest {where}: entries do not match its fingerprint (edited by hand?)")
        return manifest


def _present_sources(entries: tuple[ManifestEntry, ...],
                     sources: dict[str, list[str] | tuple[str, ...]] | None) -> dict[str, tuple[str, ...]]:
    """The split sources to record: as given, else the contract's `images/<split>` for each split with images."""
    if sources:
        return {split: tuple(sources[split]) for split in SPLITS if split in sources}
    present = {entry.split for entry in entries if entry.role == IMAGE_ROLE}
    return {split: (f"images/{split}",) for split in SPLITS if split in present}
