"""One object-storage interface with two backends: S3 (boto3) and a local folder laid out like a bucket.

Every step reads and writes through `open_store(uri)`, so the same code runs against AWS,
MinIO, moto on loopback, or a folder on a laptop. Downloads and writes are atomic (temporary
name, verified, then renamed); conditional writes guard the production pointer.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from urllib.parse import urlparse

MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
_PART_SUFFIX = ".part"
_LOCK_SUFFIX = ".lock"
TEMPORARY_SUFFIXES = (_PART_SUFFIX, _LOCK_SUFFIX)  # torn downloads and lock files: never objects
_T = TypeVar("_T")


class StorageError(RuntimeError):
    """A storage failure explained in one line (what, where, and the likely cause)."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object changed since it was read."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


def md5_etag(path: Path, part_size: int | None = None) -> str:
    """The S3-style ETag of a local file: plain MD5, or MD5-of-part-MD5s with '-N' for multipart."""
    if part_size is None:
        digest = hashlib.md5()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_READ_CHUNK), b""):
                digest.update(block)
        return digest.hexdigest()
    part_digests = []
    with open(path, "rb") as handle:
        for part in iter(lambda: handle.read(part_size), b""):
            part_digests.append(hashlib.md5(part).digest())
    return _multipart_etag(part_digests)


def _multipart_etag(part_digests: list[bytes]) -> str:
    """The ETag S3 gives a multipart upload: MD5 of the parts' MD5 digests, then '-' and the part count."""
    return f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


_COMMON_PART_MIB = (5, 8, 10, 15, 16, 32, 50, 64, 100, 128, 256, 512)


def _part_size_candidates(size: int, parts: int) -> list[int]:
    """Part sizes that cut `size` bytes into exactly `parts` parts: the exact split and the usual tool sizes."""
    mib = 1024 * 1024
    smallest = -(-size // parts)
    if parts == 1:
        return [size]
    largest = -(-size // (parts - 1)) - 1
    candidates = {smallest, -(-smallest // mib) * mib} | {m * mib for m in _COMMON_PART_MIB}
    return sorted(part for part in candidates if smallest <= part <= largest)


def file_matches(path: Path, size: int, etag: str) -> bool:
    """True when a local file has the size and ETag of an object (so it need not be downloaded)."""
    try:
        if path.stat().st_size != size:
            return False
    except FileNotFoundError:
        return False
    etag = etag.strip('"')
    if "-" not in etag:
        return md5_etag(path) == etag
    parts = int(etag.rsplit("-", 1)[1])
    return any(md5_etag(path, part) == etag for part in _part_size_candidates(size, parts))


def _atomic_target(dest: Path) -> tuple[int, Path]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=_PART_SUFFIX, dir=dest.parent)
    return fd, Path(tmp)


def write_atomic(dest: Path, data: bytes) -> None:
    """Write bytes so a reader sees the old file or the whole new one, never a torn one."""
    fd, tmp = _atomic_target(dest)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise StorageError(f"{self.url(key)} is not valid JSON: {exc}") from exc

    def put_json(self, key: str, value: Any, **conditions: Any) -> ObjectInfo:
        data = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
        return self.put_bytes(key, data, **conditions)


class FolderStore(ObjectStore):
    """A local folder used as a bucket; the embedded default for laptops and `make demo`."""

    def __init__(self, root: Path):
        self.root = root.expanduser().resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key.lstrip("/")).resolve()
        if path != self.root and self.root not in path.parents:
            raise StorageError(f"key {key!r} points outside the store {self.uri}")
        return path

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        start = base if base.is_dir() else base.parent
        if not start.exists():
            return
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
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"{self.url(key)} does not exist")
        return self._copy(src, dest, key, expected).size

    def upload_file(self, src: Path, key: str) -> ObjectInfo:
        return self._copy(src, self._path(key), key)

    def _copy(self, src: Path, dest: Path, key: str, expected: ObjectInfo | None = None) -> ObjectInfo:
        """Copy a file atomically, hashing it on the way: the object's size and ETag (a folder's is plain MD5).

        With `expected`, a copy whose size or ETag differs is refused and `dest` is left as it was.
        """
        fd, tmp = _atomic_target(dest)
        try:
            digest, size = hashlib.md5(), 0
            with os.fdopen(fd, "wb") as out, open(src, "rb") as handle:
                for block in iter(lambda: handle.read(_READ_CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
            copied = ObjectInfo(key, size, digest.hexdigest())
            if expected and (copied.size, copied.etag) != (expected.size, expected.etag.strip('"')):
                raise StorageError(f"{self.url(key)} changed since the snapshot (size or ETag differs)")
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return copied

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise StorageError(f"{self.url(key)} does not exist")
        return path.read_bytes()

    @contextlib.contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + _LOCK_SUFFIX), "w") as lock:
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


_THROTTLING_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                               "TooManyRequestsException", "RequestTimeout", "InternalError", "ServiceUnavailable"})


def is_transient(exc: BaseException) -> bool:
    """True for failures worth another try: 5xx, throttling, refused or reset connections, torn bodies."""
    from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError, HTTPClientError,
                                     IncompleteReadError)

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or exc.response.get("Error", {}).get("Code") in _THROTTLING_CODES
    return isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError, ConnectionError,
                            TimeoutError))


def with_retries(action: Callable[[], _T], attempts: int, base_delay: float = 0.2) -> _T:
    """Run `action`, trying again with jittered exponential backoff while the failure is transient.

    botocore's own retries are switched off so that one policy covers the request and the
    reading of its body (a connection reset mid-GET), and so that an unreachable endpoint
    fails after a few seconds instead of botocore's retries multiplied by ours.
    """
    attempt = 0
    while True:
        try:
            return action()
        except Exception as exc:
            if attempt >= attempts - 1 or not is_transient(exc):
                raise
        time.sleep(min(base_delay * 2 ** attempt, 2.0) * random.uniform(0.5, 1.0))
        attempt += 1


class S3Store(ObjectStore):
    """`s3://bucket/prefix` through boto3; endpoint, keys and region from the standard AWS variables."""

    def __init__(self, uri: str, *, attempts: int = 5, multipart_threshold: int = MULTIPART_THRESHOLD,
                 multipart_chunk: int = MULTIPART_CHUNK):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StorageError(f"{uri!r} has no bucket name (expected s3://bucket/prefix)")
        self.uri = uri.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.attempts = attempts
        self.multipart_threshold = multipart_threshold
        self.multipart_chunk = multipart_chunk
        self._client = _shared_client(*_client_settings())

    def _key(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1:] if self.prefix else full_key

    def _call(self, where: str, action: Callable[[], _T]) -> _T:
        try:
            return with_retries(action, self.attempts)
        except StorageError:
            raise
        except Exception as exc:  # boto raises a zoo; the user gets one line naming the object
            raise StorageError(explain_s3_error(exc, where)) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        request: dict[str, Any] = {"Bucket": self.bucket,
                                   "Prefix": self._key(prefix)}
        while True:
            page = self._call(self.url(prefix), functools.partial(self._client.list_objects_v2, **request))
            for item in page.get("Contents", []):
                yield ObjectInfo(self._relative(item["Key"]), item["Size"], item["ETag"].strip('"'))
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        def action() -> ObjectInfo | None:
            try:
                reply = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise
            return ObjectInfo(key, reply["ContentLength"], reply["ETag"].strip('"'))

        return self._call(self.url(key), action)

    def download(self, key: str, dest: Path, expected: ObjectInfo | None = None) -> int:
        from botocore.exceptions import ClientError

        def action() -> int:
            request: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
            if expected:
                request["IfMatch"] = f'"{expected.etag}"'
            try:
                reply = self._client.get_object(**request)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
                    raise StorageError(f"{self.url(key)} changed since the snapshot (ETag differs)") from exc
                raise
            etag = reply["ETag"].strip('"')
            fd, tmp = _atomic_target(dest)
            try:
                digest = hashlib.md5()
                written = 0
                with os.fdopen(fd, "wb") as out:
                    for block in reply["Body"].iter_chunks(_READ_CHUNK):
                        out.write(block)
                        digest.update(block)
                        written += len(block)
                if written != reply["ContentLength"] or (expected and written != expected.size):
                    raise StorageError(f"{self.url(key)} changed since the snapshot: got {written} bytes")
                matches = file_matches(tmp, written, etag) if "-" in etag else digest.hexdigest() == etag
                if not matches:
                    raise StorageError(f"{self.url(key)}: downloaded content does not match its ETag {etag}")
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return written

        return self._call(self.url(key), action)

    def upload_file(self, src: Path, key: str) -> ObjectInfo:
        """Upload one file: a single PUT below the multipart threshold, else parts with their own retries."""
        size = src.stat().st_size
        if size < self.multipart_threshold:
            return self.put_bytes(key, src.read_bytes())
        return self._upload_multipart(src, key, size)

    def _upload_multipart(self, src: Path, key: str, size: int) -> ObjectInfo:
        where, target = self.url(key), {"Bucket": self.bucket, "Key": self._key(key)}
        upload_id = self._call(where, lambda: self._client.create_multipart_upload(**target)["UploadId"])
        try:
            parts, part_digests = [], []
            with open(src, "rb") as handle:
                for number, chunk in enumerate(iter(lambda: handle.read(self.multipart_chunk), b""), start=1):
                    reply = self._call(f"{where} (part {number})", functools.partial(
                        self._client.upload_part, **target, UploadId=upload_id, PartNumber=number, Body=chunk))
                    parts.append({"PartNumber": number, "ETag": reply["ETag"]})
                    part_digests.append(hashlib.md5(chunk).digest())
            reply = self._call(where, lambda: self._client.complete_multipart_upload(
                **target, UploadId=upload_id, MultipartUpload={"Parts": parts}))
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(**target, UploadId=upload_id)
            raise
        etag = reply["ETag"].strip('"')
        if etag != _multipart_etag(part_digests):
            raise StorageError(f"upload of {src} to {where} did not arrive whole (ETag {etag} differs)")
        return ObjectInfo(key, size, etag)

    def get_bytes(self, key: str) -> bytes:
        return self._call(self.url(key), lambda: self._client.get_object(
            Bucket=self.bucket, Key=self._key(key))["Body"].read())

    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None,
                  if_none_match: bool = False) -> ObjectInfo:
        from botocore.exceptions import ClientError

        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if if_match is not None:
            request["IfMatch"] = f'"{if_match.strip(chr(34))}"'
        if if_none_match:
            request["IfNoneMatch"] = "*"

        def action() -> ObjectInfo:
            try:
                reply = self._client.put_object(**request)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}:
                    raise PreconditionFailed(f"{self.url(key)} changed since it was read") from exc
                raise
            return ObjectInfo(key, len(data), reply["ETag"].strip('"'))

        return self._call(self.url(key), action)

    def delete(self, key: str) -> None:
        self._call(self.url(key), lambda: self._client.delete_object(Bucket=self.bucket, Key=self._key(key)))


_CLIENT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
                     "POGONA_S3_CONNECT_TIMEOUT", "POGONA_S3_READ_TIMEOUT", "POGONA_S3_ADDRESSING")


def _client_settings() -> tuple[str | None, ...]:
    return tuple(os.environ.get(name) for name in _CLIENT_VARIABLES)


@functools.lru_cache(maxsize=8)
def _shared_client(*settings: str | None) -> Any:
    """One boto3 client (thread-safe, one large connection pool) per distinct AWS environment."""
    import boto3
    from botocore.config import Config

    env = dict(zip(_CLIENT_VARIABLES, settings))
    config = Config(
        connect_timeout=float(env["POGONA_S3_CONNECT_TIMEOUT"] or 3),
        read_timeout=float(env["POGONA_S3_READ_TIMEOUT"] or 60),
        retries={"total_max_attempts": 1},
        response_checksum_validation="when_required",  # downloads are verified against the ETag instead
        max_pool_connections=64,
        s3={"addressing_style": env["POGONA_S3_ADDRESSING"] or "path"},
    )
    return boto3.session.Session().client(
        "s3", config=config, endpoint_url=env["AWS_ENDPOINT_URL_S3"] or env["AWS_ENDPOINT_URL"] or None)


def explain_s3_error(exc: Exception, where: str) -> str:
    """Turn a boto exception into one line a person can act on."""
    from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError, NoCredentialsError,
                                     PartialCredentialsError)

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return f"{where}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    if isinstance(exc, BotoConnectionError):
        return f"{where}: cannot reach the S3 endpoint {endpoint} (check AWS_ENDPOINT_URL_S3 and the network)"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return f"{where}: the bucket does not exist at {endpoint}"
        if code in {"NoSuchKey", "404", "NotFound"}:
            return f"{where}: no such object"
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}:
            return f"{where}: access denied ({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        return f"{where}: S3 answered {status} {code}: {error.get('Message', '')}".rstrip(": ")
    return f"{where}: {type(exc).__name__}: {exc}"


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
