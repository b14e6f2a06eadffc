"""The report shows the run's numbers, advice and plots, as Markdown and as a self-contained page."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from components.errors import UserError
from components.reporting.report import write_report
from results_table import FIXTURES, SPLIT_PEAKS, read_csv, write_results


def test_tables_show_the_numbers_in_results_csv(tmp_path: Path) -> None:
    source = FIXTURES / "converged_early" / "results.csv"
    table = read_csv(source)
    markdown = write_report(source, tmp_path).markdown.read_text()

    for column in (f"{split}/{kind}" for split in ("train", "val") for kind in ("box_loss", "cls_loss", "dfl_loss")):
        values = table[column]
        change = (values[-1] - values[0]) / values[0] * 100
        assert f"| {column} | {values[0]:.3f} | {values[-1]:.3f} | {change:+.1f} |" in markdown
    map50_95 = table["metrics/mAP50-95(B)"]
    best_epoch = map50_95.index(max(map50_95)) + 1
    assert f"| map50_95 | {max(map50_95):.3f} | {best_epoch} | {map50_95[-1]:.3f} |" in markdown


def test_early_stopping_shows_in_the_convergence_section(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "converged_early", run)
    args = run / "args.yaml"
    args.write_text(args.read_text().replace("epochs: 40", "epochs: 100"))
    result = write_report(run, tmp_path / "report")
    assert "Early stopping: fired (40 epochs run of 100, patience 15)" in result.markdown.read_text()


def test_schedule_that_differs_from_the_configuration_is_flagged(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "converged_early", run)
    args = run / "args.yaml"
    args.write_text(args.read_text().replace("cos_lr: true", "cos_lr: false"))
    result = write_report(run / "results.csv", tmp_path / "report")
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
    assert "Label more thermal images: that modality is the weak one. (because thermal mAP50-95 0.701 vs visible " \
        "0.874)" in markdown
    assert result.assessment in markdown and "nightly-41" in result.assessment

    page = result.html.read_text()
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 4 and all(src.startswith("data:image/png;base64,") for src in sources)
    assert (tmp_path / "report" / "pr_curve.png").read_bytes() == (evaluation_dir / "pr_curve.png").read_bytes()


def test_without_evaluation_the_run_is_compared_on_best_pt_s_own_metrics(tmp_path: Path) -> None:
    """One epoch's figures (the one kept as best.pt), or training's final validation of best.pt when recorded."""
    best = write_results(tmp_path / "results.csv", SPLIT_PEAKS)
    epoch = SPLIT_PEAKS.index(best) + 1
    assert best["metrics/mAP50(B)"] < max(row["metrics/mAP50(B)"] for row in SPLIT_PEAKS)
    markdown = write_report(tmp_path / "results.csv", tmp_path / "report").markdown.read_text()
    assert f"| metric | this run (best epoch {epoch}) |" in markdown
    assert f"| map50 | {best['metrics/mAP50(B)']:.3f} |" in markdown
    assert f"| map50_95 | {best['metrics/mAP50-95(B)']:.3f} |" in markdown

    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"map50": 0.944, "map50_95": 0.611}}))
    markdown = write_report(tmp_path / "results.csv", tmp_path / "report").markdown.read_text()
    assert "| metric | this run (final validation) |" in markdown
    assert "| map50 | 0.944 |" in markdown and "| map50_95 | 0.611 |" in markdown


def test_missing_pr_curve_is_said_not_faked(tmp_path: Path) -> None:
    result = write_report(FIXTURES / "overfitting" / "results.csv", tmp_path)
    assert "PR curve absent" in result.markdown.read_text()
    assert not (tmp_path / "pr_curve.png").exists()


@pytest.mark.slow
def test_report_on_a_real_ultralytics_run(trained_run: Path, tmp_path: Path) -> None:
    """A 2-epoch run learns nothing: the report, given the run dir as the pipeline passes it, says so."""
    result = write_report(trained_run, tmp_path)
    assert "## Overall assessment\n\nThis run did not learn" in result.markdown.read_text()
    assert result.html.stat().st_size > 10_000


def test_unreadable_inputs_are_named(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not an ultralytics results.csv"):
        write_report(tmp_path / "results.csv", tmp_path / "out")
    with pytest.raises(UserError, match="no such evaluation file"):
        write_report(FIXTURES / "overfitting" / "results.csv", tmp_path / "out", evaluation=tmp_path / "none.json")


def test_the_report_says_what_the_run_started_from_and_ran_on(tmp_path: Path) -> None:
    write_results(tmp_path / "results.csv", SPLIT_PEAKS)
    scratch = {"path": "yolo11s.yaml", "source": "scratch", "uri": "", "pretrained": False}
    plan = {"batch": 72, "reason": "AutoBatch allowed 311", "optimizer_steps_per_epoch": 34.0, "warmup_epochs": 3.0,
            "warmup_share": 0.03}
    (tmp_path / "metrics.json").write_text(json.dumps({"device": "0", "base_weights": scratch, "batch_plan": plan}))
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps({"overall": {"map50": 0.9, "map50_95": 0.6}, "device": "cuda:0"}))
    sanity = tmp_path / "verdict.json"
    sanity.write_text(json.dumps({"verdict": "healthy", "base_weights": {**scratch, "path": "yolo11n.yaml"}}))
    markdown = write_report(tmp_path / "results.csv", tmp_path / "report", evaluation=evaluation,
                            sanity=sanity).markdown.read_text()
    assert "Warning: trained from scratch (`yolo11s.yaml`" in markdown
    assert "The sanity gate started from `yolo11n.yaml`, training from `yolo11s.yaml`." in markdown
    assert "Batch 72 (AutoBatch allowed 311): 34 optimizer steps per epoch; warm-up 3 epochs (3% of the run)" in markdown
    assert "Trained on cuda:0." in markdown and "Evaluated on cuda:0" in markdown

    pretrained = {"path": "/cache/yolo11s.pt", "source": "store", "uri": "s3://b/weights/yolo11s.pt", "pretrained": True}
    (tmp_path / "metrics.json").write_text(json.dumps({"base_weights": pretrained}))
    markdown = write_report(tmp_path / "results.csv", tmp_path / "report").markdown.read_text()
    assert "Base weights: `s3://b/weights/yolo11s.pt` (store)." in markdown and "scratch" not in markdown


def _drawn_evaluation(folder: Path, by_modality: dict[str, dict[str, float]], worst: dict[str, str]) -> Path:
    """An evaluation.json with the overall figures, `by_modality`, and one drawn worst image per group of `worst`
    (group -> image key)."""
    (folder / "worst").mkdir(parents=True)
    records = {}
    for index, (group, key) in enumerate(worst.items()):
        Image.new("RGB", (32, 32), (index * 60, 0, 0)).save(folder / "worst" / f"{index}.jpg")
        records[group] = [{"key": key, "missed": 1, "false_detections": 0, "drawing": f"worst/{index}.jpg",
                           "caption": f"{key}: 1 of 1 heads missed, 0 false detections"}]
    evaluation = folder / "evaluation.json"
    evaluation.write_text(json.dumps({"overall": {"precision": 0.97, "recall": 0.95, "map50": 0.981,
                                                  "map50_95": 0.812},
                                      "by_modality": by_modality, "worst_images": records}))
    return evaluation


def test_a_dataset_without_modalities_gets_overall_figures_and_its_worst_images_only(tmp_path: Path) -> None:
    evaluation = _drawn_evaluation(tmp_path / "evaluation", {}, {"overall": "images/val/frame_00003.jpg"})
    changes = tmp_path / "changes.json"
    changes.write_text(json.dumps({"baseline": "run nightly-41's snapshot", "compared": True, "groups": [
        {"split": "train", "modality": "unknown", "images_added": 3, "images_removed": 0, "images_changed": 0,
         "labels_added": 3, "labels_removed": 0, "labels_edited": 1}], "names_before": {}, "names_after": {}}))
    markdown = write_report(FIXTURES / "converged_early" / "results.csv", tmp_path / "report", evaluation=evaluation,
                            changes=changes).markdown.read_text()
    assert "| map50_95 | 0.812 |" in markdown  # the overall figures
    assert "## Where the model fails" in markdown and "images/val/frame_00003.jpg: 1 of 1 heads missed" in markdown
    assert "| split | images added |" in markdown and "| train | 3 | 0 | 0 | 3 | 0 | 1 |" in markdown
    assert "modality" not in markdown.lower() and "unknown" not in markdown and "### overall" not in markdown


def test_images_without_a_modality_in_a_mixed_dataset_are_a_group_named_plainly(tmp_path: Path) -> None:
    scores = {"precision": 0.9, "recall": 0.85, "map50": 0.93, "map50_95": 0.701}
    evaluation = _drawn_evaluation(tmp_path / "evaluation", {"thermal": scores, "no modality": scores},
                                   {"thermal": "images/val/thermal/t_1.jpg", "no modality": "images/val/IMG_1.jpg"})
    changes = tmp_path / "changes.json"
    changes.write_text(json.dumps({"baseline": "run nightly-41's snapshot", "compared": True, "groups": [
        {"split": "val", "modality": modality, "images_added": 1, "images_removed": 0, "images_changed": 0,
         "labels_added": 1, "labels_removed": 0, "labels_edited": 0} for modality in ("thermal", "unknown")],
        "names_before": {}, "names_after": {}}))
    markdown = write_report(FIXTURES / "converged_early" / "results.csv", tmp_path / "report", evaluation=evaluation,
                            changes=changes).markdown.read_text()
    assert "| no modality | 0.900 | 0.850 | 0.930 | 0.701 |" in markdown and "### no modality" in markdown
    assert "| val | no modality | 1 |" in markdown and "| val | thermal | 1 |" in markdown
    assert "unknown" not in markdown and "Label more" not in markdown
