"""The store layout of docs/architecture.md, key by key: readers and writers meet only if these hold."""

from datetime import datetime, timezone

from components import layout


def test_run_keys_live_under_the_run():
    assert layout.run("r1") == "runs/r1"
    assert layout.run_file("r1", "train/results.csv") == "runs/r1/train/results.csv"
    assert layout.run_manifest("r1") == "runs/r1/manifest.json"
    assert layout.run_metrics("r1") == "runs/r1/metrics.json"
    assert layout.run_sanity_verdict("r1") == "runs/r1/sanity/verdict.json"
    assert layout.run_report("r1") == "runs/r1/report/report.html"
    assert layout.run_checkpoints("r1") == "runs/r1/checkpoints"
    assert layout.run_refusal("r1", "kfp-9") == "runs/r1/refusals/kfp-9.json"
    assert layout.run_file("r1", layout.BEST_WEIGHTS) == "runs/r1/train/weights/best.pt"


def test_model_keys_live_under_the_model():
    assert layout.production("head") == "models/head/production.json"
    assert layout.attempt("head", "abc") == "models/head/attempts/abc.json"
    promoted = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    assert layout.history("head", promoted, "r1") == "models/head/history/20260102T030405000006Z-r1.json"


def test_staged_weights_are_named_by_the_model():
    assert layout.staged_weights("yolo11s.pt") == "weights/yolo11s.pt"
    assert layout.staged_weights("yolo11s") == "weights/yolo11s.pt"
    assert layout.DEMO_DATASET == "datasets/demo"
