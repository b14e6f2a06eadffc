"""The surface every backend offers: keys are '/'-separated and relative to the store's root."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from components.storage.objects import ObjectInfo, StorageError
from components.storage.transfer import file_matches


class ObjectStore:
    """Common surface; `key`s are '/'-separated and relative to the store's root."""

    uri: str

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key.lstrip('/')}"

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        raise NotImplementedError

    def head(self, key: str) -> ObjectInfo | None:
        raise NotImplementedError

    def download(self, key: str, dest: Path, expected: ObjectInfo | None = None) -> int:
        """Copy one object to `dest` atomically, verifying size and ETag; returns bytes written."""
        raise NotImplementedError

    def upload_file(self, src: Path, key: str) -> ObjectInfo:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None,
                  if_none_match: bool = False) -> ObjectInfo:
        """Write an object; `if_match` (ETag) or `if_none_match` make it conditional."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
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

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise StorageError(f"{self.url(key)} is not valid JSON: {exc}") from exc

    def put_json(self, key: str, value: Any, **conditions: Any) -> ObjectInfo:
        data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
        return self.put_bytes(key, data, **conditions)
