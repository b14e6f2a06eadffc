"""Materialize exactly one snapshot into a local folder that ultralytics can train on.

Downloads run in parallel through one shared client; a file already present with the
snapshot's size and content (its sha256, else an MD5 ETag) is kept, every download is verified
and renamed into place, so a killed sync resumes where it stopped. Files of other snapshots
are removed, so the folder holds that snapshot and nothing else; several syncs may share the
folder. `materialize` syncs into the snapshot cache, one folder per snapshot, where the steps and
the CLI on one machine find what validation already downloaded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from components.config import cache_root
from components.data.dataset import data_yaml_text
from components.data.dataset_layout import DATA_YAML, ModalityRule
from components.data.snapshot import Manifest
from components.errors import UserError
from components.runtime.eviction import raise_if_evicted
from components.storage import (TEMPORARY_SUFFIXES, ObjectStore, fetch_objects, local_path, open_store,
                                remove_if_abandoned, write_atomic)

@dataclass(frozen=True)
class SyncSummary:
    downloaded: int
    skipped: int
    bytes: int
    seconds: float
    data_yaml: Path
    removed: int = 0

    def line(self) -> str:
        return (f"synced {self.downloaded + self.skipped} files to {self.data_yaml.parent}: "
                f"{self.downloaded} downloaded, {self.skipped} skipped, {self.removed} removed, "
                f"{self.bytes / 1e6:.1f} MB in {self.seconds:.2f} s")


def _remove_strays(dest: Path, manifest: Manifest, wanted: set[Path]) -> int:
    """Delete files in the snapshot's top folders (`images/`, `labels/`; `train/`, `valid/` in a Roboflow export)
    that are not in the snapshot, and torn temporary files.

    Another sync into the same folder (a shared cache) may be writing its temporary files and
    renaming files into place meanwhile: a temporary file still held by its writer is left alone,
    and a file that vanishes under the walk is not an error.
    """
    removed = 0
    folders = sorted({dest / PurePosixPath(entry.key).parts[0] for entry in manifest.entries if "/" in entry.key})
    for folder in folders:
        for path in folder.rglob("*") if folder.is_dir() else ():
            if path in wanted or path.suffix == ".cache" or not path.is_file():
                continue
            if path.name.endswith(TEMPORARY_SUFFIXES):
                removed += remove_if_abandoned(path)
            else:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


class StopsOnEviction:
    """A store refusing to start a download once the pod is evicted (sync and validate use it): SIGTERM stops only the main
    thread, and the download threads would otherwise fetch every queued object before the sync may exit. Downloads
    under way finish or remove their temporary file, as on any error."""

    def __init__(self, store: ObjectStore):
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def download(self, *args: Any, **kwargs: Any) -> Any:
        raise_if_evicted()
        return self._store.download(*args, **kwargs)


def write_data_yaml(dest: Path, manifest: Manifest) -> Path:
    """The data.yaml that points ultralytics at the local copy: the dataset's own split folders and lists."""
    splits = {split: list(sources) if len(sources) > 1 else sources[0]
              for split, sources in manifest.split_sources.items()}
    text = data_yaml_text(str(dest.resolve()), {s: _relative(v) for s, v in splits.items()}, manifest.names,
                          ModalityRule.from_spec({"modalities": manifest.modalities}, "manifest"),
                          f"snapshot {manifest.fingerprint} of {manifest.source}")
    path = dest / DATA_YAML
    write_atomic(path, text.encode())
    return path


def _relative(source: str | list[str]) -> str | list[str]:
    """A source key as data.yaml names it below `path` (the dataset root itself is `.`)."""
    return [s or "." for s in source] if isinstance(source, list) else source or "."


def sync_snapshot(manifest_path: Path, dest: Path, workers: int = 16, progress: bool = True,
                  allow_unusable: bool = False) -> SyncSummary:
    """Make `dest` hold exactly the snapshot in `manifest_path` and return what it took.

    A snapshot that validation found unusable is refused unless `allow_unusable` (to look at it).
    """
    started = time.monotonic()
    manifest = Manifest.load(manifest_path)
    if not manifest.usable and not allow_unusable:
        raise UserError(f"manifest {manifest_path}: validation found this dataset unusable "
                        f"({len(manifest.errors)} errors, the first: {manifest.errors[0]}); fix the dataset and "
                        "validate it again, or sync it anyway with --allow-unusable")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {local_path(dest, entry.key) for entry in manifest.entries}
    removed = _remove_strays(dest, manifest, wanted)
    counts = fetch_objects(StopsOnEviction(open_store(manifest.source)),
                           [entry.object_info() for entry in manifest.entries], dest, workers, progress)
    data_yaml = write_data_yaml(dest, manifest)
    return SyncSummary(counts.downloaded, counts.skipped, counts.bytes, time.monotonic() - started,
                       data_yaml, removed)


def dataset_cache_root() -> Path:
    """Where snapshots are materialized: POGONA_CACHE_DIR (a pod's emptyDir), else the user cache."""
    return Path(os.environ.get("POGONA_CACHE_DIR") or cache_root() / "datasets")


def snapshot_cache(fingerprint: str) -> Path:
    """One folder per dataset snapshot, so concurrent runs on a shared cache never mix two snapshots."""
    return dataset_cache_root() / fingerprint[:16]


def materialize(manifest_path: str) -> Path:
    """Sync the snapshot a manifest names into the cache and return its data.yaml."""
    fingerprint = Manifest.load(Path(manifest_path)).fingerprint
    return sync_snapshot(Path(manifest_path), snapshot_cache(fingerprint)).data_yaml
