"""Background checkpoint uploads: one in flight, the newest waiting, superseded file by file, failures kept."""

import threading
from pathlib import Path

import pytest

from components.training.checkpoints import CheckpointUploadError, CheckpointUploads, trim_results
from components.storage import FolderStore, ObjectInfo, S3Store, open_store
from components.storage.retries import RetryPolicy


class GatedStore(FolderStore):
    """A folder store whose uploads wait for `gate`, recording each one's key and content in order."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.gate, self.started, self.uploaded = threading.Event(), threading.Event(), []

    def upload_file(self, src: Path, key: str) -> ObjectInfo:
        self.started.set()
        self.gate.wait(timeout=60)
        self.uploaded.append((key, src.read_text()))
        return super().upload_file(src, key)


def _checkpoint(folder: Path, epoch: int, *keys: str) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for key in keys:
        (folder / key).write_text(f"{key} of epoch {epoch}")
    return {key: folder / key for key in keys}


def test_a_waiting_checkpoint_is_superseded_file_by_file_and_the_newest_always_lands(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    store = GatedStore(tmp_path / "store")
    uploads = CheckpointUploads(store, tmp_path / "staging")
    work = tmp_path / "train"
    uploads.submit(_checkpoint(work, 1, "results.csv", "last.pt"))
    store.started.wait(timeout=60)  # epoch 1 is in flight; the next two wait, the later superseding the earlier
    uploads.submit(_checkpoint(work, 2, "best.pt", "results.csv", "last.pt"))
    uploads.submit(_checkpoint(work, 3, "results.csv", "last.pt"))  # files are copied: rewriting them is safe
    store.gate.set()
    uploads.wait()
    assert store.uploaded == [("results.csv", "results.csv of epoch 1"), ("last.pt", "last.pt of epoch 1"),
                              ("best.pt", "best.pt of epoch 2"), ("results.csv", "results.csv of epoch 3"),
                              ("last.pt", "last.pt of epoch 3")]
    assert (tmp_path / "store" / "last.pt").read_text() == "last.pt of epoch 3"
    assert any("superseded" in line and "last.pt" in line for line in caplog.messages)
    assert list((tmp_path / "staging").iterdir()) == []


def test_a_wait_with_a_timeout_gives_up_saying_what_is_not_stored_and_removes_the_staging(tmp_path: Path):
    store = GatedStore(tmp_path / "store")
    uploads = CheckpointUploads(store, tmp_path / "staging")
    uploads.submit(_checkpoint(tmp_path / "train", 1, "best.pt", "results.csv", "last.pt"))
    store.started.wait(timeout=60)  # best.pt is in flight and never finishes: the gate stays shut
    assert uploads.wait(timeout=0.1) is False
    assert uploads.unstored() == ["best.pt", "results.csv", "last.pt"]
    assert list((tmp_path / "staging").iterdir()) == []
    store.gate.set()


class BrokenStore(FolderStore):
    """A folder store whose every upload fails with `error`, counting the attempts."""

    def __init__(self, root: Path, error: Exception):
        super().__init__(root)
        self.error, self.attempts = error, 0

    def upload_file(self, src: Path, key: str) -> ObjectInfo:
        self.attempts += 1
        raise self.error


def test_a_transient_failure_is_retried_then_raised_by_the_next_checkpoint_and_the_last_wait(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    store = BrokenStore(tmp_path / "store", ConnectionResetError("Connection reset by peer"))
    uploads = CheckpointUploads(store, tmp_path / "staging", attempts=3, first_delay=0.01)
    uploads.submit(_checkpoint(tmp_path / "train", 1, "results.csv", "last.pt"))
    with pytest.raises(CheckpointUploadError, match=r"store/results\.csv failed after 3 attempts: Connection reset"):
        uploads.wait()
    with pytest.raises(CheckpointUploadError, match="results.csv"):
        uploads.submit(_checkpoint(tmp_path / "train", 2, "results.csv", "last.pt"))
    assert store.attempts == 3
    retries = [line.split("; ")[-1] for line in caplog.messages if "Connection reset" in line and "; attempt" in line]
    assert retries == ["attempt 2 of 3 in 0 s", "attempt 3 of 3 in 0 s"]
    assert sum("failed after 3 attempts" in line for line in caplog.messages) == 1, "reported when it happens"
    assert not (tmp_path / "store" / "last.pt").exists()  # never a last.pt without the results.csv before it


def test_a_permanent_failure_is_reported_after_one_attempt(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    store = BrokenStore(tmp_path / "store", PermissionError("Access Denied"))
    uploads = CheckpointUploads(store, tmp_path / "staging", first_delay=60)  # a retry would hang
    uploads.submit(_checkpoint(tmp_path / "train", 1, "results.csv", "last.pt"))
    with pytest.raises(CheckpointUploadError, match=r"store/results\.csv failed after 1 attempt \(not retried: "
                                                    r"the error is not transient\): Access Denied"):
        uploads.wait()
    assert store.attempts == 1 and not [line for line in caplog.messages if "attempt 2" in line]
    assert any("Access Denied" in line for line in caplog.messages), \
        "reported when it happens, not only at the next wait"


def test_s3_access_denied_is_asked_once_and_a_5xx_outage_outlasting_the_store_retries_still_lands(
        s3_bucket: str, s3_faults, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    store = S3Store(s3_bucket, retries=RetryPolicy(attempts=3, base_delay=0.01))
    denied = CheckpointUploads(store, tmp_path / "staging", first_delay=0.01)
    s3_faults.inject("403")
    denied.submit(_checkpoint(tmp_path / "train", 1, "last.pt"))
    with pytest.raises(CheckpointUploadError,
                       match=r"last\.pt failed after 1 attempt .*access denied \(AccessDenied\)"):
        denied.wait()
    assert s3_faults.requests == 1 and store.head("last.pt") is None
    outage = CheckpointUploads(store, tmp_path / "staging", first_delay=0.01)
    s3_faults.inject(*["503"] * store.retries.attempts)  # every try of the store's first upload_file
    outage.submit(_checkpoint(tmp_path / "train", 2, "last.pt"))
    outage.wait()
    assert store.get_bytes("last.pt") == b"last.pt of epoch 2" and not s3_faults.faults
    assert any("attempt 2 of 4" in line and "503" in line for line in caplog.messages)


def test_trim_results_keeps_the_rows_the_checkpoint_holds_byte_for_byte(tmp_path: Path):
    results = tmp_path / "results.csv"
    header, rows = "epoch,time,train/box_loss\n", [f"{epoch},{epoch * 1.5},0.{epoch}\n" for epoch in (1, 2, 3)]
    results.write_text(header + "".join(rows))
    trim_results(results, 3)
    assert results.read_text() == header + "".join(rows)
    trim_results(results, 2)  # results.csv of epoch 3 stored, its last.pt not
    assert results.read_text() == header + "".join(rows[:2])
    trim_results(tmp_path / "absent.csv", 1)  # a checkpoint without results.csv
