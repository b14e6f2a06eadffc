"""`pogona train` evicted as Kubernetes does it (SIGTERM, a grace period), with a checkpoint upload in flight."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from components.storage import open_store
from components.runtime.yolo_env import offline_ultralytics
from processes import lines_of, start_pogona, wait_until

EVICTED_LINE = ("pogona train: the pod was evicted (SIGTERM): stopped and cleaned up; a retry goes on from what "
                "was stored")


def _saved_epoch(store: str, key: str, folder: Path) -> int:
    open_store(store).download(key, folder / "last.pt")
    offline_ultralytics()  # last.pt holds ultralytics objects: loading it imports ultralytics
    import torch

    return torch.load(folder / "last.pt", map_location="cpu", weights_only=False)["epoch"]


@pytest.mark.slow
def test_an_evicted_training_stores_its_newest_checkpoint_says_so_and_leaves_no_staging(
        demo_dataset_dir: Path, tmp_path: Path, s3_bucket: str, s3_faults):
    s3_faults.inject_on("PUT", "checkpoints/last.pt", "hold")  # epoch 1's last.pt lands, its reply is held
    out = tmp_path / "train"
    process = start_pogona("train", "--data", str(demo_dataset_dir), "--model", "yolo11n", "--epochs", "6",
                           "--imgsz", "64", "--batch", "16", "--device", "cpu", "--store", s3_bucket,
                           "--run-id", "r1", "--out", str(out))
    try:
        wait_until(s3_faults.held.is_set, process, "the upload of epoch 1's last.pt")
        # epoch 2 ended: its checkpoint waits behind the held upload, and no safe point comes before it is queued
        wait_until(lambda: lines_of(out / "results.csv") == 3, process, "the end of epoch 2")
        process.send_signal(signal.SIGTERM)
        s3_faults.release()
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    lines = stderr.splitlines()
    assert process.returncode == 143 and lines[-1] == EVICTED_LINE, stderr[-3000:]
    stored = [line for line in lines if "evicted (SIGTERM): training stopped; stored the newest checkpoint" in line]
    assert len(stored) == 1 and "(epoch 2)" in stored[0] and "a retry resumes from it" in stored[0], stderr[-3000:]
    assert "Traceback" not in stderr
    assert _saved_epoch(s3_bucket, "runs/r1/checkpoints/last.pt", tmp_path) == 1  # 0-based: epoch 2
    assert lines_of(out / "results.csv") == 3  # stopped at once: epoch 3 never ended
    assert not list(tmp_path.glob("checkpoint-uploads-*"))  # the staging folder beside the save dir


@pytest.mark.slow
def test_an_evicted_training_whose_upload_outlasts_the_grace_period_says_what_it_did_not_store(
        demo_dataset_dir: Path, tmp_path: Path, s3_bucket: str, s3_faults, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("POGONA_GRACE_SECONDS", "2")
    s3_faults.inject_on("PUT", "checkpoints/last.pt", "hold")  # epoch 1's last.pt never gets its reply
    out = tmp_path / "train"
    process = start_pogona("train", "--data", str(demo_dataset_dir), "--model", "yolo11n", "--epochs", "6",
                           "--imgsz", "64", "--batch", "16", "--device", "cpu", "--store", s3_bucket,
                           "--run-id", "r1", "--out", str(out))
    try:
        wait_until(s3_faults.held.is_set, process, "the upload of epoch 1's last.pt")
        wait_until(lambda: lines_of(out / "results.csv") == 3, process, "the end of epoch 2")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        s3_faults.release()
        process.kill()
    lines = stderr.splitlines()
    assert process.returncode == 143 and lines[-1] == EVICTED_LINE, stderr[-3000:]
    gave_up = [line for line in lines if "POGONA_GRACE_SECONDS=2 s ran out before the checkpoint of epoch 2" in line]
    assert len(gave_up) == 1 and "last.pt" in gave_up[0].split("not stored ")[1], stderr[-3000:]
    assert not list(tmp_path.glob("checkpoint-uploads-*"))
