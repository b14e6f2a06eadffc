"""One object-storage interface with two backends: S3 (boto3) and a local folder laid out like a bucket.

Every step reads and writes through `open_store(uri)`, so the same code runs against AWS,
MinIO, moto on loopback, or a folder on a laptop. Downloads and writes are atomic (temporary
name, verified, then renamed) and checked by content without assuming that ETags are MD5s;
conditional writes guard the production pointer; throttling is backed off as AWS's adaptive
retry mode does.

Modules, as s3transfer splits them: `objects` (ObjectInfo, StorageError), `interface`
(ObjectStore and the errors of its operations), `folder` and `s3` (the backends), `checksums`
(ETag math, S3 additional checksums, what proves a file holds an object), `atomic` (the
temporary-file, lock, hash, verify, rename write, and the sweep of abandoned temporary files),
`retries` (which failures are transient, the backoff and the throttle), `fetch` (many objects
into a folder in parallel), `uri` (which backend a URI names). This package exports what other
packages use.
"""

from components.storage.atomic import TEMPORARY_SUFFIXES, remove_if_abandoned, write_atomic
from components.storage.checksums import file_matches, md5_etag, sha256_file
from components.storage.fetch import fetch_objects, local_path
from components.storage.folder import FolderStore
from components.storage.interface import ObjectStore, PreconditionFailed
from components.storage.objects import ObjectInfo, StorageError
from components.storage.retries import is_transient
from components.storage.s3 import S3Store
from components.storage.uri import open_store, split_uri

__all__ = [
    "FolderStore", "ObjectInfo", "ObjectStore", "PreconditionFailed", "S3Store", "StorageError", "TEMPORARY_SUFFIXES",
    "fetch_objects", "file_matches", "is_transient", "local_path", "md5_etag", "open_store", "remove_if_abandoned",
    "sha256_file", "split_uri", "write_atomic",
]
