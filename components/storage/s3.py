"""The S3 backend: boto3 for every call but downloads, which take a direct signed GET (the hot path),
and one line a person can act on for every failure."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar
from urllib.parse import quote, urlparse

from components.storage.atomic import write_verified
from components.storage.checksums import READ_CHUNK, Crc, Hasher, base64_text, content_checks, multipart_etag, server_checksum
from components.storage.interface import NoSuchObject, ObjectStore, PreconditionFailed
from components.storage.objects import ObjectInfo, StorageError
from components.storage.retries import RetriesExhausted, RetryPolicy, Throttle, with_retries

MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 16 * 1024 * 1024
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_T = TypeVar("_T")


class S3Store(ObjectStore):
    """`s3://bucket/prefix` through boto3; endpoint, keys and region from the standard AWS variables."""

    def __init__(self, uri: str, *, retries: RetryPolicy = RetryPolicy(),
                 multipart_threshold: int = MULTIPART_THRESHOLD, multipart_chunk: int = MULTIPART_CHUNK):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StorageError(f"{uri!r} has no bucket name (expected s3://bucket/prefix)")
        self.uri = uri.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.retries = retries
        self.multipart_threshold = multipart_threshold
        self.multipart_chunk = multipart_chunk
        self._connection = _shared_connection(*_client_settings())
        self._client = self._connection.client
        self.throttle = self._connection.throttle  # shared by every store of this endpoint

    def _key(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1:] if self.prefix else full_key

    def _call(self, operation: str, where: str, action: Callable[[], _T]) -> _T:
        """Run one request with retries (each logged as `operation` on `where`), within the endpoint's
        throttle; a failure ends as one line, which says how often a transient one was tried."""
        try:
            return with_retries(action, f"{operation} {where}", self.retries, self.throttle)
        except StorageError:
            raise
        except RetriesExhausted as exc:  # the cause stays the server's error: callers judge it (checkpoints)
            raise StorageError(explain_s3_error(exc.error, f"{where} ({operation} failed after {exc.attempts} "
                                                           "attempts)")) from exc.error
        except Exception as exc:  # boto raises a zoo; the user gets one line naming the object
            raise StorageError(explain_s3_error(exc, where)) from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        request: dict[str, Any] = {"Bucket": self.bucket,
                                   "Prefix": self._key(prefix)}
        while True:
            page = self._call("LIST", self.url(prefix), functools.partial(self._client.list_objects_v2, **request))
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
                if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                    return None
                raise
            return ObjectInfo(key, reply["ContentLength"], reply["ETag"].strip('"'),
                              checksum=server_checksum(reply["ResponseMetadata"]["HTTPHeaders"]))

        return self._call("HEAD", self.url(key), action)

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
                return write_verified(dest, response.stream(READ_CHUNK, decode_content=False), where, length,
                                      checks)
            except BaseException:
                response.close()  # the connection may hold unread bytes: never hand it to the next request
                raise
            finally:
                response.release_conn()

        return self._call("GET", where, action)

    def upload_file(self, src: Path, key: str, digests: Sequence[Hasher] = ()) -> ObjectInfo:
        """Upload one file: a single PUT below the multipart threshold, else parts with their own retries."""
        size = src.stat().st_size
        if size < self.multipart_threshold:
            data = src.read_bytes()
            for digest in digests:
                digest.update(data)
            return self.put_bytes(key, data)
        return self._upload_multipart(src, key, size, digests)

    def _upload_multipart(self, src: Path, key: str, size: int, digests: Sequence[Hasher]) -> ObjectInfo:
        """Parts with their own retries, each checked by the server against its CRC32, and the whole
        object against a full-object CRC32 (or, from a server without checksums, the MD5-of-MD5s ETag)."""
        where, target = self.url(key), {"Bucket": self.bucket, "Key": self._key(key)}
        upload_id = self._call("CreateMultipartUpload", where, lambda: self._client.create_multipart_upload(
            **target, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")["UploadId"])
        try:
            parts, part_digests, whole = [], [], Crc(zlib.crc32, 4)
            with open(src, "rb") as handle:
                for number, chunk in enumerate(iter(lambda: handle.read(self.multipart_chunk), b""), start=1):
                    reply = self._call("UploadPart", f"{where} (part {number})", functools.partial(
                        self._client.upload_part, **target, UploadId=upload_id, PartNumber=number, Body=chunk,
                        ChecksumAlgorithm="CRC32"))
                    parts.append({"PartNumber": number, "ETag": reply["ETag"],
                                  **({"ChecksumCRC32": reply["ChecksumCRC32"]} if "ChecksumCRC32" in reply else {})})
                    part_digests.append(hashlib.md5(chunk).digest())
                    for digest in (whole, *digests):
                        digest.update(chunk)
            crc32 = base64_text(whole.digest())
            reply = self._call("CompleteMultipartUpload", where, lambda: self._client.complete_multipart_upload(
                **target, UploadId=upload_id, MultipartUpload={"Parts": parts}, ChecksumCRC32=crc32,
                ChecksumType="FULL_OBJECT"))
        except BaseException:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(**target, UploadId=upload_id)
            raise
        etag, encrypted = reply["ETag"].strip('"'), "ServerSideEncryption" in reply or "SSECustomerAlgorithm" in reply
        stored = reply.get("ChecksumCRC32")
        # Some servers keep the full-object CRC32 without echoing it in the completion, and radosgw 16.2
        # completes with an empty ETag: the object's HEAD holds both.
        if stored is None or not etag:
            held = self.head(key) or ObjectInfo(key, 0, "")
            etag, checksum = etag or held.etag, held.checksum or ""
            if stored is None:
                stored = checksum.removeprefix("crc32:") if checksum.startswith("crc32:") else None
        arrived = stored == crc32 if stored is not None else encrypted or etag == multipart_etag(part_digests)
        if not arrived:
            raise StorageError(f"upload of {src} to {where} did not arrive whole (CRC32 or ETag differs)")
        # the checksum only where the server holds it, so callers never take the client's own sum for proof
        return ObjectInfo(key, size, etag, checksum=f"crc32:{crc32}" if stored == crc32 else None)

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        def action() -> bytes:
            try:
                return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                    raise NoSuchObject(f"{self.url(key)}: no such object") from exc
                raise

        return self._call("GET", self.url(key), action)

    def put_bytes(self, key: str, data: bytes, *, if_match: str | None = None,
                  if_none_match: bool = False) -> ObjectInfo:
        from botocore.exceptions import ClientError

        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if if_match is not None:
            # the bare ETag: radosgw 16.2 compares If-Match on a PUT byte for byte with its stored, unquoted
            # ETag (a quoted one never matches), while AWS S3 and MinIO ignore the quotes either way
            request["IfMatch"] = if_match.strip('"')
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

        return self._call("PUT", self.url(key), action)

    def delete(self, key: str) -> None:
        self._call("DELETE", self.url(key), lambda: self._client.delete_object(Bucket=self.bucket, Key=self._key(key)))


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
    throttle: Throttle  # every request to this endpoint, from every store and thread, backs off together

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
    """One boto3 client, one connection pool (thread-safe, 64 connections) and one throttle per distinct AWS
    environment."""
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
    # by keyword: Timeout's first positional parameter is `total`, which would cap every read at the connect timeout
    timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
    pool = urllib3.PoolManager(maxsize=64, retries=False, timeout=timeout,
                               ca_certs=env["AWS_CA_BUNDLE"] or get_cert_path(True))
    return _S3Connection(client, session.get_credentials(), client.meta.region_name,
                         client.meta.endpoint_url.rstrip("/"), addressing == "virtual", pool, Throttle(ceiling=64))


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
