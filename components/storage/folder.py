"""The folder backend: a local folder laid out like a bucket, the default for laptops and `make demo`."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Iterator, Sequence

from components.storage.atomic import LOCK_SUFFIX, TEMPORARY_SUFFIXES, write_atomic, write_verified
from components.storage.checksums import Hasher, content_checks, file_chunks, hashing, md5_etag
from components.storage.interface import NoSuchObject, ObjectStore, PreconditionFailed
from components.storage.objects import ObjectInfo, StorageError


class FolderStore(ObjectStore):
    """A local folder used as a bucket; the embedded default for laptops and `make demo`."""

    def __init__(self, root: Path):
        self.root = root.expanduser().resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        """The file of `key`. Containment is checked on the key itself, not where links lead: a
        dataset of symlinks (DVC, git-annex) is read through them, a key with `..` never leaves."""
        path = Path(os.path.normpath(self.root / key.lstrip("/")))
        if path != self.root and self.root not in path.parents:
            raise StorageError(f"key {key!r} points outside the store {self.uri}")
        return path

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        start = base if base.is_dir() or base == self.root else base.parent  # never above the root
        if not start.is_dir():
            return  # a store not written yet (`dataset push --to` a new folder) holds nothing
        for path in sorted(start.rglob("*")):
            if not path.is_file() or path.name.endswith(TEMPORARY_SUFFIXES):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                yield ObjectInfo(key, path.stat().st_size, md5_etag(path))

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return ObjectInfo(key, path.stat().st_size, md5_etag(path))

    def download(self, key: str, dest: Path, expected: ObjectInfo | None = None) -> int:
        """Copy the file to `dest`; with `expected`, one whose size or content differs (it changed since the
        snapshot) is refused and `dest` left as it was."""
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"{self.url(key)} does not exist")
        checks = content_checks(expected.etag, {}, expected.sha256) if expected else []
        return write_verified(dest, file_chunks(src), f"{self.url(key)} changed since the snapshot",
                              expected.size if expected else None, checks)

    def upload_file(self, src: Path, key: str, digests: Sequence[Hasher] = ()) -> ObjectInfo:
        """Copy `src` in atomically; its ETag (the MD5) is computed while the bytes pass."""
        md5 = hashlib.md5()
        chunks = file_chunks(src)
        for digest in (md5, *digests):
            chunks = hashing(chunks, digest)
        size = write_verified(self._path(key), chunks, self.url(key))
        return ObjectInfo(key, size, md5.hexdigest())

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise NoSuchObject(f"{self.url(key)} does not exist")
        return path.read_bytes()

    @contextlib.contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + LOCK_SUFFIX), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None,
                  if_none_match: bool = False) -> ObjectInfo:
        path = self._path(key)
        if if_match is None and not if_none_match:
            write_atomic(path, data)
        else:
            with self._lock(path):
                current = self.head(key)
                if if_none_match and current is not None:
                    raise PreconditionFailed(f"{self.url(key)} already exists")
                if if_match is not None and (current is None or current.etag != if_match.strip('"')):
                    raise PreconditionFailed(f"{self.url(key)} changed since it was read")
                write_atomic(path, data)
        return ObjectInfo(key, len(data), hashlib.md5(data).hexdigest())

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
