"""Recommendations and the overall assessment follow from a run's numbers and name the number behind each."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from components.reporting.advice import Recommendation, assess, recommend
from components.reporting.analysis import analyze
from components.config import PromotionConfig
from components.metrics.results_csv import read_history
from components.metrics.artifacts import Evaluation, Exports
from components.metrics.run_metrics import best_model_metrics
from components.training.outputs import TrainingMetrics
from results_table import FIXTURES, first_within_one_percent, read_csv


def advice(results: Path, evaluation: dict[str, Any] | None = None, exports: dict[str, Any] | None = None,
           sanity: dict[str, Any] | None = None,
           champion: dict[str, Any] | None = None) -> tuple[tuple[Recommendation, ...], str]:
    """The recommendations and the assessment for a run, judged against the default promotion floor."""
    analysis = analyze(read_history(results))
    evaluation_record = Evaluation.from_json(evaluation, "evaluation.json") if evaluation is not None else None
    exports_record = Exports.from_json(exports, "exports.json") if exports is not None else None
    model = best_model_metrics(results, evaluation_record, TrainingMetrics.beside(results)).values
    return (recommend(analysis, evaluation_record, exports_record),
            assess(analysis, model, sanity, champion, PromotionConfig().min_map50))


def test_converged_early_run_recommends_fewer_epochs() -> None:
    source = FIXTURES / "converged_early" / "results.csv"
    converged = first_within_one_percent(read_csv(source)["metrics/mAP50-95(B)"])
    recommendations, assessment = advice(source)

    expected_epochs = converged + max(5, math.ceil(0.2 * converged))
    actions = [r.action for r in recommendations]
    assert f"Train for about {expected_epochs} epochs instead of 40." in actions
    trigger = next(r.trigger for r in recommendations if r.action.startswith("Train for about"))
    assert f"from epoch {converged} of 40" in trigger
    assert "meets the production floor" in assessment
    assert "no sign of overfitting" in assessment


def test_early_stopped_run_suggests_the_epoch_count(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "converged_early", run)
    args = run / "args.yaml"
    args.write_text(args.read_text().replace("epochs: 40", "epochs: 100"))
    converged = first_within_one_percent(read_csv(run / "results.csv")["metrics/mAP50-95(B)"])
    recommendations, _ = advice(run / "results.csv")

    early = [r for r in recommendations if "early stopping ended the run" in r.action]
    assert early and early[0].trigger.startswith("stopped at epoch 40 of 100 (patience 15)")
    assert f"about {converged + max(5, math.ceil(0.2 * converged))}" in early[0].action


def test_overfitting_run_recommends_augmentation() -> None:
    source = FIXTURES / "overfitting" / "results.csv"
    table = read_csv(source)
    val_total = [sum(values) for values in zip(*(table[f"val/{k}"] for k in ("box_loss", "cls_loss", "dfl_loss")))]
    recommendations, assessment = advice(source)

    augmentation = [r for r in recommendations if "augmentation" in r.action]
    assert augmentation and f"minimum at epoch {val_total.index(min(val_total)) + 1}" in augmentation[0].trigger
    assert "the model overfits" in assessment
    assert "falls short of the production floor" in assessment


def test_dead_run_reads_as_failed() -> None:
    recommendations, assessment = advice(FIXTURES / "dead_mps" / "results.csv")
    assert assessment.startswith("This run failed")
    assert "meets" not in assessment
    assert len(recommendations) == 1 and "Do not use these weights" in recommendations[0].action


def test_evaluation_exports_sanity_and_champion_each_drive_advice() -> None:
    evaluation = {
        "overall": {"precision": 0.97, "recall": 0.95, "map50": 0.981, "map50_95": 0.812},
        "by_modality": {"thermal": {"precision": 0.9, "recall": 0.85, "map50": 0.93, "map50_95": 0.701},
                        "visible": {"precision": 0.99, "recall": 0.98, "map50": 0.99, "map50_95": 0.874}}}
    exports = {"imgsz": 640, "models": [
        {"format": "onnx", "file": "/x/best.onnx", "map50": 0.98, "map50_95": 0.811, "latency_ms": 48.0},
        {"format": "int8", "file": "/x/best.int8.onnx", "map50": 0.978, "map50_95": 0.803, "latency_ms": 21.5}]}
    sanity = {"verdict": "healthy", "epochs": [{"map50": 0.883, "map50_95": 0.5}]}
    champion = {"run_id": "nightly-41", "metrics": {"map50": 0.975, "map50_95": 0.799}}
    recommendations, assessment = advice(FIXTURES / "converged_early" / "results.csv", evaluation, exports,
                                         sanity, champion)

    triggers = {r.action: r.trigger for r in recommendations}
    assert triggers["Label more thermal images: that modality is the weak one."] == \
        "thermal mAP50-95 0.701 vs visible 0.874"
    assert "INT8 mAP50-95 0.803 vs FP32 0.811" in triggers["Deploy the INT8 ONNX model on CPU: its accuracy holds."]
    assert "nightly-41" in assessment and "+0.013 mAP50-95 better" in assessment
    assert f"change of {0.981 - 0.883:+.3f}" in assessment


@pytest.mark.slow
def test_a_real_two_epoch_ultralytics_run_is_not_praised(trained_run: Path) -> None:
    _, assessment = advice(trained_run / "results.csv")
    assert assessment.startswith("This run did not learn")


def test_images_without_a_modality_are_never_advised_to_be_labeled_more() -> None:
    """In a mixed dataset they are a group of their own, but no modality a person could label more of."""
    scores = {"thermal": 0.701, "visible": 0.874, "no modality": 0.2, "unknown": 0.1}  # "unknown": older files
    evaluation = {"overall": {"map50": 0.98, "map50_95": 0.812},
                  "by_modality": {name: {"map50": 0.9, "map50_95": value} for name, value in scores.items()}}
    recommendations, _ = advice(FIXTURES / "converged_early" / "results.csv", evaluation)
    labeling = [r for r in recommendations if r.action.startswith("Label more")]
    assert [(r.action, r.trigger) for r in labeling] == [
        ("Label more thermal images: that modality is the weak one.", "thermal mAP50-95 0.701 vs visible 0.874")]
    evaluation["by_modality"] = {name: evaluation["by_modality"][name] for name in ("visible", "no modality")}
    recommendations, _ = advice(FIXTURES / "converged_early" / "results.csv", evaluation)
    assert not any("Label more" in r.action or "modality" in r.trigger for r in recommendations)
