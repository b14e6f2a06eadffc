"""Which store a URI names: `s3://bucket/prefix`, `file:///abs/path`, or a plain folder path."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from components.storage.folder import FolderStore
from components.storage.interface import ObjectStore
from components.storage.objects import StorageError
from components.storage.s3 import S3Store


def open_store(uri: str | os.PathLike[str]) -> ObjectStore:
    """The backend for a URI: `s3://bucket/prefix`, `file:///abs/path`, or a plain folder path."""
    text = os.fspath(uri)
    if text.startswith("s3://"):
        return S3Store(text)
    if text.startswith("file://"):
        return FolderStore(Path(urlparse(text).path))
    if "://" in text:
        raise StorageError(f"unsupported storage URI {text!r} (use s3://bucket/prefix, file:///path or a folder)")
    return FolderStore(Path(text))


def split_uri(uri: str) -> tuple[ObjectStore, str]:
    """Split a URI to an object into the store of its parent and the object's key."""
    text = uri.rstrip("/")
    parent, _, name = text.rpartition("/")
    if not name or not parent or parent.endswith(":/") or parent.endswith(":"):
        raise StorageError(f"{uri!r} does not name an object")
    return open_store(parent), name
