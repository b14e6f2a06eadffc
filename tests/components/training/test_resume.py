"""Resuming a training run from the store: after kill -9 mid-training, and after a pod that died between its
last checkpoint and its outputs."""

import dataclasses
import json
import signal
from pathlib import Path

import pytest
import yaml

from components.config import TrainConfig
from components.metrics.results_csv import read_history
from components.storage import open_store
from components.errors import UserError
from components.training.resume import fetch_checkpoint
from components.training.train import train_model
from components.runtime.yolo_env import offline_ultralytics
from processes import start_pogona, wait_until

RESUMED = TrainConfig(model="yolo11n", epochs=4, imgsz=64, batch=16, device="cpu", workers=0)


def _epochs(results_csv: Path) -> list[int]:
    return list(read_history(results_csv).epochs)


@pytest.mark.slow
def test_a_run_killed_mid_training_resumes_from_the_store_losing_at_most_one_epoch(demo_dataset_dir: Path,
                                                                                     tmp_path: Path, s3_bucket: str,
                                                                                     s3_faults,
                                                                                     caplog: pytest.LogCaptureFixture):
    """Killed (-9) while epoch 1's last.pt upload is in flight: the store applied it, its reply is held."""
    store, epochs = s3_bucket, RESUMED.epochs
    first_out, second_out = tmp_path / "machine1" / "train", tmp_path / "machine2" / "train"
    s3_faults.inject_on("PUT", "checkpoints/last.pt", "hold")
    process = start_pogona("train", "--data", str(demo_dataset_dir), "--model", "yolo11n", "--epochs", str(epochs),
                           "--imgsz", "64", "--batch", "16", "--device", "cpu", "--store", store, "--run-id", "r1",
                           "--out", str(first_out))
    try:
        wait_until(s3_faults.held.is_set, process, "the upload of epoch 1's last.pt")
        process.send_signal(signal.SIGKILL)
    finally:
        process.communicate()
        s3_faults.release()
    assert process.returncode == -signal.SIGKILL, "the first attempt must die mid-training"
    offline_ultralytics()  # last.pt holds ultralytics objects: loading it imports ultralytics
    import torch

    checkpoint = tmp_path / "stored-last.pt"
    checkpoint.write_bytes(open_store(f"{store}/runs/r1/checkpoints").get_bytes("last.pt"))
    saved_epochs = torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"] + 1
    assert saved_epochs == 1
    done_before_kill = len(_epochs(first_out / "results.csv"))

    result = train_model(demo_dataset_dir, second_out, RESUMED, store=store, run_id="r1")
    stored = open_store(store).url("runs/r1/checkpoints/last.pt")
    assert f"resuming from {stored} after epoch {saved_epochs} of {epochs}" in caplog.text  # what the log says
    assert _epochs(result.results_csv) == list(range(1, epochs + 1))
    before_kill = (first_out / "results.csv").read_text().splitlines()
    assert result.results_csv.read_text().splitlines()[:saved_epochs + 1] == before_kill[:saved_epochs + 1]
    assert done_before_kill - saved_epochs <= 1  # epochs lost to the kill
    # what the first attempt started from (yolo11n built from its YAML), recorded without resolving it again
    resumed_from = json.loads(result.metrics_json.read_text())["base_weights"]
    assert resumed_from["source"] == "resumed" and resumed_from["pretrained"] is False
    assert resumed_from["path"].endswith("yolo11n.yaml")

    # A pod that dies after its last checkpoint but before writing its outputs: the retry trains no more.
    third = train_model(demo_dataset_dir, tmp_path / "machine3" / "train", RESUMED, store=store, run_id="r1")
    assert f"completing from {stored} after epoch {epochs} of {epochs}" in caplog.text
    assert _epochs(third.results_csv) == list(range(1, epochs + 1))
    assert third.best.read_bytes() == open_store(store).get_bytes("runs/r1/checkpoints/best.pt")
    summary = json.loads(third.metrics_json.read_text())
    assert summary["epochs_completed"] == epochs and 0.0 <= summary["metrics"]["map50"] <= 1.0
    assert yaml.safe_load(third.args_yaml.read_text())["epochs"] == epochs
    assert (second_out / "weights" / "last.pt").is_file()
    assert open_store(store).head("runs/r1/checkpoints/results.csv").size > 0


@pytest.mark.slow
def test_a_run_whose_last_pt_was_not_stored_after_its_results_csv_resumes_with_each_epoch_once(
        demo_dataset_dir: Path, tmp_path: Path, s3_bucket: str, s3_faults):
    """The store as a pod killed between a checkpoint's results.csv and its last.pt leaves it: here the last.pt
    upload of epoch 2 is refused (held until the refusal is armed), and the attempt fails."""
    epochs, out = 3, tmp_path / "machine1" / "train"
    s3_faults.inject_on("PUT", "checkpoints/last.pt", "hold")
    process = start_pogona("train", "--data", str(demo_dataset_dir), "--model", "yolo11n", "--epochs", str(epochs),
                           "--imgsz", "64", "--batch", "16", "--device", "cpu", "--store", s3_bucket,
                           "--run-id", "r1", "--out", str(out))
    try:
        wait_until(s3_faults.held.is_set, process, "the upload of epoch 1's last.pt")
        s3_faults.inject_on("PUT", "checkpoints/last.pt", "403")  # the next one: epoch 2's
        s3_faults.release()
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 2 and "checkpoint upload of" in stderr, stderr[-3000:]
    store = open_store(f"{s3_bucket}/runs/r1/checkpoints")
    assert _epochs_in(store.get_bytes("results.csv")) == [1, 2] and store.exists("last.pt")  # last.pt of epoch 1

    result = train_model(demo_dataset_dir, tmp_path / "machine2" / "train",
                         dataclasses.replace(RESUMED, epochs=epochs), store=s3_bucket, run_id="r1")
    assert _epochs(result.results_csv) == list(range(1, epochs + 1))


def _epochs_in(results_csv: bytes) -> list[int]:
    return [int(float(line.split(",")[0])) for line in results_csv.decode().splitlines()[1:]]


def test_checkpoints_a_retry_cannot_resume_from_are_refused_naming_them(tmp_path: Path):
    import torch

    checkpoints = tmp_path / "store" / "runs" / "r1" / "checkpoints"
    checkpoints.mkdir(parents=True)
    uri = str(checkpoints)
    torch.save({"epoch": -1, "model": None}, checkpoints / "last.pt")  # weights only, as final_eval leaves last.pt
    with pytest.raises(UserError, match=r"checkpoints/last\.pt holds no training state; start a new run"):
        fetch_checkpoint(uri, tmp_path / "a1", epochs=4)

    torch.save({"epoch": 3, "train_args": {"model": "yolo11n.yaml"}}, checkpoints / "last.pt")
    with pytest.raises(UserError, match=r"last\.pt is a finished run \(epoch 4 of 4\) without best\.pt beside it"):
        fetch_checkpoint(uri, tmp_path / "a2", epochs=4)
    (checkpoints / "best.pt").write_bytes((checkpoints / "last.pt").read_bytes())
    completing = fetch_checkpoint(uri, tmp_path / "a3", epochs=4)
    assert completing.finished and completing.base_weights().source == "resumed"

    (checkpoints / "best.pt").unlink()  # mid-run, best.pt is not needed yet
    resuming = fetch_checkpoint(uri, tmp_path / "a4", epochs=5)
    assert not resuming.finished and resuming.train_args == {"model": "yolo11n.yaml"}
