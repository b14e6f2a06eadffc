"""The adapters the KFP components call: the decisions a run's UI shows come from here."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from components.publishing.attempts import record_attempt
from components.config import SanityConfig, TrainConfig
from components.errors import UserError
from components.storage import open_store
from components.data.validate import validate_dataset
from components.data.sync import sync_snapshot
from components.training.weights import default_cache_dir
from pipelines.steps import (analyze_step, dataset_cache_root, decide_training, materialize, sanity_step,
                             snapshot_cache, train_step, training_attempt, training_device, validate_step)


def test_a_nightly_run_skips_only_what_an_earlier_run_already_trained(tmp_path):
    store = str(tmp_path)
    code = "ghcr.io/pogona-lab/pogona-cuda:0.1.0-06b51dbe004e"
    attempt = training_attempt("fp-abc", code, TrainConfig(), "1")
    assert decide_training(store, "pogona-head", attempt, skip_if_unchanged=True).train
    # a run that trained it and was not promoted: the next night has nothing new to learn
    record_attempt(open_store(store), "pogona-head", attempt, "night-1", promoted=False,
                   reason="mAP50 0.912 is below the floor 0.95")
    again = decide_training(store, "pogona-head", training_attempt("fp-abc", code, TrainConfig(), "1"), True)
    assert not again.train
    assert again.note.startswith("run night-1 (not promoted: mAP50 0.912 is below the floor 0.95; ")
    assert "training skipped" in again.note
    assert f"its snapshot {open_store(store).url('runs/night-1/manifest.json')}" in again.note
    for changed in (training_attempt("fp-new", code, TrainConfig(), "1"),  # new labels
                    training_attempt("fp-abc", code.replace("06b5", "9f2e"), TrainConfig(), "1"),  # new code
                    training_attempt("fp-abc", code, TrainConfig(epochs=60), "1"),
                    training_attempt("fp-abc", code, TrainConfig(), "2")):
        assert decide_training(store, "pogona-head", changed, skip_if_unchanged=True).train
    # weights staged in the store since: a run without given weights starts from them, so it trains again
    open_store(store).put_bytes("weights/yolo11s.pt", b"newly staged weights")
    staged = training_attempt("fp-abc", code, TrainConfig(), "1", store)
    assert decide_training(store, "pogona-head", staged, skip_if_unchanged=True).train
    record_attempt(open_store(store), "pogona-head", staged, "night-2", promoted=False, reason="below the floor")
    assert not decide_training(store, "pogona-head", training_attempt("fp-abc", code, TrainConfig(), "1", store),
                               skip_if_unchanged=True).train
    given = TrainConfig(weights="s3://bucket/weights/other.pt")  # given weights are a parameter of their own
    assert training_attempt("fp-abc", code, given, "1", store).key == training_attempt("fp-abc", code, given, "1").key
    forced = decide_training(store, "pogona-head", attempt, skip_if_unchanged=False)
    assert forced.train and "skip_if_unchanged is off" in forced.note


def test_validation_leaves_the_snapshot_cached_so_later_steps_download_nothing(demo_dataset_dir, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("POGONA_CACHE_DIR", str(tmp_path / "cache"))
    manifest = tmp_path / "manifest.json"
    fingerprint, counts = validate_step(str(demo_dataset_dir), str(manifest), str(tmp_path / "report.md"))
    assert counts["train_images"] + counts["val_images"] == 80
    cached = snapshot_cache(fingerprint)
    assert len(list((cached / "images").rglob("*.jpg"))) == 80
    summary = sync_snapshot(manifest, cached, progress=False)
    assert (summary.downloaded, summary.skipped) == (0, 160)
    assert materialize(str(manifest)) == cached / "data.yaml"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cached.name]  # no scratch folder left behind


def test_gpu_count_becomes_a_ddp_device_list():
    assert training_device("cuda", "1") == "cuda"
    assert training_device("cuda", "4") == "0,1,2,3"
    assert training_device("cpu", "4") == "cpu"
    for bad in ("0", "two", "1.5", ""):
        with pytest.raises(UserError, match="whole number of GPUs"):
            training_device("cuda", bad)


def test_a_failure_no_retry_can_fix_ends_the_retries_of_that_run_at_once(demo_dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("POGONA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    manifest = tmp_path / "manifest.json"
    validate_step(str(demo_dataset_dir), str(manifest), str(tmp_path / "report.md"))
    config = TrainConfig(model="yolo11n", epochs=1, imgsz=64, batch=8, device="cuda")
    store = str(tmp_path / "store")
    with pytest.raises(UserError, match="CUDA is not available"):
        train_step(str(manifest), str(tmp_path / "a1"), config, "1", store, "night-1", "kfp-run-7")
    # KFP's retry of the same run: refused before any training, naming the first cause
    with pytest.raises(UserError, match="not trained again: .*CUDA is not available"):
        train_step(str(manifest), str(tmp_path / "a2"), replace(config, device="cpu"), "1", store, "night-1",
                   "kfp-run-7")
    assert not (tmp_path / "a2").exists()


def test_an_unusable_dataset_fails_the_validate_step_naming_it(empty_label_dataset, tmp_path):
    with pytest.raises(UserError, match="is not usable: .*no labeled instances"):
        validate_step(str(empty_label_dataset), str(tmp_path / "manifest.json"), str(tmp_path / "report.md"))


@pytest.mark.slow
def test_a_dead_sanity_verdict_fails_the_step_with_its_reasons(empty_label_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("POGONA_CACHE_DIR", str(tmp_path / "cache"))
    manifest = tmp_path / "manifest.json"
    validate_dataset(str(empty_label_dataset), manifest)
    document = json.loads(manifest.read_text())
    del document["errors"]  # a snapshot of the broken data as a manifest from before validation recorded errors
    manifest.write_text(json.dumps(document))
    config = SanityConfig(epochs=3, batch=8, imgsz=64, max_images=80)
    with pytest.raises(UserError, match="sanity gate: dead: .*box and DFL loss stayed exactly 0"):
        sanity_step(str(manifest), str(tmp_path / "verdict.json"), config, "yolo11n", "",
                    str(tmp_path / "store"))


def test_datasets_and_weights_are_cached_under_one_root(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("POGONA_CACHE_DIR", raising=False)
    assert dataset_cache_root() == tmp_path / "xdg" / "pogona" / "datasets"
    assert default_cache_dir() == tmp_path / "xdg" / "pogona" / "weights"
    monkeypatch.setenv("POGONA_CACHE_DIR", str(tmp_path / "pod"))  # a pod's mounted cache wins for datasets
    assert dataset_cache_root() == tmp_path / "pod"


def test_unknown_export_formats_are_refused_first_naming_the_pipeline_parameter(tmp_path):
    with pytest.raises(UserError, match="export_formats 'onnx,tflite': choose from onnx, int8, engine"):
        analyze_step(str(tmp_path / "manifest.json"), str(tmp_path / "train"), str(tmp_path / "verdict.json"),
                     str(tmp_path / "analysis"), str(tmp_path / "store"), "pogona-head", "onnx,tflite")
    assert not (tmp_path / "analysis").exists()
