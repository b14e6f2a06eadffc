import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from components.storage import (PreconditionFailed, S3Store, StorageError, file_matches, md5_etag, open_store)
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
    assert file_matches(source, info.size, info.etag)
    dest = tmp_path / "copy.pt"
    store.download("weights/big.pt", dest, info)
    assert dest.read_bytes() == source.read_bytes()


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


def test_unknown_scheme_is_refused():
    with pytest.raises(StorageError, match="gs://bucket"):
        open_store("gs://bucket/x")
