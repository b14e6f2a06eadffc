import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from components.storage import S3Store, StorageError, file_matches, open_store
from components.storage.retries import RetryPolicy
from pipelines.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("bucket", ["s3_bucket", "radosgw_bucket"])  # moto, and Ceph's radosgw
def test_listing_pages_past_a_thousand_objects(bucket: str, request: pytest.FixtureRequest):
    store = open_store(request.getfixturevalue(bucket))
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
def test_persistent_failure_ends_as_one_line_naming_the_object_and_the_attempts(s3_bucket: str, s3_faults):
    s3_faults.inject(*["503"] * 4)
    store = S3Store(s3_bucket, retries=RetryPolicy(attempts=4, base_delay=0.01))
    with pytest.raises(StorageError, match=r"s3://.*/obj\.bin \(PUT failed after 4 attempts\): "
                                           "S3 answered 503 SlowDown") as error:
        store.put_bytes("obj.bin", b"x")
    assert "\n" not in str(error.value) and not s3_faults.faults


@pytest.mark.slow
def test_a_stalled_download_is_given_up_after_the_read_timeout_not_the_connect_timeout(
        s3_bucket: str, s3_faults, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    info = open_store(s3_bucket).put_bytes("data/blob.bin", bytes(range(256)) * 40)
    monkeypatch.setenv("POGONA_S3_CONNECT_TIMEOUT", "30")
    monkeypatch.setenv("POGONA_S3_READ_TIMEOUT", "1")
    s3_faults.inject_on("GET", "data/blob.bin", "hold")  # half the body, then nothing until released
    try:
        with caplog.at_level(logging.WARNING, logger="pogona"):
            started = time.monotonic()
            open_store(s3_bucket).download("data/blob.bin", tmp_path / "blob.bin", info)
            seconds = time.monotonic() - started
    finally:
        s3_faults.release()
    retries = [record.getMessage() for record in caplog.records if record.name == "pogona"]
    assert len(retries) == 1 and "ReadTimeoutError" in retries[0], retries
    assert seconds < 20, "the stalled body waited out the connect timeout"  # 1 s read timeout, then one retry


def _timed_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, float]:
    started = time.monotonic()
    code = main(argv)
    return code, capsys.readouterr().err.strip(), time.monotonic() - started


def test_missing_bucket_is_one_clear_line(s3_env: str, capsys: pytest.CaptureFixture):
    code, err, seconds = _timed_cli(["dataset", "validate", "--source", "s3://no-such-bucket/data"], capsys)
    assert code == 2 and seconds < 5
    assert err.count("\n") == 0 and "no-such-bucket" in err and "bucket does not exist" in err


@pytest.mark.slow
def test_unreachable_endpoint_is_retried_then_one_clear_line(s3_env: str, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    code, err, seconds = _timed_cli(["dataset", "validate", "--source", "s3://bucket/data"], capsys)
    assert code == 2 and seconds < 8
    *retries, error = err.splitlines()
    assert "cannot reach the S3 endpoint http://127.0.0.1:9" in error and "Traceback" not in err
    assert [line.split("(attempt ")[-1] for line in retries] == [f"{n} of 5)" for n in range(2, 6)]
    assert all(line.startswith("pogona: retrying LIST s3://bucket/data/") for line in retries)


def test_wrong_credentials_are_one_clear_line(s3_env: str, s3_server_with_auth: str,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server_with_auth)
    code, err, seconds = _timed_cli(["dataset", "validate", "--source", "s3://bucket/data"], capsys)
    assert code == 2 and seconds < 5
    assert err.count("\n") == 0 and "access denied" in err and "AWS_ACCESS_KEY_ID" in err


def test_a_json_document_that_may_be_missing_is_read_in_one_request(s3_bucket: str, s3_faults):
    store = open_store(s3_bucket)
    before = s3_faults.requests
    assert store.get_json("models/m/production.json", missing_ok=True) is None
    store.put_json("models/m/production.json", {"run_id": "r1"})
    assert store.get_json("models/m/production.json", missing_ok=True) == {"run_id": "r1"}
    assert s3_faults.requests - before == 3  # GET, PUT, GET: no HEAD before either read


def test_a_multipart_upload_that_does_not_arrive_whole_fails_naming_the_file(s3_bucket: str, s3_faults,
                                                                             tmp_path: Path):
    mib = 1024 * 1024
    store = S3Store(s3_bucket, multipart_threshold=5 * mib, multipart_chunk=5 * mib)
    source = tmp_path / "weights.pt"
    source.write_bytes(os.urandom(11 * mib))
    s3_faults.inject_on("POST", "uploadId=", "drop-last-part")
    with pytest.raises(StorageError, match=rf"upload of {source} to {s3_bucket}/weights/big\.pt did not arrive whole"):
        store.upload_file(source, "weights/big.pt")
