"""What every part of storage speaks in: an object's description and the error every store raises.

Kept apart from the `ObjectStore` interface so that the checksum and atomic-write modules, which
the interface and the backends use, can name them too.
"""

from __future__ import annotations

from dataclasses import dataclass


class StorageError(RuntimeError):
    """A storage failure explained in one line (what, where, and the likely cause)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    sha256: str | None = None  # the content hash a snapshot recorded; None where nobody has read the object yet
    checksum: str | None = None  # the object's full-object S3 checksum, "<algorithm>:<base64>", where known
