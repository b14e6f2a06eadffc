"""The report's numbers come from results.csv, and its recommendations from those numbers."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from components.errors import UserError
from components.report import write_report

FIXTURES = Path(__file__).parent / "fixtures"


def read_csv(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {name: [float(row[name]) for row in rows] for name in rows[0]}


def first_within_one_percent(values: list[float]) -> int:
    return next(i for i, value in enumerate(values) if value >= 0.99 * max(values)) + 1


def test_numbers_equal_those_in_results_csv(tmp_path: Path) -> None:
    source = FIXTURES / "converged_early" / "results.csv"
    table = read_csv(source)
    result = write_report(source, tmp_path)
    markdown = result.markdown.read_text()

    for loss in result.analysis.losses:
        assert loss.start == table[loss.column][0] and loss.final == table[loss.column][-1]
        expected_change = (table[loss.column][-1] - table[loss.column][0]) / table[loss.column][0] * 100
        assert loss.change_pct == pytest.approx(expected_change)
        assert f"| {loss.column} | {loss.start:.3f} | {loss.final:.3f} | {expected_change:+.1f} |" in markdown
    assert {loss.column for loss in result.analysis.losses} == {
        f"{split}/{kind}" for split in ("train", "val") for kind in ("box_loss", "cls_loss", "dfl_loss")}

    map50_95 = table["metrics/mAP50-95(B)"]
    best = result.analysis.metrics["map50_95"]
    assert best.best == max(map50_95) and best.best_epoch == map50_95.index(max(map50_95)) + 1
    assert best.final == map50_95[-1]
    assert f"| map50_95 | {max(map50_95):.3f} | {best.best_epoch} | {map50_95[-1]:.3f} |" in markdown
    assert result.analysis.learning_rate.start == table["lr/pg0"][0]
    assert result.analysis.learning_rate.end == table["lr/pg0"][-1]


def test_converged_early_run_recommends_fewer_epochs(tmp_path: Path) -> None:
    source = FIXTURES / "converged_early" / "results.csv"
    converged = first_within_one_percent(read_csv(source)["metrics/mAP50-95(B)"])
    result = write_report(source, tmp_path)

    assert result.analysis.convergence.converged_epoch == converged
    expected_epochs = converged + max(5, math.ceil(0.2 * converged))
    actions = [r.action for r in result.recommendations]
    assert f"Train for about {expected_epochs} epochs instead of 40." in actions
    trigger = next(r.trigger for r in result.recommendations if r.action.startswith("Train for about"))
    assert f"from epoch {converged} of 40" in trigger
    assert not result.analysis.convergence.overfitting
    assert result.analysis.learning_rate.observed == "cosine" and result.analysis.learning_rate.matches
    assert "meets the production floor" in result.assessment
    assert "no sign of overfitting" in result.assessment


def test_early_stopped_run_says_so_and_suggests_the_epoch_count(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "converged_early", run)
    args = run / "args.yaml"
    args.write_text(args.read_text().replace("epochs: 40", "epochs: 100"))
    converged = first_within_one_percent(read_csv(run / "results.csv")["metrics/mAP50-95(B)"])
    result = write_report(run, tmp_path / "report")

    assert result.analysis.convergence.early_stopped
    early = [r for r in result.recommendations if "early stopping ended the run" in r.action]
    assert early and early[0].trigger.startswith("stopped at epoch 40 of 100 (patience 15)")
    assert f"about {converged + max(5, math.ceil(0.2 * converged))}" in early[0].action
    assert "Early stopping: fired (40 epochs run of 100, patience 15)" in result.markdown.read_text()


def test_overfitting_run_recommends_augmentation(tmp_path: Path) -> None:
    source = FIXTURES / "overfitting" / "results.csv"
    table = read_csv(source)
    val_total = [sum(values) for values in zip(*(table[f"val/{k}"] for k in ("box_loss", "cls_loss", "dfl_loss")))]
    minimum_epoch = val_total.index(min(val_total)) + 1
    result = write_report(source, tmp_path)

    convergence = result.analysis.convergence
    assert convergence.overfitting and convergence.val_loss_min_epoch == minimum_epoch
    assert convergence.val_loss_rise_pct == pytest.approx((val_total[-1] - min(val_total)) / min(val_total) * 100)
    augmentation = [r for r in result.recommendations if "augmentation" in r.action]
    assert augmentation and f"minimum at epoch {minimum_epoch}" in augmentation[0].trigger
    assert "the model overfits" in result.assessment
    assert "falls short of the production floor" in result.assessment
    assert result.analysis.learning_rate.observed == "linear" and result.analysis.learning_rate.matches


def test_dead_run_reads_as_failed(tmp_path: Path) -> None:
    result = write_report(FIXTURES / "dead_mps" / "results.csv", tmp_path)
    assert result.analysis.status == "dead"
    assert result.assessment.startswith("This run failed")
    assert "meets" not in result.assessment
    assert len(result.recommendations) == 1 and "Do not use these weights" in result.recommendations[0].action


def test_schedule_that_differs_from_the_configuration_is_flagged(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "converged_early", run)
    args = run / "args.yaml"
    args.write_text(args.read_text().replace("cos_lr: true", "cos_lr: false"))
    result = write_report(run / "results.csv", tmp_path / "report")
    assert result.analysis.learning_rate.configured == "linear"
    assert result.analysis.learning_rate.observed == "cosine" and result.analysis.learning_rate.matches is False
    assert "does NOT match the configured schedule" in result.markdown.read_text()


def test_every_input_shows_side_by_side_in_a_self_contained_page(tmp_path: Path) -> None:
    evaluation_dir = tmp_path / "evaluation"
    evaluation_dir.mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(evaluation_dir / "pr_curve.png")
    evaluation = evaluation_dir / "evaluation.json"
    evaluation.write_text(json.dumps({
        "overall": {"precision": 0.97, "recall": 0.95, "map50": 0.981, "map50_95": 0.812},
        "by_modality": {"thermal": {"precision": 0.9, "recall": 0.85, "map50": 0.93, "map50_95": 0.701},
                        "visible": {"precision": 0.99, "recall": 0.98, "map50": 0.99, "map50_95": 0.874}},
        "speed_ms": {"inference": 4.2}}))
    sanity = tmp_path / "verdict.json"
    sanity.write_text(json.dumps({"verdict": "healthy", "reasons": [], "steps": 30, "wall_seconds": 95.0,
                                  "device": "cpu", "epochs": [
                                      {"box_loss": 1.4, "cls_loss": 1.3, "dfl_loss": 1.1, "precision": 0.9,
                                       "recall": 0.8, "map50": 0.883, "map50_95": 0.5}]}))
    champion = tmp_path / "production.json"
    champion.write_text(json.dumps({"run_id": "nightly-41", "metrics": {
        "precision": 0.96, "recall": 0.94, "map50": 0.975, "map50_95": 0.799}}))
    exports = tmp_path / "exports.json"
    exports.write_text(json.dumps({"imgsz": 640, "models": [
        {"format": "onnx", "file": "/x/best.onnx", "size_bytes": 10_000_000, "map50": 0.98, "map50_95": 0.811,
         "latency_ms": 48.0},
        {"format": "int8", "file": "/x/best.int8.onnx", "size_bytes": 3_000_000, "map50": 0.978,
         "map50_95": 0.803, "latency_ms": 21.5}]}))

    result = write_report(FIXTURES / "converged_early" / "results.csv", tmp_path / "report", sanity=sanity,
                          champion=champion, evaluation=evaluation, exports=exports)
    markdown = result.markdown.read_text()
    assert "| thermal | 0.900 | 0.850 | 0.930 | 0.701 |" in markdown
    assert "| map50_95 | 0.812 | 0.500 | 0.799 |" in markdown
    assert "| int8 | best.int8.onnx | 3.000 | 0.978 | 0.803 | 21.500 |" in markdown
    triggers = {r.action: r.trigger for r in result.recommendations}
    assert triggers["Label more thermal images: that modality is the weak one."] == \
        "thermal mAP50-95 0.701 vs visible 0.874"
    assert "INT8 mAP50-95 0.803 vs FP32 0.811" in triggers["Deploy the INT8 ONNX model on CPU: its accuracy holds."]
    assert "nightly-41" in result.assessment and "+0.013 mAP50-95 better" in result.assessment

    page = result.html.read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 4 and all(src.startswith("data:image/png;base64,") for src in sources)
    assert (tmp_path / "report" / "pr_curve.png").read_bytes() == (evaluation_dir / "pr_curve.png").read_bytes()


def test_missing_pr_curve_is_said_not_faked(tmp_path: Path) -> None:
    result = write_report(FIXTURES / "overfitting" / "results.csv", tmp_path)
    assert "PR curve absent" in result.markdown.read_text()
    assert not (tmp_path / "pr_curve.png").exists()


@pytest.mark.slow
def test_report_on_a_real_ultralytics_run(trained_run: Path, tmp_path: Path) -> None:
    """A 2-epoch run learns nothing: the report must say so instead of praising it."""
    result = write_report(trained_run, tmp_path)  # the run dir, as the pipeline passes it
    assert result.analysis.epochs_run == 2
    assert result.analysis.status == "not learning"
    assert result.assessment.startswith("This run did not learn")
    assert result.html.stat().st_size > 10_000


def test_unreadable_inputs_are_named(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not an ultralytics results.csv"):
        write_report(tmp_path / "results.csv", tmp_path / "out")
    with pytest.raises(UserError, match="no such evaluation file"):
        write_report(FIXTURES / "overfitting" / "results.csv", tmp_path / "out", evaluation=tmp_path / "none.json")
