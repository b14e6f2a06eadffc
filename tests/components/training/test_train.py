"""Training on CPU at tiny sizes: outputs, the CUDA refusal, DDP-proof guarding, checkpoint uploads in the
background, weights. Resuming is tested in test_resume.py."""

import csv
import json
import math
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from components.config import TrainConfig
from components.errors import UserError
from components.training.checkpoints import CheckpointUploadError, CheckpointUploads
from components.storage import FolderStore, ObjectInfo, open_store
from components.data.dataset import load_dataset
from components.training.trainer import GuardedDetectionTrainer
from components.training.train import train_model

TINY = TrainConfig(model="yolo11n", epochs=2, imgsz=64, batch=0.95, device="cpu", workers=0)


@pytest.fixture(scope="module")
def cpu_run(demo_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return train_model(demo_dataset_dir, tmp_path_factory.mktemp("cpu_run") / "train", TINY)


@pytest.mark.slow
def test_cpu_training_writes_the_contract_outputs(cpu_run):
    for path in (cpu_run.best, cpu_run.last, cpu_run.results_csv, cpu_run.args_yaml, cpu_run.metrics_json):
        assert path.is_file() and path.stat().st_size > 0, path
    assert cpu_run.epochs_completed == 2
    summary = json.loads(cpu_run.metrics_json.read_text())
    assert summary["epochs_completed"] == 2 and summary["early_stopped"] is False
    assert summary["device"] == "cpu" and 1 <= summary["best_epoch"] <= 2
    assert set(summary["metrics"]) >= {"precision", "recall", "map50", "map50_95"}
    assert all(0.0 <= summary["metrics"][key] <= 1.0 for key in ("precision", "recall", "map50", "map50_95"))
    hyper = summary["hyperparameters"]
    assert (hyper["optimizer"], hyper["lr0"], hyper["cos_lr"], hyper["seed"]) == ("AdamW", 0.001, True, 42)
    assert yaml.safe_load(cpu_run.args_yaml.read_text())["batch"] == 16  # 95% of GPU memory means 16 on CPU


@pytest.mark.slow
def test_the_batch_plan_is_recorded_in_metrics_json(cpu_run, demo_dataset_dir: Path):
    plan = json.loads(cpu_run.metrics_json.read_text())["batch_plan"]
    train_images = len(load_dataset(demo_dataset_dir).images("train"))
    assert plan["batch"] == 16 and plan["batches_per_epoch"] == math.ceil(train_images / 16)
    assert plan["accumulate"] == 4 and plan["warmup_epochs"] == TINY.epochs - 1  # warm-up leaves the last epoch
    assert plan["reason"] == "a fixed batch"


def test_cuda_is_refused_at_once_when_absent(demo_dataset_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # a machine without CUDA, also on a GPU host
    started = time.monotonic()
    with pytest.raises(UserError, match="CUDA is not available.*--device cpu"):
        train_model(demo_dataset_dir, tmp_path / "train", replace(TINY, device="cuda"))
    assert time.monotonic() - started < 2
    assert not (tmp_path / "train").exists()


@pytest.mark.slow
def test_the_guard_lives_in_the_trainer_class_so_ddp_workers_rebuilt_from_it_keep_it(cpu_run):
    """Ultralytics' DDP worker re-creates the trainer from its class, its args and the pickled callbacks."""
    args = yaml.safe_load(cpu_run.args_yaml.read_text())
    parent = GuardedDetectionTrainer(overrides={**args, "save_dir": str(cpu_run.args_yaml.parent / "ddp")})
    worker = type(parent)(overrides=vars(parent.args), _callbacks=parent.callbacks)
    guards = {"on_train_batch_end": "_watch_batch", "on_train_epoch_end": "_watch_epoch",
              "on_model_save": "_upload_checkpoint"}
    for event, guard in guards.items():
        names = [callback.__name__ for callback in worker.callbacks[event]]
        assert names.count(guard) == 1, (event, names)  # registered once, not once per process


def _rows(results_csv: Path) -> list[int]:
    with open(results_csv, newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


class WatchedStore(FolderStore):
    """A folder store that counts uploads in flight and runs `before_upload(key)` inside each one."""

    def __init__(self, root: Path, before_upload, watch: dict):
        super().__init__(root)
        self.before_upload, self.watch = before_upload, watch

    def upload_file(self, src: Path, key: str) -> ObjectInfo:
        with self.watch["lock"]:
            self.watch["in_flight"] += 1
            self.watch["most_in_flight"] = max(self.watch["most_in_flight"], self.watch["in_flight"])
        try:
            self.before_upload(key)
            return super().upload_file(src, key)
        finally:
            with self.watch["lock"]:
                self.watch["in_flight"] -= 1


def _watched_store(monkeypatch: pytest.MonkeyPatch, before_upload) -> dict:
    """Make training open every store as a WatchedStore; returns what the stores saw."""
    watch = {"lock": threading.Lock(), "in_flight": 0, "most_in_flight": 0}
    monkeypatch.setattr("components.training.trainer.open_store",
                        lambda uri: WatchedStore(open_store(uri).root, before_upload, watch))
    return watch


def _stored_epoch(store: Path, run_id: str) -> int:
    import torch

    return torch.load(store / "runs" / run_id / "checkpoints" / "last.pt", map_location="cpu",
                      weights_only=False)["epoch"] + 1


@pytest.mark.slow
def test_training_goes_on_while_a_checkpoint_uploads_one_upload_at_a_time(demo_dataset_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    out, store, epochs = tmp_path / "train", tmp_path / "store", 3
    first_upload_outlived_its_epoch = []

    def slow_first_upload(key: str) -> None:
        """Epoch 1's last.pt upload lasts until the trainer has finished epoch 2, or gives up after 120 s."""
        if key == "last.pt" and not first_upload_outlived_its_epoch:
            deadline = time.monotonic() + 120
            while len(_rows(out / "results.csv")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            first_upload_outlived_its_epoch.append(len(_rows(out / "results.csv")) >= 2)

    watch = _watched_store(monkeypatch, slow_first_upload)
    result = train_model(demo_dataset_dir, out, replace(TINY, epochs=epochs, batch=16), store=str(store), run_id="r")
    assert first_upload_outlived_its_epoch == [True]  # epoch 2 ran while epoch 1's checkpoint uploaded
    assert watch["most_in_flight"] == 1 and watch["in_flight"] == 0
    stored = store / "runs" / "r" / "checkpoints"
    assert _rows(stored / "results.csv") == list(range(1, epochs + 1)) == _rows(result.results_csv)
    assert _stored_epoch(store, "r") == epochs and (stored / "best.pt").is_file()
    assert not list(tmp_path.glob("checkpoint-uploads-*"))  # the staged copies are gone


@pytest.mark.slow
def test_a_failed_checkpoint_upload_is_retried_until_it_lands(demo_dataset_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture):
    failures = []

    def fail_twice(key: str) -> None:
        if key == "last.pt" and len(failures) < 2:
            failures.append(key)
            raise ConnectionError("store unreachable")

    _watched_store(monkeypatch, fail_twice)
    train_model(demo_dataset_dir, tmp_path / "train", replace(TINY, batch=16), store=str(tmp_path / "store"),
                run_id="r")
    assert len(failures) == 2 and _stored_epoch(tmp_path / "store", "r") == TINY.epochs
    retries = [line for line in caplog.messages if "failed (store unreachable)" in line]
    assert len(retries) == 2 and "runs/r/checkpoints/last.pt" in retries[0] and "attempt 2 of 4 in 1 s" in retries[0]
    assert any(line.startswith("waited ") and "for checkpoint uploads" in line for line in caplog.messages)


@pytest.mark.slow
def test_a_checkpoint_that_never_uploads_fails_training_naming_the_object(demo_dataset_dir: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    def always_fail(key: str) -> None:
        if key == "last.pt":
            raise OSError("No space left on device")

    _watched_store(monkeypatch, always_fail)
    with pytest.raises(CheckpointUploadError, match=r"runs/r/checkpoints/last\.pt failed after 1 attempt "
                                                    r"\(not retried: .*\): No space left on device"):
        train_model(demo_dataset_dir, tmp_path / "train", replace(TINY, batch=16), store=str(tmp_path / "store"),
                    run_id="r")


@pytest.mark.slow
def test_an_error_in_training_waits_for_the_queued_checkpoint_and_stays_the_error(demo_dataset_dir: Path,
                                                                                 tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                                 caplog: pytest.LogCaptureFixture):
    failed = threading.Event()

    def fail_in_epoch_2(trainer: GuardedDetectionTrainer) -> None:
        if trainer.epoch == 1:
            failed.set()
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    trainer_waits = threading.Event()
    wait_for_uploads = CheckpointUploads.wait

    def noted_wait(uploads: CheckpointUploads, timeout: float | None = None) -> bool:
        trainer_waits.set()
        return wait_for_uploads(uploads, timeout)

    def last_upload_outlasts_the_error(key: str) -> None:
        if key == "last.pt":  # held until the error has left training and the trainer waits for its uploads
            failed.wait(timeout=120)
            trainer_waits.wait(timeout=120)

    monkeypatch.setattr(CheckpointUploads, "wait", noted_wait)
    monkeypatch.setattr("components.training.trainer._watch_epoch", fail_in_epoch_2)
    _watched_store(monkeypatch, last_upload_outlasts_the_error)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        train_model(demo_dataset_dir, tmp_path / "train", replace(TINY, epochs=3, batch=16),
                    store=str(tmp_path / "store"), run_id="r")
    assert _stored_epoch(tmp_path / "store", "r") == 1  # epoch 1's checkpoint landed before the error left

    def never_lands(key: str) -> None:
        raise OSError("No space left on device")

    _watched_store(monkeypatch, never_lands)
    with pytest.raises(RuntimeError, match="illegal memory access"):  # not the upload failure beside it
        train_model(demo_dataset_dir, tmp_path / "train2", replace(TINY, epochs=3, batch=16),
                    store=str(tmp_path / "store"), run_id="r2")
    assert any("runs/r2/checkpoints/best.pt failed after 1 attempt" in line for line in caplog.messages)


@pytest.mark.slow
def test_a_run_from_scratch_records_it_in_metrics_json(cpu_run):
    """No weights given, none staged or baked (TINY's yolo11n): the YAML-built model, recorded so the report says so."""
    recorded = json.loads(cpu_run.metrics_json.read_text())["base_weights"]
    assert recorded["source"] == "scratch" and recorded["pretrained"] is False
    assert recorded["path"] == f"{TINY.model}.yaml"


def test_bad_base_weights_are_refused_before_anything_is_written(demo_dataset_dir: Path, tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        train_model(demo_dataset_dir, tmp_path / "train", replace(TINY, weights=str(tmp_path / "missing.pt")))
    assert list(tmp_path.iterdir()) == []  # neither the output folder nor the data.yaml beside it
