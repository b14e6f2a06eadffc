import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from components.storage import ObjectInfo, S3Store, StorageError, file_matches, md5_etag, open_store
from components.storage.checksums import content_checks, server_checksum


def test_an_sse_kms_bucket_is_verified_by_its_checksums_not_its_etags(s3_bucket: str, s3_faults, tmp_path: Path):
    s3_faults.encrypted = True  # every ETag is now opaque, as with SSE-KMS
    mib = 1024 * 1024
    store = S3Store(s3_bucket, multipart_threshold=5 * mib, multipart_chunk=5 * mib)
    small, large = tmp_path / "small.bin", tmp_path / "large.pt"
    small.write_bytes(os.urandom(30_000))
    large.write_bytes(os.urandom(11 * mib))
    for source in (small, large):  # neither upload "fails" after it succeeded
        info = store.upload_file(source, f"data/{source.name}")
        stored = store.head(f"data/{source.name}")  # what the server reports, not what the client computed
        assert info.checksum == stored.checksum and stored.checksum.startswith("crc32:")
        assert stored.etag != md5_etag(source) and not file_matches(source, replace(stored, checksum=None))
        assert file_matches(source, stored), "the object's CRC32 proves what its ETag cannot"
        dest = tmp_path / "copy" / source.name
        assert store.download(f"data/{source.name}", dest, store.head(f"data/{source.name}")) == info.size
        assert dest.read_bytes() == source.read_bytes()

    snapshot = store.head("data/small.bin")
    s3_faults.inject("corrupt")  # one byte flipped on the way
    with pytest.raises(StorageError, match=r"data/small\.bin: downloaded content does not match its CRC32 checksum"):
        store.download("data/small.bin", tmp_path / "tampered.bin", snapshot)
    assert not (tmp_path / "tampered.bin").exists()


def test_without_server_checksums_the_snapshot_sha256_catches_a_tampered_copy(s3_bucket: str, s3_faults,
                                                                              tmp_path: Path):
    import boto3
    from botocore.config import Config

    content = os.urandom(20_000)  # uploaded by a client that adds no checksum, to an SSE-KMS bucket
    boto3.session.Session().client("s3", config=Config(request_checksum_calculation="when_required")).put_object(
        Bucket=s3_bucket.removeprefix("s3://"), Key="old.jpg", Body=content)
    s3_faults.encrypted = True
    store = open_store(s3_bucket)
    listed = store.head("old.jpg")
    snapshot = ObjectInfo(listed.key, listed.size, listed.etag, hashlib.sha256(content).hexdigest())
    s3_faults.inject("corrupt")
    with pytest.raises(StorageError, match=r"old\.jpg: downloaded content does not match its snapshot sha256"):
        store.download("old.jpg", tmp_path / "old.jpg", snapshot)
    assert store.download("old.jpg", tmp_path / "old.jpg", snapshot) == len(content)
    assert file_matches(tmp_path / "old.jpg", snapshot)


@pytest.mark.parametrize("algorithm", ["CRC64NVME", "CRC32C"])
def test_objects_with_crt_checksums_are_verified_by_them(algorithm: str, s3_bucket: str, s3_faults, tmp_path: Path):
    """CRC64NVME (what S3 gives objects uploaded without a checksum) and CRC32C need the AWS CRT: it is a dependency."""
    import boto3

    content = os.urandom(20_000)
    boto3.session.Session().client("s3").put_object(Bucket=s3_bucket.removeprefix("s3://"), Key="crt.bin", Body=content,
                                  ChecksumAlgorithm=algorithm)
    s3_faults.encrypted = True  # the ETag proves nothing: only the CRC can
    store = open_store(s3_bucket)
    info = store.head("crt.bin")
    assert info.checksum and info.checksum.startswith(f"{algorithm.lower()}:"), info
    assert store.download("crt.bin", tmp_path / "crt.bin", info) == len(content)
    assert file_matches(tmp_path / "crt.bin", info)
    s3_faults.inject("corrupt")
    with pytest.raises(StorageError, match=rf"crt\.bin: downloaded content does not match its {algorithm} checksum"):
        store.download("crt.bin", tmp_path / "tampered.bin", info)


def test_without_checksums_or_sha256_the_md5_etag_catches_a_same_size_tampered_copy(s3_bucket: str, s3_faults,
                                                                                      tmp_path: Path):
    import boto3
    from botocore.config import Config

    content = os.urandom(20_000)  # uploaded by a client that adds no checksum, to a plain bucket
    boto3.session.Session().client("s3", config=Config(request_checksum_calculation="when_required")).put_object(
        Bucket=s3_bucket.removeprefix("s3://"), Key="plain.jpg", Body=content)
    store = open_store(s3_bucket)
    listed = store.head("plain.jpg")
    assert listed.checksum is None and listed.sha256 is None and listed.etag == hashlib.md5(content).hexdigest()
    s3_faults.inject("corrupt")  # one byte flipped: the size is right, only the MD5 can tell
    with pytest.raises(StorageError, match=r"plain\.jpg: downloaded content does not match its MD5 ETag"):
        store.download("plain.jpg", tmp_path / "plain.jpg", listed)
    assert not (tmp_path / "plain.jpg").exists()
    assert store.download("plain.jpg", tmp_path / "plain.jpg", listed) == len(content)


def test_an_sse_c_object_is_never_checked_against_its_etag_as_an_md5():
    md5 = hashlib.md5(b"content").hexdigest()
    assert [check.name for check in content_checks(f'"{md5}"', {}, None)] == ["MD5 ETag"]
    sse_c = {"x-amz-server-side-encryption-customer-algorithm": "AES256"}
    assert content_checks(f'"{md5}"', sse_c, None) == []
    assert content_checks(md5, {"x-amz-server-side-encryption": "aws:kms"}, None) == []


def test_a_local_file_is_proved_by_a_quoted_md5_or_a_multipart_etag_of_a_usual_part_size(tmp_path: Path):
    """What a resync keeps without a sha256 or server checksum: the ETag S3 gave (quoted as in its replies)."""
    path = tmp_path / "weights.pt"
    path.write_bytes(os.urandom(11 * 1024 * 1024))
    size = path.stat().st_size
    assert file_matches(path, ObjectInfo("w.pt", size, f'"{md5_etag(path)}"'))
    multipart = md5_etag(path, 8 * 1024 * 1024)  # the part size of boto3's and the AWS CLI's defaults
    assert multipart.endswith("-2") and file_matches(path, ObjectInfo("w.pt", size, multipart))
    assert not file_matches(path, ObjectInfo("w.pt", size, multipart.replace("-2", "-3")))
    assert not file_matches(path, ObjectInfo("w.pt", size, "kms-0f3a"))  # an ETag that proves nothing


def test_a_checksum_of_the_parts_is_never_taken_for_the_checksum_of_the_object():
    """A multipart object's COMPOSITE checksum is a checksum of its parts' checksums: checked against the downloaded
    bytes it would refuse every such download. Servers mark it by its "-<parts>" suffix, newer ones also by
    x-amz-checksum-type; either mark alone leaves the object to its other checks."""
    crc = "4waSgw=="
    assert server_checksum({"x-amz-checksum-crc32": crc}) == f"crc32:{crc}"
    assert server_checksum({"x-amz-checksum-type": "FULL_OBJECT", "x-amz-checksum-crc32": crc}) == f"crc32:{crc}"
    assert server_checksum({"x-amz-checksum-type": "COMPOSITE", "x-amz-checksum-crc32": crc}) is None
    assert server_checksum({"x-amz-checksum-crc32": f"{crc}-3"}) is None
    assert content_checks("kms-0f3a", {"x-amz-checksum-type": "COMPOSITE", "x-amz-checksum-crc32": crc}, None) == []
