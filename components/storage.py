"""One object-storage interface with two backends: S3 (boto3) and a local folder laid out like a bucket.

Every step reads and writes through `open_store(uri)`, so the same code runs against AWS,
MinIO, moto on loopback, or a folder on a laptop. Downloads and writes are atomic (temporary
name, verified, then renamed) and checked by content without assuming that ETags are MD5s;
conditional writes guard the production pointer.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import random
import re
import secrets
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar
from urllib.parse import quote, urlparse

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
    sha256: str | None = None  # the content hash a snapshot recorded; None where nobody has read the object yet
    checksum: str | None = None  # the object's full-object S3 checksum, "<algorithm>:<base64>", where known


_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-[0-9]+")


def md5_etag(path: Path, part_size: int | None = None) -> str:
    """The S3-style ETag of a local file: plain MD5, or MD5-of-part-MD5s with '-N' for multipart."""
    if part_size is None:
        return _file_digest(path, hashlib.md5).hexdigest()
    part_digests = []
    with open(path, "rb") as handle:
        for part in iter(lambda: handle.read(part_size), b""):
            part_digests.append(hashlib.md5(part).digest())
    return _multipart_etag(part_digests)


def _file_digest(path: Path, new_hasher: Callable[[], Any]) -> Any:
    hasher = new_hasher()
    for block in _file_chunks(path):
        hasher.update(block)
    return hasher


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's content: what a snapshot records and later checks copies against."""
    return _file_digest(path, hashlib.sha256).hexdigest()


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


def file_matches(path: Path, expected: ObjectInfo) -> bool:
    """True when a local file provably holds the object's content (so it need not be transferred).

    Proof is the snapshot's sha256 where recorded, else the server's checksum, else an ETag
    that is an MD5 (plain or multipart). An ETag that is neither (SSE-KMS, SSE-C, an unguessable part size) proves
    nothing, and the answer is False: the file is transferred again, never wrongly kept.
    """
    try:
        if path.stat().st_size != expected.size:
            return False
    except FileNotFoundError:
        return False
    if expected.sha256:
        return sha256_file(path) == expected.sha256
    if expected.checksum:
        algorithm, value = expected.checksum.split(":", 1)
        return _base64(_file_digest(path, _CHECKSUM_HASHERS[algorithm]).digest()) == value
    etag = expected.etag.strip('"')
    if _MD5_HEX.fullmatch(etag):
        return md5_etag(path) == etag
    if _MULTIPART_ETAG.fullmatch(etag):
        parts = int(etag.rsplit("-", 1)[1])
        return any(md5_etag(path, part) == etag for part in _part_size_candidates(expected.size, parts))
    return False


class _Crc:
    """A CRC as a hashlib-like object (update, digest), for S3's additional checksums."""

    def __init__(self, function: Callable[[bytes, int], int], width: int):
        self.function, self.width, self.value = function, width, 0

    def update(self, data: bytes) -> None:
        self.value = self.function(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(self.width, "big")


def _checksum_hashers() -> dict[str, Callable[[], Any]]:
    """S3 additional checksum algorithms this process can compute: CRC32, SHA-1, SHA-256 from the standard
    library; CRC32C and CRC64NVME (S3's checksum for objects uploaded without one) from the AWS CRT, a
    dependency, which a stripped-down install may lack."""
    hashers: dict[str, Callable[[], Any]] = {"crc32": lambda: _Crc(zlib.crc32, 4), "sha256": hashlib.sha256,
                                             "sha1": hashlib.sha1}
    try:
        from awscrt import checksums
    except ImportError:
        return hashers
    hashers["crc32c"] = lambda: _Crc(checksums.crc32c, 4)
    hashers["crc64nvme"] = lambda: _Crc(checksums.crc64nvme, 8)
    return hashers


_CHECKSUM_HASHERS = _checksum_hashers()


@dataclass(frozen=True)
class ContentCheck:
    """One value the bytes of a download must hash to, and where that value came from."""

    name: str
    expected: bytes
    new_hasher: Callable[[], Any]
    render: Callable[[bytes], str]


def _base64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _etag_is_md5(etag: str, headers: Mapping[str, str]) -> bool:
    """An ETag is the content's MD5 only for a single-part object without SSE-KMS or SSE-C encryption."""
    encryption = headers.get("x-amz-server-side-encryption", "")
    return (bool(_MD5_HEX.fullmatch(etag.strip('"'))) and not encryption.startswith("aws:kms")
            and "x-amz-server-side-encryption-customer-algorithm" not in headers)


def server_checksum(headers: Mapping[str, str]) -> str | None:
    """The object's full-object S3 additional checksum, "<algorithm>:<base64>", of an algorithm
    computable here; None when the reply carries none (or only a composite one of the parts).

    `headers` are the reply's, with lower-case names.
    """
    if headers.get("x-amz-checksum-type", "FULL_OBJECT").upper() != "FULL_OBJECT":
        return None
    for algorithm in _CHECKSUM_HASHERS:
        value = headers.get(f"x-amz-checksum-{algorithm}", "")
        if value and "-" not in value:
            return f"{algorithm}:{value}"
    return None


def content_checks(etag: str, headers: Mapping[str, str], sha256: str | None) -> list[ContentCheck]:
    """What a download is verified against: the object's S3 additional checksum (`server_checksum`),
    the snapshot's sha256, and, where there is no sha256 to tie the bytes to, the ETag when it is a plain MD5.

    `headers` are the response's, with lower-case names.
    """
    checks = []
    if checksum := server_checksum(headers):
        algorithm, value = checksum.split(":", 1)
        checks.append(ContentCheck(f"{algorithm.upper()} checksum", base64.b64decode(value),
                                   _CHECKSUM_HASHERS[algorithm], _base64))
    if sha256:
        checks.append(ContentCheck("snapshot sha256", bytes.fromhex(sha256), hashlib.sha256, bytes.hex))
    elif _etag_is_md5(etag, headers):
        checks.append(ContentCheck("MD5 ETag", bytes.fromhex(etag.strip('"')), hashlib.md5, bytes.hex))
    return checks


def _atomic_target(dest: Path) -> tuple[int, Path]:
    """A new temporary file beside `dest`, locked while it is written, with the umask's usual mode.

    The lock tells a concurrent sync into the same folder that the file is in flight (see
    `remove_if_abandoned`); the caller renames it into place before closing it.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}{_PART_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd, tmp


def remove_if_abandoned(path: Path) -> bool:
    """Delete a temporary file that no writer holds (left by a killed process); True when it was deleted.

    An empty one is kept: its writer may have created it and not yet locked it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held, named = os.fstat(fd), os.stat(path)
    except (BlockingIOError, FileNotFoundError):
        return False  # in flight, or renamed into place meanwhile
    finally:
        os.close(fd)
    if held.st_size == 0 or held.st_ino != named.st_ino:
        return False
    path.unlink(missing_ok=True)
    return True


def write_verified(dest: Path, chunks: Iterable[bytes], where: str, size: int | None = None,
                   checks: Iterable[ContentCheck] = ()) -> int:
    """Stream chunks into `dest` atomically: renamed into place only when `size` and every check hold.

    Returns the bytes written. On any failure `dest` is left as it was and nothing is left behind.
    """
    checks = list(checks)
    hashers = [check.new_hasher() for check in checks]
    fd, tmp = _atomic_target(dest)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            for block in chunks:
                out.write(block)
                for hasher in hashers:
                    hasher.update(block)
                written += len(block)
            if size is not None and written != size:
                raise StorageError(f"{where}: got {written} of {size} bytes")
            for check, hasher in zip(checks, hashers):
                if hasher.digest() != check.expected:
                    raise StorageError(f"{where}: downloaded content does not match its {check.name}: "
                                       f"{check.render(hasher.digest())}, expected {check.render(check.expected)}")
            out.flush()
            os.replace(tmp, dest)  # before the lock goes with the close, so the file is never seen abandoned
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def write_atomic(dest: Path, data: bytes) -> None:
    """Write bytes so a reader sees the old file or the whole new one, never a torn one."""
    write_verified(dest, [data], str(dest))


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from iter(lambda: handle.read(_READ_CHUNK), b"")


def _hashing(chunks: Iterable[bytes], hasher: Any) -> Iterator[bytes]:
    for chunk in chunks:
        hasher.update(chunk)
        yield chunk


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
        if path.stat().st_size != listed.size:
            return False
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
        """Copy the file to `dest`; with `expected`, one whose size or content differs (it changed since the
        snapshot) is refused and `dest` left as it was."""
        src = self._path(key)
        if not src.is_file():
            raise StorageError(f"{self.url(key)} does not exist")
        checks = content_checks(expected.etag, {}, expected.sha256) if expected else []
        return write_verified(dest, _file_chunks(src), f"{self.url(key)} changed since the snapshot",
                              expected.size if expected else None, checks)

    def upload_file(self, src: Path, key: str) -> ObjectInfo:
        """Copy `src` in atomically; its ETag (the MD5) is computed while the bytes pass."""
        md5 = hashlib.md5()
        size = write_verified(self._path(key), _hashing(_file_chunks(src), md5), self.url(key))
        return ObjectInfo(key, size, md5.hexdigest())

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
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or exc.response.get("Error", {}).get("Code") in _THROTTLING_CODES
    return isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError, Urllib3Error,
                            ConnectionError, TimeoutError))


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
        self._connection = _shared_connection(*_client_settings())
        self._client = self._connection.client

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
                reply = self._client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                    return None
                raise
            return ObjectInfo(key, reply["ContentLength"], reply["ETag"].strip('"'),
                              checksum=server_checksum(reply["ResponseMetadata"]["HTTPHeaders"]))

        return self._call(self.url(key), action)

    def download(self, key: str, dest: Path, expected: ObjectInfo | None = None) -> int:
        """Stream the object to `dest` atomically, checked by size and by `content_checks`.

        With `expected`, the GET is conditional on its ETag, so an object replaced since the
        snapshot is refused by the server before a byte is read.
        """
        from botocore.exceptions import ClientError

        where = self.url(key)
        headers = {"x-amz-checksum-mode": "ENABLED"}
        if expected:
            headers["If-Match"] = f'"{expected.etag.strip(chr(34))}"'

        def action() -> int:
            try:
                response = self._connection.get(self.bucket, self._key(key), headers)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
                    raise StorageError(f"{where} changed since the snapshot (ETag differs)") from exc
                raise
            try:
                reply = {name.lower(): value for name, value in response.headers.items()}
                length = int(reply["content-length"]) if "content-length" in reply else None
                if expected and length is not None and length != expected.size:
                    raise StorageError(f"{where} changed since the snapshot: {length} bytes, "
                                       f"the snapshot has {expected.size}")
                checks = content_checks(reply.get("etag", ""), reply, expected.sha256 if expected else None)
                return write_verified(dest, response.stream(_READ_CHUNK, decode_content=False), where, length,
                                      checks)
            except BaseException:
                response.close()  # the connection may hold unread bytes: never hand it to the next request
                raise
            finally:
                response.release_conn()

        return self._call(where, action)

    def upload_file(self, src: Path, key: str) -> ObjectInfo:
        """Upload one file: a single PUT below the multipart threshold, else parts with their own retries."""
        size = src.stat().st_size
        if size < self.multipart_threshold:
            return self.put_bytes(key, src.read_bytes())
        return self._upload_multipart(src, key, size)

    def _upload_multipart(self, src: Path, key: str, size: int) -> ObjectInfo:
        """Parts with their own retries, each checked by the server against its CRC32, and the whole
        object against a full-object CRC32 (or, from a server without checksums, the MD5-of-MD5s ETag)."""
        where, target = self.url(key), {"Bucket": self.bucket, "Key": self._key(key)}
        upload_id = self._call(where, lambda: self._client.create_multipart_upload(
            **target, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")["UploadId"])
        try:
            parts, part_digests, whole = [], [], _Crc(zlib.crc32, 4)
            with open(src, "rb") as handle:
                for number, chunk in enumerate(iter(lambda: handle.read(self.multipart_chunk), b""), start=1):
                    reply = self._call(f"{where} (part {number})", functools.partial(
                        self._client.upload_part, **target, UploadId=upload_id, PartNumber=number, Body=chunk,
                        ChecksumAlgorithm="CRC32"))
                    parts.append({"PartNumber": number, "ETag": reply["ETag"],
                                  **({"ChecksumCRC32": reply["ChecksumCRC32"]} if "ChecksumCRC32" in reply else {})})
                    part_digests.append(hashlib.md5(chunk).digest())
                    whole.update(chunk)
            crc32 = _base64(whole.digest())
            reply = self._call(where, lambda: self._client.complete_multipart_upload(
                **target, UploadId=upload_id, MultipartUpload={"Parts": parts}, ChecksumCRC32=crc32,
                ChecksumType="FULL_OBJECT"))
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(**target, UploadId=upload_id)
            raise
        etag, encrypted = reply["ETag"].strip('"'), "ServerSideEncryption" in reply or "SSECustomerAlgorithm" in reply
        stored = reply.get("ChecksumCRC32")
        if stored is None:  # some servers keep the full-object CRC32 without echoing it in the completion
            held = (self.head(key) or ObjectInfo(key, 0, "")).checksum or ""
            stored = held.removeprefix("crc32:") if held.startswith("crc32:") else None
        arrived = stored == crc32 if stored is not None else encrypted or etag == _multipart_etag(part_digests)
        if not arrived:
            raise StorageError(f"upload of {src} to {where} did not arrive whole (CRC32 or ETag differs)")
        # the checksum only where the server holds it, so callers never take the client's own sum for proof
        return ObjectInfo(key, size, etag, checksum=f"crc32:{crc32}" if stored == crc32 else None)

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
            return ObjectInfo(key, len(data), reply["ETag"].strip('"'),
                              checksum=server_checksum(reply["ResponseMetadata"]["HTTPHeaders"]))

        return self._call(self.url(key), action)

    def delete(self, key: str) -> None:
        self._call(self.url(key), lambda: self._client.delete_object(Bucket=self.bucket, Key=self._key(key)))


_CLIENT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
                     "AWS_CA_BUNDLE", "POGONA_S3_CONNECT_TIMEOUT", "POGONA_S3_READ_TIMEOUT", "POGONA_S3_ADDRESSING")


def _client_settings() -> tuple[str | None, ...]:
    return tuple(os.environ.get(name) for name in _CLIENT_VARIABLES)


@dataclass(frozen=True)
class _S3Connection:
    """The boto3 client for every call but downloads, and what the downloads' direct GETs need."""

    client: Any
    credentials: Any
    region: str
    endpoint: str
    virtual_host: bool
    pool: Any  # urllib3.PoolManager: keep-alive connections, no retries of its own (with_retries decides)

    def get(self, bucket: str, key: str, headers: dict[str, str]) -> Any:
        """GET an object outside botocore's request pipeline: one SigV4 signature and one request on a
        pooled keep-alive connection. This is a sync's hot path, where botocore's per-request layers
        (parameter validation, serialization, event hooks, response parsing) cost most of the client CPU.
        Returns the unread urllib3 response; an S3 error reply is raised as botocore's ClientError."""
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.exceptions import NoCredentialsError

        scheme, _, host = self.endpoint.partition("://")
        path = quote(key, safe="/~")
        url = f"{scheme}://{bucket}.{host}/{path}" if self.virtual_host else f"{self.endpoint}/{bucket}/{path}"
        if self.credentials is None:
            raise NoCredentialsError()
        request = AWSRequest("GET", url, headers=headers)
        S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
        response = self.pool.request("GET", url, headers=dict(request.headers.items()), preload_content=False,
                                     decode_content=False, redirect=False)
        if response.status >= 300:
            body = response.read()
            response.release_conn()
            raise _client_error(response.status, body, "GetObject")
        return response


def _client_error(status: int, body: bytes, operation: str) -> Exception:
    """botocore's ClientError for an S3 error reply, so retries and messages treat both paths alike."""
    from xml.etree import ElementTree

    from botocore.exceptions import ClientError

    code, message = str(status), ""
    with contextlib.suppress(ElementTree.ParseError):
        root = ElementTree.fromstring(body)
        code, message = root.findtext("Code") or code, root.findtext("Message") or ""
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)


@functools.lru_cache(maxsize=8)
def _shared_connection(*settings: str | None) -> _S3Connection:
    """One boto3 client and one connection pool (thread-safe, 64 connections) per distinct AWS environment."""
    import boto3
    import urllib3
    from botocore.config import Config
    from botocore.httpsession import get_cert_path

    env = dict(zip(_CLIENT_VARIABLES, settings))
    connect_timeout = float(env["POGONA_S3_CONNECT_TIMEOUT"] or 3)
    read_timeout = float(env["POGONA_S3_READ_TIMEOUT"] or 60)
    addressing = env["POGONA_S3_ADDRESSING"] or "path"
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1},
        response_checksum_validation="when_required",  # downloads verify content themselves (content_checks)
        max_pool_connections=64,
        s3={"addressing_style": addressing},
    )
    session = boto3.session.Session()
    client = session.client("s3", config=config,
                            endpoint_url=env["AWS_ENDPOINT_URL_S3"] or env["AWS_ENDPOINT_URL"] or None)
    pool = urllib3.PoolManager(maxsize=64, retries=False, timeout=urllib3.Timeout(connect_timeout, read_timeout),
                               ca_certs=env["AWS_CA_BUNDLE"] or get_cert_path(True))
    return _S3Connection(client, session.get_credentials(), client.meta.region_name,
                         client.meta.endpoint_url.rstrip("/"), addressing == "virtual", pool)


def explain_s3_error(exc: Exception, where: str) -> str:
    """Turn a boto exception into one line a person can act on."""
    from botocore.exceptions import (ClientError, ConnectionError as BotoConnectionError, NoCredentialsError,
                                     PartialCredentialsError)
    from urllib3.exceptions import ConnectTimeoutError

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return f"{where}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    if isinstance(exc, (BotoConnectionError, ConnectTimeoutError)):  # urllib3's covers refused and unresolved too
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
