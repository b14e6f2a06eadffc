"""The surface every backend offers, and the errors of its operations.

Keys are '/'-separated and relative to the store's root (`components.layout` builds them).
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from components.storage.checksums import Hasher, file_matches
from components.storage.objects import ObjectInfo, StorageError


class PreconditionFailed(StorageError):
    """A conditional write lost (`put_bytes` with `if_match` / `if_none_match`): the object changed since
    it was read."""


class NoSuchObject(StorageError):
    """A read (`get_bytes`, `get_json`) of a key that holds no object."""


class ObjectStore(abc.ABC):
    """An object store: S3 (`S3Store`) or a local folder laid out like a bucket (`FolderStore`)."""

    uri: str

    def url(self, key: str) -> str:
        """The full URI of `key`, as error lines and records name it."""
        return f"{self.uri.rstrip('/')}/{key.lstrip('/')}"

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, with its size and ETag (no checksum: a listing has none)."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's size, ETag and (where the server keeps one) full-object checksum; None when missing."""

    @abc.abstractmethod
    def download(self, key: str, dest: Path, expected: ObjectInfo | None = None) -> int:
        """Copy one object to `dest` atomically, verified by size and content; returns the bytes written.

        With `expected` (a snapshot's entry), an object changed since the snapshot is refused and
        `dest` is left as it was."""

    @abc.abstractmethod
    def upload_file(self, src: Path, key: str, digests: Sequence[Hasher] = ()) -> ObjectInfo:
        """Store a local file under `key`, checked to have arrived whole; returns what the store now holds.

        Each of `digests` (hashlib-like) is fed every byte as it is read, so a caller that also needs the
        file's hash (publish's sha256 of best.pt) reads the file once."""

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole content of a small object (a JSON record); `NoSuchObject` when there is none."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None,
                  if_none_match: bool = False) -> ObjectInfo:
        """Write an object whole. `if_match` (an ETag) writes only over that version, `if_none_match` only
        where there is none; a write that loses raises `PreconditionFailed`."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing one that is not there is no error."""

    def exists(self, key: str) -> bool:
        """True when an object is stored under `key` (one HEAD)."""
        return self.head(key) is not None

    def holds(self, path: Path, listed: ObjectInfo | None) -> bool:
        """True when the object `listed` already has the content of the local file `path` (an upload may
        be skipped): by its size and ETag, else, where the listed ETag proves nothing (SSE-KMS, SSE-C),
        by the checksum its HEAD returns."""
        if listed is None:
            return False
        if file_matches(path, listed):
            return True
        if listed.checksum is not None or path.stat().st_size != listed.size:
            return False  # a checksum already compared (it came from a HEAD), or another size
        held = self.head(listed.key)
        return held is not None and held.checksum is not None and file_matches(path, held)

    def get_json(self, key: str, *, missing_ok: bool = False) -> Any:
        """The JSON document stored under `key`. A missing one raises `NoSuchObject`, or with `missing_ok` is
        None: one GET where `exists()` then a read would take two requests."""
        try:
            data = self.get_bytes(key)
        except NoSuchObject:
            if missing_ok:
                return None
            raise
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise StorageError(f"{self.url(key)} is not valid JSON: {exc}") from exc

    def put_json(self, key: str, value: Any, **conditions: Any) -> ObjectInfo:
        """Write `value` as indented, key-sorted JSON (readable, and the same bytes for the same value);
        `conditions` as `put_bytes` takes them."""
        data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
        return self.put_bytes(key, data, **conditions)
