"""One object-storage interface with two backends: S3 (boto3) and a local folder laid out like a bucket.

Every step reads and writes through `open_store(uri)`, so the same code runs against AWS,
MinIO, moto on loopback, or a folder on a laptop. Downloads and writes are atomic (temporary
name, verified, then renamed) and checked by content without assuming that ETags are MD5s;
conditional writes guard the production pointer.

Modules: `objects` (ObjectInfo, errors), `interface` (ObjectStore), `folder` and `s3` (the
backends), `transfer` (content checks, atomic writes, retries), `fetch` (many objects into a
folder in parallel), `uri` (which backend a URI names).
"""

from components.storage.fetch import FetchCounts, fetch_objects, local_path
from components.storage.folder import FolderStore
from components.storage.interface import ObjectStore
from components.storage.objects import ObjectInfo, PreconditionFailed, StorageError
from components.storage.s3 import S3Store, explain_s3_error
from components.storage.transfer import (TEMPORARY_SUFFIXES, ContentCheck, content_checks, file_matches,
                                         is_transient, md5_etag, remove_if_abandoned, server_checksum,
                                         sha256_file, with_retries, write_atomic, write_verified)
from components.storage.uri import open_store, split_uri

__all__ = [
    "ContentCheck", "FetchCounts", "FolderStore", "ObjectInfo", "ObjectStore", "PreconditionFailed", "S3Store",
    "StorageError", "TEMPORARY_SUFFIXES", "content_checks", "explain_s3_error", "fetch_objects", "file_matches",
    "is_transient", "local_path", "md5_etag", "open_store", "remove_if_abandoned", "server_checksum",
    "sha256_file", "split_uri", "with_retries", "write_atomic", "write_verified",
]
