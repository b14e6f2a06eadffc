"""The step doors the KFP components call: each lays out artifacts, calls its stage and fails the step as a
user can act on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from components.config import PromotionConfig, SanityConfig, TrainConfig
from components.data.sync import materialize, snapshot_cache, sync_snapshot
from components.data.validate import validate_dataset
from components.errors import UserError
from components.publishing import attempts
from components.storage import open_store
from pipelines.steps import (analyze_step, decide_training, publish_step, sanity_step, train_step, training_attempt,
                            validate_step)
from published_runs import make_run


def test_the_decide_component_gets_the_skip_rule_through_its_doors(tmp_path):
    attempt = training_attempt("fp-abc", "code-1", TrainConfig(), "1")
    attempts.record_attempt(open_store(str(tmp_path)), "pogona-head", attempt, "night-1", promoted=True, reason="ok")
    decision, decided = decide_training(str(tmp_path), "pogona-head", "fp-abc", "code-1", TrainConfig(),
                                        SanityConfig(), "1", skip_if_unchanged=True)
    assert decided == attempt
    assert decision == attempts.decide_training(str(tmp_path), "pogona-head", attempt, True) and not decision.train


def test_a_run_that_is_not_promoted_still_spares_the_next_night_from_training_it_again(tmp_path):
    store = str(tmp_path / "store")

    def decide_tonight():
        return decide_training(store, "pogona-head", "fp-abc", "code-1", TrainConfig(), SanityConfig(), "1",
                               skip_if_unchanged=True)

    first_night, attempt = decide_tonight()
    assert first_night.train
    promoted, note = publish_step(make_run(tmp_path / "night-1", map50=0.90, map50_95=0.70), store, "night-1",
                                  "pogona-head", PromotionConfig(), attempt)
    assert not promoted and note == "not promoted: mAP50 0.9000 is below the floor 0.9500"
    next_night, _ = decide_tonight()
    assert not next_night.train
    assert next_night.note.startswith("run night-1 (not promoted: mAP50 0.9000 is below the floor 0.9500; ")


def test_the_decide_step_refuses_a_setting_out_of_range_in_one_line_naming_it(tmp_path):
    with pytest.raises(UserError, match=r"^sanity imgsz 100 is out of range: a multiple of the model's stride 32"):
        decide_training(str(tmp_path / "no-store"), "pogona-head", "fp-abc", "code-1", TrainConfig(),
                        SanityConfig(imgsz=100), "1", skip_if_unchanged=True)


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


def test_unknown_export_formats_are_refused_first_naming_the_pipeline_parameter(tmp_path):
    with pytest.raises(UserError, match="export_formats 'onnx,tflite': choose from onnx, int8, engine"):
        analyze_step(str(tmp_path / "manifest.json"), str(tmp_path / "train"), str(tmp_path / "verdict.json"),
                     str(tmp_path / "analysis"), str(tmp_path / "store"), "pogona-head", "onnx,tflite")
    assert not (tmp_path / "analysis").exists()


STEP_DOORS = ("validate_step", "decide_training", "sanity_step", "train_step", "analyze_step", "publish_step")


def test_every_step_door_a_pod_runs_makes_sigterm_an_eviction_first(tmp_path):
    """Each door installs the handler before any work, so even a step that fails at once would meet SIGTERM."""
    import subprocess
    import sys
    import textwrap

    from processes import REPO

    program = textwrap.dedent(f"""
        import inspect, signal
        from pipelines import steps
        from components.runtime import eviction
        for name in {STEP_DOORS!r}:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            door = getattr(steps, name)
            try:  # arguments that fail every door at its first piece of work
                door(*[{str(tmp_path / "missing")!r}] * len(inspect.signature(door).parameters))
            except Exception:
                pass
            print(name, signal.getsignal(signal.SIGTERM) is eviction._on_sigterm)
    """)
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.stdout.split("\n")[:-1] == [f"{name} True" for name in STEP_DOORS], result.stderr[-3000:]
