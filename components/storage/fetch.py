"""Parallel, verified download of many objects into a local folder, keeping files that already match.

What sync and validation share: each object lands at its key under the folder, a file already
holding the object's content (`file_matches`) is kept, every other one is downloaded through
the store's atomic, verified `download`, and the first failure stops the rest.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from components.errors import UserError
from components.log import LOG
from components.storage.interface import ObjectStore
from components.storage.objects import ObjectInfo
from components.storage.checksums import file_matches


@dataclass(frozen=True)
class FetchCounts:
    downloaded: int
    skipped: int
    bytes: int


class Progress:
    """Counts logged as the files arrive: a line at every tenth of the total, and at the end."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled
        self.done = self.downloaded = self.bytes = 0
        self._lock = threading.Lock()
        self._last_tenth = 0

    def advance(self, downloaded_bytes: int | None) -> None:
        with self._lock:
            self.done += 1
            if downloaded_bytes is not None:
                self.downloaded += 1
                self.bytes += downloaded_bytes
            tenth = self.done * 10 // max(self.total, 1)
            if self.enabled and tenth > self._last_tenth:
                self._last_tenth = tenth
                LOG.info(f"{self.label}: {self.done}/{self.total} files ({self.downloaded} downloaded, "
                         f"{self.done - self.downloaded} skipped, {self.bytes / 1e6:.1f} MB)")


def local_path(dest: Path, key: str) -> Path:
    """Where `key` lands under `dest`; refuses keys that would land outside it (`..`, absolute)."""
    pure = PurePosixPath(key)
    if not key or "\\" in key or pure.is_absolute() or ".." in pure.parts:
        raise UserError(f"manifest key {key!r} would land outside {dest}; refusing to sync it")
    return dest / pure


def fetch_objects(store: ObjectStore, objects: Iterable[ObjectInfo], dest: Path, workers: int = 16,
                  progress: bool = True, label: str = "sync") -> FetchCounts:
    """Download objects under `dest` in parallel, keeping files that already match; stops at the first failure.

    Each object's size, ETag and sha256 are what its copy is checked against (a manifest entry's
    `object_info()`), so an object changed since it was listed is refused.
    """
    targets = [(info, local_path(dest, info.key)) for info in objects]
    bar = Progress(label, len(targets), progress)

    def fetch(info: ObjectInfo, path: Path) -> None:
        if file_matches(path, info):
            bar.advance(None)
        else:
            bar.advance(store.download(info.key, path, info))

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=label) as pool:
        futures = [pool.submit(fetch, info, path) for info, path in targets]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in finished if f.exception() is not None), None)
        if failed is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            raise failed.exception()  # type: ignore[misc]
    return FetchCounts(bar.downloaded, bar.done - bar.downloaded, bar.bytes)
