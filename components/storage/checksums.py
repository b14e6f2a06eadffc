"""What proves that a file holds an object's content: ETag math, S3 additional checksums, snapshot hashes.

A file is proven to hold an object's content by the snapshot's sha256, the object's S3
additional checksum, or an ETag that is an MD5, never by assuming that every ETag is one.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

from components.storage.objects import ObjectInfo

READ_CHUNK = 1024 * 1024
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
_MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-[0-9]+")


class Hasher(Protocol):
    """What a transfer feeds the bytes it moves to: a hashlib object, or `Crc`."""

    def update(self, data: bytes, /) -> None: ...


def file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from iter(lambda: handle.read(READ_CHUNK), b"")


def hashing(chunks: Iterable[bytes], hasher: Hasher) -> Iterator[bytes]:
    """Pass the chunks on, feeding each to `hasher` on the way."""
    for chunk in chunks:
        hasher.update(chunk)
        yield chunk


def _file_digest(path: Path, new_hasher: Callable[[], Any]) -> Any:
    hasher = new_hasher()
    for block in file_chunks(path):
        hasher.update(block)
    return hasher


def md5_etag(path: Path, part_size: int | None = None) -> str:
    """The S3-style ETag of a local file: plain MD5, or MD5-of-part-MD5s with '-N' for multipart."""
    if part_size is None:
        return _file_digest(path, hashlib.md5).hexdigest()
    part_digests = []
    with open(path, "rb") as handle:
        for part in iter(lambda: handle.read(part_size), b""):
            part_digests.append(hashlib.md5(part).digest())
    return multipart_etag(part_digests)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's content: what a snapshot records and later checks copies against."""
    return _file_digest(path, hashlib.sha256).hexdigest()


def multipart_etag(part_digests: list[bytes]) -> str:
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
        return base64_text(_file_digest(path, _CHECKSUM_HASHERS[algorithm]).digest()) == value
    etag = expected.etag.strip('"')
    if _MD5_HEX.fullmatch(etag):
        return md5_etag(path) == etag
    if _MULTIPART_ETAG.fullmatch(etag):
        parts = int(etag.rsplit("-", 1)[1])
        return any(md5_etag(path, part) == etag for part in _part_size_candidates(expected.size, parts))
    return False


class Crc:
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
    hashers: dict[str, Callable[[], Any]] = {"crc32": lambda: Crc(zlib.crc32, 4), "sha256": hashlib.sha256,
                                             "sha1": hashlib.sha1}
    try:
        from awscrt import checksums
    except ImportError:
        return hashers
    hashers["crc32c"] = lambda: Crc(checksums.crc32c, 4)
    hashers["crc64nvme"] = lambda: Crc(checksums.crc64nvme, 8)
    return hashers


_CHECKSUM_HASHERS = _checksum_hashers()


@dataclass(frozen=True)
class ContentCheck:
    """One value the bytes of a download must hash to, and where that value came from."""

    name: str
    expected: bytes
    new_hasher: Callable[[], Any]
    render: Callable[[bytes], str]


def base64_text(digest: bytes) -> str:
    """A digest as S3 writes checksums: base64 text."""
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
                                   _CHECKSUM_HASHERS[algorithm], base64_text))
    if sha256:
        checks.append(ContentCheck("snapshot sha256", bytes.fromhex(sha256), hashlib.sha256, bytes.hex))
    elif _etag_is_md5(etag, headers):
        checks.append(ContentCheck("MD5 ETag", bytes.fromhex(etag.strip('"')), hashlib.md5, bytes.hex))
    return checks


