import logging
import random
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from components.storage import StorageError, fetch_objects, open_store
from components.storage.retries import RetriesExhausted, RetryPolicy, Throttle, with_retries


def _s3_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "from the test"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


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
def test_each_retry_is_logged_as_a_warning_naming_the_request_error_and_attempt(
        s3_bucket: str, s3_faults, caplog: pytest.LogCaptureFixture):
    store = open_store(s3_bucket)
    s3_faults.inject("503", "drop")
    with caplog.at_level(logging.WARNING, logger="pogona"):
        store.put_bytes("data/blob.bin", b"payload")
    retries = [record for record in caplog.records if record.name == "pogona"]
    assert [record.levelno for record in retries] == [logging.WARNING, logging.WARNING]
    first, second = (record.getMessage() for record in retries)
    assert first.startswith(f"retrying PUT {s3_bucket}/data/blob.bin after ClientError") and "SlowDown" in first
    assert first.endswith("(attempt 2 of 10)") and second.endswith("(attempt 3 of 10)")
    assert store.get_bytes("data/blob.bin") == b"payload"

    caplog.clear()
    s3_faults.inject("403")  # not transient: fails at once, no retry to log
    with caplog.at_level(logging.WARNING, logger="pogona"), pytest.raises(StorageError, match="access denied"):
        store.get_bytes("data/blob.bin")
    assert not [record for record in caplog.records if record.name == "pogona"]




def test_backoff_is_full_jitter_with_a_long_cap():
    random.seed(7)
    policy = RetryPolicy(base_delay=0.1, max_delay=20.0)
    for attempt in (1, 4, 8):
        bound = 0.1 * 2 ** (attempt - 1)
        delays = [policy.delay(attempt) for _ in range(400)]
        assert all(0 <= delay <= bound for delay in delays)
        assert min(delays) < bound / 10 and max(delays) > bound * 0.9  # anywhere from zero to the bound
    assert max(policy.delay(30) for _ in range(400)) <= 20.0
    assert RetryPolicy().attempts >= 8 and RetryPolicy().max_delay >= 20.0


def test_throttling_lowers_the_requests_in_flight_and_successes_raise_them_again():
    throttle = Throttle(ceiling=16, floor=2, cut_interval=0.0)
    for _ in range(20):
        with pytest.raises(ClientError), throttle.slot():
            raise _s3_error(503, "SlowDown")
    assert throttle.limit == throttle.lowest == 2  # cut on each throttled reply, never below the floor
    with pytest.raises(ClientError), throttle.slot():
        raise _s3_error(500, "InternalError")  # a failure, not a throttle: no cut
    assert throttle.limit == 2
    for _ in range(200):
        with throttle.slot():
            pass
    assert throttle.limit == 16 and throttle.lowest == 2  # recovered, up to the ceiling


def test_one_overload_cuts_the_limit_once_per_interval():
    throttle = Throttle(ceiling=16, floor=2, cut_interval=3600.0)
    for _ in range(5):
        with pytest.raises(ClientError), throttle.slot():
            raise _s3_error(429, "TooManyRequestsException")
    assert throttle.limit == 11


def test_the_final_error_says_how_many_attempts_were_made(caplog: pytest.LogCaptureFixture):
    calls = []

    def throttled() -> None:
        calls.append(1)
        raise _s3_error(503, "SlowDown")

    throttle = Throttle(ceiling=8, cut_interval=0.0)
    with caplog.at_level(logging.WARNING, logger="pogona"), pytest.raises(RetriesExhausted) as error:
        with_retries(throttled, "GET s3://b/k", RetryPolicy(attempts=6, base_delay=0.0), throttle)
    assert len(calls) == 6 and error.value.attempts == 6
    assert str(error.value).startswith("GET s3://b/k failed after 6 attempts: ClientError")
    assert len([r for r in caplog.records if r.name == "pogona"]) == 5 and throttle.limit < 8

    def refused() -> None:
        calls.append(1)
        raise _s3_error(403, "AccessDenied")

    calls.clear()
    with pytest.raises(ClientError):
        with_retries(refused, "GET s3://b/k", RetryPolicy(attempts=6, base_delay=0.0))
    assert len(calls) == 1  # not transient: no second try


@pytest.mark.slow
def test_a_sync_through_a_throttling_flaky_server_completes_byte_identical(s3_bucket: str, s3_faults,
                                                                           tmp_path: Path):
    store = open_store(s3_bucket)
    payloads = {f"images/train/img_{i:04d}.jpg": random.Random(i).randbytes(2000 + i) for i in range(300)}
    objects = [store.put_bytes(key, data) for key, data in payloads.items()]
    s3_faults.at_random("503", 0.2)  # S3 throttling a hot prefix
    s3_faults.at_random("truncate", 0.05, "GET")  # bodies reset half-way
    counts = fetch_objects(store, objects, tmp_path / "copy", workers=16, progress=False)
    assert counts.downloaded == len(payloads)
    assert all((tmp_path / "copy" / key).read_bytes() == data for key, data in payloads.items())
    assert s3_faults.injected["503"] > 30 and s3_faults.injected["truncate"] > 5
    assert not list((tmp_path / "copy").rglob("*.part"))
