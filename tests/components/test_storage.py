import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from components.storage import (ObjectInfo, PreconditionFailed, S3Store, StorageError, file_matches, md5_etag,
                                open_store, write_atomic)
from pipelines.cli import main


@pytest.fixture(params=["folder", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "folder":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/some/prefix"


def test_round_trip_on_both_backends(store_uri: str, tmp_path: Path):
    store = open_store(store_uri)
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 5000)
    info = store.upload_file(source, "a/b/file.bin")
    store.put_json("a/meta.json", {"x": 1})

    assert {o.key for o in store.list()} == {"a/b/file.bin", "a/meta.json"}
    assert [o.key for o in store.list("a/b/")] == ["a/b/file.bin"]
    assert info.size == 5000 and info.etag == md5_etag(source)
    assert store.head("a/b/file.bin") == info and store.head("missing") is None
    assert store.get_json("a/meta.json") == {"x": 1}
    dest = tmp_path / "out" / "file.bin"
    assert store.download("a/b/file.bin", dest, info) == 5000 and dest.read_bytes() == source.read_bytes()
    store.delete("a/meta.json")
    assert not store.exists("a/meta.json")


def test_conditional_writes_guard_a_pointer(store_uri: str):
    store = open_store(store_uri)
    first = store.put_json("pointer.json", {"run": 1}, if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_json("pointer.json", {"run": 2}, if_none_match=True)
    store.put_json("pointer.json", {"run": 2}, if_match=first.etag)
    with pytest.raises(PreconditionFailed):
        store.put_json("pointer.json", {"run": 3}, if_match=first.etag)
    assert store.get_json("pointer.json") == {"run": 2}


def test_download_refuses_an_object_that_changed_since_the_snapshot(store_uri: str, tmp_path: Path):
    store = open_store(store_uri)
    old = store.put_bytes("x.txt", b"old")
    store.put_bytes("x.txt", b"new content")
    with pytest.raises(StorageError, match="x.txt.*changed since the snapshot"):
        store.download("x.txt", tmp_path / "x.txt", old)
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.slow
def test_listing_pages_past_a_thousand_objects(s3_bucket: str):
    store = open_store(s3_bucket)
    keys = [f"many/{i:05d}.txt" for i in range(1050)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: store.put_bytes(key, b"."), keys))
    assert [o.key for o in store.list("many/")] == keys


def test_large_files_go_up_in_verified_parts(s3_bucket: str, tmp_path: Path):
    mib = 1024 * 1024
    store = S3Store(s3_bucket, multipart_threshold=5 * mib, multipart_chunk=5 * mib)
    source = tmp_path / "weights.pt"
    source.write_bytes(bytes(range(256)) * (12 * mib // 256 + 7))
    info = store.upload_file(source, "weights/big.pt")
    assert info.etag.endswith("-3") and store.head("weights/big.pt") == info
    assert file_matches(source, info)
    dest = tmp_path / "copy.pt"
    store.download("weights/big.pt", dest, info)
    assert dest.read_bytes() == source.read_bytes()


@pytest.mark.slow
def test_transient_failures_are_retried(s3_bucket: str, s3_faults, tmp_path: Path):
    store = open_store(s3_bucket)
    payload = bytes(range(256)) * 400
    s3_faults.inject("503", "drop", "500")
    info = store.put_bytes("data/blob.bin", payload)
    s3_faults.inject("truncate", "drop", "503")
    dest = tmp_path / "blob.bin"
    assert store.download("data/blob.bin", dest, info) == len(payload)
    assert dest.read_bytes() == payload
    s3_faults.inject("503", "500")
    assert [o.key for o in store.list()] == ["data/blob.bin"]
    assert not s3_faults.faults
    assert s3_faults.requests == 3 + 1 + 3 + 1 + 2 + 1


@pytest.mark.slow
def test_persistent_failure_ends_as_one_line_naming_the_object(s3_bucket: str, s3_faults, tmp_path: Path):
    s3_faults.inject(*["503"] * 5)
    with pytest.raises(StorageError, match=r"s3://.*/obj\.bin: S3 answered 503 SlowDown") as error:
        open_store(s3_bucket).put_bytes("obj.bin", b"x")
    assert "\n" not in str(error.value)


def _timed_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, float]:
    started = time.monotonic()
    code = main(argv)
    return code, capsys.readouterr().err.strip(), time.monotonic() - started


def test_missing_bucket_is_one_clear_line(s3_env: str, capsys: pytest.CaptureFixture):
    code, err, seconds = _timed_cli(["dataset", "validate", "--source", "s3://no-such-bucket/data"], capsys)
    assert code == 2 and seconds < 5
    assert err.count("\n") == 0 and "no-such-bucket" in err and "bucket does not exist" in err


@pytest.mark.slow
def test_unreachable_endpoint_is_one_clear_line(s3_env: str, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    code, err, seconds = _timed_cli(["dataset", "validate", "--source", "s3://bucket/data"], capsys)
    assert code == 2 and seconds < 8
    assert err.count("\n") == 0 and "cannot reach the S3 endpoint http://127.0.0.1:9" in err


def test_wrong_credentials_are_one_clear_line(s3_env: str, s3_server_with_auth: str,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server_with_auth)
    code, err, seconds = _timed_cli(["dataset", "validate", "--source", "s3://bucket/data"], capsys)
    assert code == 2 and seconds < 5
    assert err.count("\n") == 0 and "access denied" in err and "AWS_ACCESS_KEY_ID" in err


def test_folder_store_refuses_keys_outside_its_root(tmp_path: Path):
    store = open_store(f"file://{tmp_path}/root")
    with pytest.raises(StorageError, match=r"\.\./escape"):
        store.put_bytes("../escape.txt", b"x")
    assert not (tmp_path / "escape.txt").exists()


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
    boto3.client("s3", config=Config(request_checksum_calculation="when_required")).put_object(
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


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_written_atomically_get_the_mode_the_umask_gives(umask: int, s3_bucket: str, tmp_path: Path):
    previous = os.umask(umask)
    try:
        store = open_store(tmp_path / "store")
        store.put_bytes("models/m/production.json", b"{}")
        (tmp_path / "best.pt").write_bytes(b"weights")
        store.upload_file(tmp_path / "best.pt", "runs/r/best.pt")
        write_atomic(tmp_path / "local" / "report.md", b"# report")
        open_store(s3_bucket).put_bytes("x.jpg", b"jpg")
        open_store(s3_bucket).download("x.jpg", tmp_path / "synced" / "x.jpg")
    finally:
        os.umask(previous)
    for path in (tmp_path / "store/models/m/production.json", tmp_path / "store/runs/r/best.pt",
                 tmp_path / "local/report.md", tmp_path / "synced/x.jpg"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_a_folder_store_of_symlinks_reads_through_them_but_keys_never_climb_out(tmp_path: Path):
    cache = tmp_path / "repo" / ".dvc" / "cache"  # DVC and git-annex keep content outside the data folder
    cache.mkdir(parents=True)
    (cache / "ab12").write_bytes(b"image bytes")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    root = tmp_path / "repo" / "data"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").symlink_to(Path("../../.dvc/cache/ab12"))
    store = open_store(root)
    assert [(o.key, o.size) for o in store.list()] == [("images/a.jpg", 11)]
    assert store.get_bytes("images/a.jpg") == b"image bytes"
    assert store.download("images/a.jpg", tmp_path / "copy.jpg", store.head("images/a.jpg")) == 11
    for key in ("../secret.txt", "images/../../secret.txt", "../../secret.txt"):
        with pytest.raises(StorageError, match="points outside the store"):
            store.get_bytes(key)


def test_unknown_scheme_is_refused():
    with pytest.raises(StorageError, match="gs://bucket"):
        open_store("gs://bucket/x")


@pytest.mark.parametrize("algorithm", ["CRC64NVME", "CRC32C"])
def test_objects_with_crt_checksums_are_verified_by_them(algorithm: str, s3_bucket: str, s3_faults, tmp_path: Path):
    """CRC64NVME (what S3 gives objects uploaded without a checksum) and CRC32C need the AWS CRT: it is a dependency."""
    import boto3

    content = os.urandom(20_000)
    boto3.client("s3").put_object(Bucket=s3_bucket.removeprefix("s3://"), Key="crt.bin", Body=content,
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
