"""Background checkpoint uploads: one in flight, the newest waiting, superseded file by file, failures kept."""

import threading
from pathlib import Path

import pytest

from components.checkpoints import CheckpointUploadError, CheckpointUploads
from components.storage import FolderStore, ObjectInfo


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


def test_a_waiting_checkpoint_is_superseded_file_by_file_and_the_newest_always_lands(tmp_path: Path):
    store, lines = GatedStore(tmp_path / "store"), []
    uploads = CheckpointUploads(store, tmp_path / "staging", lines.append)
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
    assert any("superseded" in line and "last.pt" in line for line in lines)
    assert list((tmp_path / "staging").iterdir()) == []


def test_a_failure_is_raised_by_the_next_checkpoint_and_the_last_wait(tmp_path: Path):
    class BrokenStore(FolderStore):
        def upload_file(self, src: Path, key: str) -> ObjectInfo:
            raise PermissionError("Access Denied")

    lines: list[str] = []
    uploads = CheckpointUploads(BrokenStore(tmp_path / "store"), tmp_path / "staging", lines.append,
                                attempts=2, first_delay=0.01)
    uploads.submit(_checkpoint(tmp_path / "train", 1, "results.csv", "last.pt"))
    with pytest.raises(CheckpointUploadError, match=r"store/results\.csv failed after 2 attempts: Access Denied"):
        uploads.wait()
    with pytest.raises(CheckpointUploadError, match="results.csv"):
        uploads.submit(_checkpoint(tmp_path / "train", 2, "results.csv", "last.pt"))
    assert len([line for line in lines if "attempt 2 of 2" in line]) == 1
    assert not (tmp_path / "store" / "last.pt").exists()  # never a last.pt without the results.csv before it
