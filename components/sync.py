"""Materialize exactly one snapshot into a local folder that ultralytics can train on.

Downloads run in parallel through one shared client; a file already present with the
snapshot's size and content (its sha256, else an MD5 ETag) is kept, every download is verified
and renamed into place, so a killed sync resumes where it stopped. Files of other snapshots
are removed, so the folder holds that snapshot and nothing else; several syncs may share the
folder.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

import yaml

from components.errors import UserError
from components.snapshot import Manifest, ManifestEntry
from components.storage import (TEMPORARY_SUFFIXES, ObjectStore, file_matches, open_store, remove_if_abandoned,
                                write_atomic)

_DATASET_DIRS = ("images", "labels")


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


@dataclass(frozen=True)
class FetchCounts:
    downloaded: int
    skipped: int
    bytes: int


class Progress:
    """Counts on stderr: redrawn in place on a terminal, a line per tenth in a log."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.done = self.downloaded = self.bytes = 0
        self._lock = threading.Lock()
        self._tty = sys.stderr.isatty()
        self._last_draw = 0.0
        self._last_tenth = 0

    def advance(self, downloaded_bytes: int | None) -> None:
        with self._lock:
            self.done += 1
            if downloaded_bytes is not None:
                self.downloaded += 1
                self.bytes += downloaded_bytes
            if self.enabled:
                self._draw()

    def _draw(self) -> None:
        text = (f"{self.label}: {self.done}/{self.total} files ({self.downloaded} downloaded, "
                f"{self.done - self.downloaded} skipped, {self.bytes / 1e6:.1f} MB)")
        now, tenth = time.monotonic(), self.done * 10 // max(self.total, 1)
        if self._tty and (now - self._last_draw > 0.1 or self.done == self.total):
            print(f"\r{text}", end="\n" if self.done == self.total else "", file=sys.stderr, flush=True)
            self._last_draw = now
        elif not self._tty and tenth > self._last_tenth:
            print(text, file=sys.stderr, flush=True)
            self._last_tenth = tenth


def local_path(dest: Path, key: str) -> Path:
    """Where `key` lands under `dest`; refuses keys that would land outside it (`..`, absolute)."""
    pure = PurePosixPath(key)
    if not key or "\\" in key or pure.is_absolute() or ".." in pure.parts:
        raise UserError(f"manifest key {key!r} would land outside {dest}; refusing to sync it")
    return dest / pure


def fetch_entries(store: ObjectStore, entries: Iterable[ManifestEntry], dest: Path, workers: int = 16,
                  progress: bool = True, label: str = "sync") -> FetchCounts:
    """Download entries under `dest` in parallel, keeping files that already match; stops at the first failure."""
    targets = [(entry, local_path(dest, entry.key)) for entry in entries]
    bar = Progress(label, len(targets), progress)

    def fetch(entry: ManifestEntry, path: Path) -> None:
        if file_matches(path, entry.object_info()):
            bar.advance(None)
        else:
            bar.advance(store.download(entry.key, path, entry.object_info()))

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=label) as pool:
        futures = [pool.submit(fetch, entry, path) for entry, path in targets]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in finished if f.exception() is not None), None)
        if failed is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            raise failed.exception()  # type: ignore[misc]
    return FetchCounts(bar.downloaded, bar.done - bar.downloaded, bar.bytes)


def _remove_strays(dest: Path, wanted: set[Path]) -> int:
    """Delete files under images/ and labels/ that are not in the snapshot, and torn temporary files.

    Another sync into the same folder (a shared cache) may be writing its temporary files and
    renaming files into place meanwhile: a temporary file still held by its writer is left alone,
    and a file that vanishes under the walk is not an error.
    """
    removed = 0
    for folder in _DATASET_DIRS:
        for path in (dest / folder).rglob("*") if (dest / folder).is_dir() else ():
            if path in wanted or path.suffix == ".cache" or not path.is_file():
                continue
            if path.name.endswith(TEMPORARY_SUFFIXES):
                removed += remove_if_abandoned(path)
            else:
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def write_data_yaml(dest: Path, manifest: Manifest) -> Path:
    """The data.yaml that points ultralytics at the local copy."""
    document: dict[str, object] = {"path": str(dest.resolve())}
    for split in manifest.splits:
        document[split] = f"images/{split}"
    document["names"] = dict(manifest.names)
    path = dest / "data.yaml"
    write_atomic(path, yaml.safe_dump(document, sort_keys=False).encode())
    return path


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
    removed = _remove_strays(dest, wanted)
    counts = fetch_entries(open_store(manifest.source), manifest.entries, dest, workers, progress)
    data_yaml = write_data_yaml(dest, manifest)
    return SyncSummary(counts.downloaded, counts.skipped, counts.bytes, time.monotonic() - started,
                       data_yaml, removed)

