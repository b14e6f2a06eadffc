"""Upload a local labeled dataset into the object store, sending only files that changed.

A re-push after labeling a few more images uploads those few: a file whose size and content
already match the object at its key (by ETag, or by checksum where the ETag is no MD5) is skipped.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from components.errors import UserError
from components.runtime.eviction import raise_if_evicted
from components.storage import TEMPORARY_SUFFIXES, open_store

_SKIPPED_SUFFIXES = (".cache", *TEMPORARY_SUFFIXES)


@dataclass(frozen=True)
class PushSummary:
    uploaded: int
    skipped: int
    bytes: int
    seconds: float

    def line(self) -> str:
        return (f"pushed {self.uploaded + self.skipped} files: {self.uploaded} uploaded, {self.skipped} unchanged, "
                f"{self.bytes / 1e6:.1f} MB in {self.seconds:.2f} s")


def dataset_files(source_dir: Path) -> dict[str, Path]:
    """The files worth pushing, by key: everything but hidden files and ultralytics' label caches."""
    if not source_dir.is_dir():
        raise UserError(f"dataset folder {source_dir} does not exist")
    files = {}
    for path in sorted(source_dir.rglob("*")):
        relative = path.relative_to(source_dir)
        hidden = any(part.startswith(".") for part in relative.parts)
        if path.is_file() and not hidden and not path.name.endswith(_SKIPPED_SUFFIXES):
            files[relative.as_posix()] = path
    return files


def push_dataset(source_dir: Path, dest: str, workers: int = 16) -> PushSummary:
    """Upload `source_dir` to the store at `dest`, skipping files the store already holds unchanged."""
    started = time.monotonic()
    files = dataset_files(Path(source_dir))
    store = open_store(dest)
    remote = {info.key: info for info in store.list()}
    def unchanged(key: str) -> bool:
        raise_if_evicted()  # SIGTERM stops only the main thread: queued work would otherwise all run first
        return store.holds(files[key], remote.get(key))

    def upload(key: str) -> int:
        raise_if_evicted()
        return store.upload_file(files[key], key).size

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        held = list(pool.map(unchanged, files))
        changed = [key for key, same in zip(files, held) if not same]
        sizes = list(pool.map(upload, changed))
    return PushSummary(len(changed), len(files) - len(changed), sum(sizes), time.monotonic() - started)
