"""The adapters the KFP components call: the decisions a run's UI shows come from here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.config import SanityConfig
from components.errors import UserError
from components.storage import open_store
from components.validate import validate_dataset
from components.sync import sync_snapshot
from components.weights import default_cache_dir
from pipelines.steps import (dataset_cache_root, decide_training, materialize, sanity_step, snapshot_cache,
                             training_device, validate_step)


def _champion(store_dir: Path, fingerprint: str) -> None:
    open_store(str(store_dir)).put_json("models/pogona-head/production.json",
                                        {"run_id": "night-1", "dataset_fingerprint": fingerprint})


def test_training_is_skipped_only_when_the_champion_saw_this_exact_snapshot(tmp_path):
    store = str(tmp_path)
    assert decide_training(store, "pogona-head", "abc", skip_if_unchanged=True).train
    _champion(tmp_path, "abc")
    unchanged = decide_training(store, "pogona-head", "abc", skip_if_unchanged=True)
    assert not unchanged.train and "night-1" in unchanged.note and "skipped" in unchanged.note
    assert decide_training(store, "pogona-head", "def", skip_if_unchanged=True).train
    assert decide_training(store, "pogona-head", "abc", skip_if_unchanged=False).train


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
    assert training_device("cuda", 1) == "cuda"
    assert training_device("cuda", 4) == "0,1,2,3"
    assert training_device("cpu", 4) == "cpu"


def test_an_unusable_dataset_fails_the_validate_step_naming_it(empty_label_dataset, tmp_path):
    with pytest.raises(UserError, match="is not usable: .*no labeled instances"):
        validate_step(str(empty_label_dataset), str(tmp_path / "manifest.json"), str(tmp_path / "report.md"))


def test_a_dead_sanity_verdict_fails_the_step_with_its_reasons(empty_label_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("POGONA_CACHE_DIR", str(tmp_path / "cache"))
    manifest = tmp_path / "manifest.json"
    validate_dataset(str(empty_label_dataset), manifest)
    document = json.loads(manifest.read_text())
    del document["errors"]  # a snapshot of the broken data as a manifest from before validation recorded errors
    manifest.write_text(json.dumps(document))
    config = SanityConfig(epochs=3, batch=8, imgsz=64, max_images=80)
    with pytest.raises(UserError, match="sanity gate: dead: .*box and DFL loss stayed exactly 0"):
        sanity_step(str(manifest), str(tmp_path / "verdict.json"), config, "yolo11n", "")


def test_datasets_and_weights_are_cached_under_one_root(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("POGONA_CACHE_DIR", raising=False)
    assert dataset_cache_root() == tmp_path / "xdg" / "pogona" / "datasets"
    assert default_cache_dir() == tmp_path / "xdg" / "pogona" / "weights"
    monkeypatch.setenv("POGONA_CACHE_DIR", str(tmp_path / "pvc"))  # a pod's mounted cache wins for datasets
    assert dataset_cache_root() == tmp_path / "pvc"
