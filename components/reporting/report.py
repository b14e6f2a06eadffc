"""The training report: the analysis an engineer used to write by hand (seed 000), written as Markdown and HTML.

The numbers come from the run's analysis (components.reporting.analysis) and advice (components.reporting.advice);
optional inputs add the per-modality evaluation, the CPU sanity baseline, the production
champion and the exported models. One list of blocks (components.document) is rendered twice: report.md with its PNGs
beside it, and a self-contained report.html.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import PromotionConfig
from components.data.dataset_layout import has_modalities, modality_group
from components.document import Block, Bullets, Figure, Heading, Paragraph, table, to_html, to_markdown
from components.errors import UserError
from components.metrics.artifacts import Evaluation, Exports, read_json
from components.metrics.results_csv import METRICS, RunHistory, read_history
from components.metrics.run_metrics import ModelMetrics, best_model_metrics, sanity_metrics
from components.reporting.advice import Recommendation, assess, recommend
from components.reporting.analysis import OSCILLATION_DROP, Analysis, analyze
from components.training.outputs import TrainingMetrics


@dataclass(frozen=True)
class ReportResult:
    markdown: Path
    html: Path
    analysis: Analysis
    recommendations: tuple[Recommendation, ...]
    assessment: str


@dataclass(frozen=True)
class RunFiles:
    """Where a run's report inputs are: a results.csv, an ultralytics save dir, or a pogona working dir."""

    results: Path
    report_dir: Path
    sanity: Path | None = None
    evaluation: Path | None = None
    exports: Path | None = None


def find_run_files(run: Path) -> RunFiles:
    """Accept results.csv, an ultralytics run dir, or a pogona working dir (train/ + sanity/ + ...)."""
    if run.is_file():
        return RunFiles(results=run, report_dir=run.parent / "report")
    if (run / "results.csv").is_file():
        return RunFiles(results=run / "results.csv", report_dir=run / "report")
    if (run / "train" / "results.csv").is_file():
        def optional(relative: str) -> Path | None:
            return run / relative if (run / relative).is_file() else None

        return RunFiles(results=run / "train" / "results.csv", report_dir=run / "report",
                        sanity=optional("sanity/verdict.json"), evaluation=optional("evaluation/evaluation.json"),
                        exports=optional("exports/exports.json"))
    raise UserError(f"{run}: no results.csv there nor in {run / 'train'} (give a run dir or a results.csv)")


def _find_pr_curve(evaluation: Path | None) -> Path | None:
    if evaluation is None:
        return None
    candidates = sorted(path for path in Path(evaluation).parent.glob("*.png") if "pr_curve" in path.name.lower())
    return candidates[0] if candidates else None


_CHANGE_COLUMNS = ("images_added", "images_removed", "images_changed", "labels_added", "labels_removed",
                   "labels_edited")


def _changes_blocks(changes: dict[str, Any]) -> list[Block]:
    """Why this run trained: the dataset's changes since the champion's snapshot (components.data.changes)."""
    blocks: list[Block] = [Heading("What changed since the champion"),
                           Paragraph(f"Compared with {changes['baseline']}.")]
    groups = changes["groups"]
    if groups:
        per_modality = has_modalities(g["modality"] for g in groups)  # else one group per split
        modality = ("modality",) if per_modality else ()
        blocks.append(table(("split", *modality, *(c.replace("_", " ") for c in _CHANGE_COLUMNS)),
                             [(g["split"], *((modality_group(g["modality"]),) if per_modality else ()),
                               *(g[c] for c in _CHANGE_COLUMNS)) for g in groups]))
    if changes["names_before"] != changes["names_after"]:
        before, after = (", ".join(f"{index}: {name}" for index, name in sorted(names.items(), key=lambda i: int(i[0])))
                         for names in (changes["names_before"], changes["names_after"]))
        blocks.append(Paragraph(f"Class names were {before}; now {after}."))
    if changes["compared"] and not changes["groups"] and changes["names_before"] == changes["names_after"]:
        blocks.append(Paragraph("No image, label or class name differs from that snapshot."))
    return blocks


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report says, read and judged; each section of the report is drawn from it."""

    results: Path
    history: RunHistory
    analysis: Analysis
    recommendations: tuple[Recommendation, ...]
    assessment: str
    model: ModelMetrics
    training: TrainingMetrics | None = None
    evaluation: Evaluation | None = None
    evaluation_path: Path | None = None
    exports: Exports | None = None
    sanity: dict[str, Any] | None = None
    champion: dict[str, Any] | None = None
    changes: dict[str, Any] | None = None


def _summary_blocks(inputs: ReportInputs) -> list[Block]:
    args, analysis = inputs.history.args, inputs.analysis
    return [Heading("Training report", 1), Paragraph(
        f"Source: {inputs.results}. Model {args.get('model', '?')}, imgsz {args.get('imgsz', '?')}, epochs "
        f"{analysis.epochs_run} run of {args.get('epochs', '?')} configured, patience {args.get('patience', '?')}, "
        f"optimizer {args.get('optimizer', '?')}, lr0 {args.get('lr0', '?')}, batch {args.get('batch', '?')}."),
        Heading("Overall assessment"), Paragraph(inputs.assessment)]


def _weights_text(uri: str | None, path: str | None) -> str:
    return uri or path or "?"


def _setup_blocks(inputs: ReportInputs) -> list[Block]:
    """Where the run started from and what it ran on: the base weights, the batch plan, the devices."""
    training, evaluation, exports = inputs.training, inputs.evaluation, inputs.exports
    lines: list[str] = []
    weights = training.base_weights if training else None
    used = _weights_text(weights.uri, weights.path) if weights else ""
    if weights and not weights.pretrained:
        lines.append(f"Warning: trained from scratch (`{used}`, no pretrained weights): from-scratch "
                     "training needs far more epochs than the field notes' figures, which assume COCO-pretrained "
                     "weights. Stage them with `pogona weights stage <model>.pt --store <store>`, or bake them "
                     "into the images.")
    elif weights:
        lines.append(f"Base weights: `{used}` ({weights.source or '?'}).")
    started = (inputs.sanity or {}).get("base_weights")
    if weights and started and _weights_text(started.get("uri"), started.get("path")) != used:
        lines.append(f"The sanity gate started from `{_weights_text(started.get('uri'), started.get('path'))}`, "
                     f"training from `{used}`.")
    plan = training.batch_plan if training else None
    if plan:
        lines.append(f"Batch {plan.batch} ({plan.reason}): {plan.optimizer_steps_per_epoch:g} optimizer "
                     f"steps per epoch; warm-up {plan.warmup_epochs:g} epochs ({plan.warmup_share:.0%} of the run).")
    if training and training.device:
        device = str(training.device)  # ultralytics' spelling: "cpu", or GPU indices such as "0" or "0,1"
        lines.append(f"Trained on {'cuda:' + device if device[0].isdigit() else device}.")
    if evaluation and evaluation.device:
        lines.append(f"Evaluated on {evaluation.device} (speed_ms was measured there).")
    if exports and exports.device:
        lines.append(f"Exported by ultralytics on {exports.device}; ONNX and INT8 accuracy and latency measured "
                     "with ONNX Runtime on the CPU.")
    return [Heading("How it was trained"), Bullets(tuple(lines))] if lines else []


def _recommendation_blocks(inputs: ReportInputs) -> list[Block]:
    recommendations = inputs.recommendations
    return [Heading("Recommendations"),
            Bullets(tuple(f"{r.action} (because {r.trigger})" for r in recommendations)) if recommendations
            else Paragraph("None: no number in this run calls for a change.")]


def _history_blocks(analysis: Analysis) -> list[Block]:
    """What results.csv says: losses, metrics, the learning rate and convergence."""
    blocks: list[Block] = [
        Heading("Losses"), table(("loss", "start", "final", "change %", "trend"),
                                 [(s.column, s.start, s.final, f"{s.change_pct:+.1f}", s.trend) for s in analysis.losses]),
        Heading("Metrics"), table(("metric", "best", "best epoch", "final"),
                                  [(m.key, m.best, m.best_epoch, m.final) for m in analysis.metrics.values()])]
    lr = analysis.learning_rate
    if lr is not None:
        verdict = {True: "matches the configured schedule", False: "does NOT match the configured schedule",
                   None: "cannot be compared (no configured schedule or too few epochs)"}[lr.matches]
        blocks += [Heading("Learning rate"), Paragraph(
            f"Started at {lr.start:.6g}, ended at {lr.end:.6g}. Configured: {lr.configured or 'unknown'}; "
            f"after warm-up the curve looks {lr.observed}, which {verdict}.")]
    conv = analysis.convergence
    if conv is not None:
        blocks += [Heading("Convergence"), Bullets((
            f"First epoch within 1% of the best mAP50-95: {conv.converged_epoch}; recommended epoch count "
            f"{conv.recommended_epochs} (20% headroom, at least 5).",
            f"Early stopping: {'fired' if conv.early_stopped else 'did not fire'} ({conv.epochs_run} epochs run of "
            f"{conv.epochs_configured if conv.epochs_configured is not None else '?'}, patience "
            f"{conv.patience if conv.patience is not None else '?'}).",
            f"Oscillation: {conv.swings} mAP50-95 drops above {OSCILLATION_DROP:.0%} of the best "
            f"(largest {conv.largest_swing:.3f}).",
            f"Overfitting: {'yes' if conv.overfitting else 'no'} (validation loss minimum at epoch "
            f"{conv.val_loss_min_epoch}, {conv.val_loss_rise_pct:+.1f}% since; training loss "
            f"{conv.train_loss_change_pct:+.1f}% over the same epochs)."))]
    return blocks


def _modality_blocks(inputs: ReportInputs) -> list[Block]:
    """The evaluation per modality (none for a dataset without modalities), then its worst validation images
    (components.evaluation.failures), drawn."""
    evaluation = inputs.evaluation
    if evaluation is None:
        return [Heading("Per modality"), Paragraph("No evaluation given: per-modality numbers are absent.")]
    modalities = evaluation.by_modality
    blocks: list[Block] = [Heading("Per modality"), table(
        ("modality", *METRICS), [(name, *(scores.values().get(key) for key in METRICS))
                                 for name, scores in sorted(modalities.items())])] if modalities else []
    if evaluation.worst_images is None or inputs.evaluation_path is None:
        return blocks
    blocks += [Heading("Where the model fails"), Paragraph(
        "The validation images with the most missed heads and false detections (confidence 0.25 or more, "
        f"IoU 0.5){', per modality' if modalities else ''}. Ground truth in green, thick where missed; detections "
        "in blue; false detections in red; numbers are confidences.")]
    worst = evaluation.worst_images
    shown = ({group: worst.get(group, ()) for group in sorted(set(worst) | set(modalities))} if modalities
             else {"": tuple(record for records in worst.values() for record in records)})  # one group, no heading
    for group, records in shown.items():
        if group:
            blocks.append(Heading(group, 3))
        if not records:
            blocks.append(Paragraph("No validation image has a missed head or a false detection."))
        blocks += [Figure(f"worst-{Path(r.drawing).name}", r.caption,
                          (inputs.evaluation_path.parent / r.drawing).read_bytes()) for r in records]
    return blocks


def _comparison_blocks(inputs: ReportInputs) -> list[Block]:
    """This run's best.pt beside the CPU sanity baseline and the production champion."""
    sanity, champion, model = inputs.sanity, inputs.champion, inputs.model
    baseline = sanity_metrics(sanity)
    champion_metrics = (champion or {}).get("metrics") or {}
    blocks: list[Block] = [Heading("Compared with the sanity baseline and the production champion"), table(
        ("metric", f"this run ({model.source})", "CPU sanity (last epoch)",
         f"champion {champion.get('run_id', '')}" if champion else "champion"),
        [(key, model.values.get(key), baseline.get(key), champion_metrics.get(key)) for key in METRICS])]
    if sanity:
        blocks.append(Paragraph(f"Sanity verdict: {sanity.get('verdict', '?')} "
                                f"({sanity.get('wall_seconds', 0.0):.0f} s on {sanity.get('device', '?')})."))
    return blocks


def _export_blocks(exports: Exports | None) -> list[Block]:
    models = exports.models if exports else ()
    if not models:
        return [Heading("Exported models"), Paragraph("No exports given.")]
    return [Heading("Exported models"),
            table(("format", "file", "size MB", "mAP50", "mAP50-95", "latency ms/image"),
                  [(m.format, Path(m.file).name, m.size_bytes / 1e6, m.map50, m.map50_95, m.latency_ms)
                   for m in models]),
            Paragraph("On GPU nodes, TensorRT (`pogona export --formats engine`) is the faster option; "
                      "it needs CUDA and is built on the node that serves it.")]


def _plot_blocks(history: RunHistory, pr_curve: Path | None) -> list[Block]:
    # matplotlib only when a report is drawn: `pogona report --help` imports this module
    from components.reporting.plots import plot_learning_rate, plot_losses, plot_metrics

    epochs, columns = history.epochs, history.columns
    blocks: list[Block] = [Heading("Plots"),
                           Figure("losses.png", "Training and validation losses", plot_losses(epochs, columns)),
                           Figure("metrics.png", "Precision, recall and mAP per epoch", plot_metrics(epochs, columns))]
    if any(name.startswith("lr/") for name in columns):
        blocks.append(Figure("learning_rate.png", "Learning rate per epoch", plot_learning_rate(epochs, columns)))
    blocks.append(Figure("pr_curve.png", "Precision-recall curve (evaluation)", pr_curve.read_bytes())
                  if pr_curve else Figure("pr_curve.png", "PR curve absent: no evaluation PR-curve image was given."))
    return blocks


def _compose(inputs: ReportInputs) -> list[Block]:
    """The report's sections in reading order: verdict and advice first, evidence after."""
    return [*_summary_blocks(inputs), *_setup_blocks(inputs),
            *(_changes_blocks(inputs.changes) if inputs.changes is not None else []),
            *_recommendation_blocks(inputs), *_history_blocks(inputs.analysis), *_modality_blocks(inputs),
            *_comparison_blocks(inputs), *_export_blocks(inputs.exports),
            *_plot_blocks(inputs.history, _find_pr_curve(inputs.evaluation_path))]


def _read_inputs(results: Path, sanity: Path | None, champion: Path | None, evaluation: Path | None,
                 exports: Path | None, promotion: PromotionConfig, changes: Path | None) -> ReportInputs:
    """Read every input file (each error names its file), analyze the history and judge the run."""
    results = find_run_files(Path(results)).results
    history = read_history(results)
    analysis = analyze(history)
    evaluation_record, exports_record = Evaluation.load(evaluation), Exports.load(exports)
    sanity_data, champion_data = read_json(sanity, "sanity verdict"), read_json(champion, "production champion")
    training = TrainingMetrics.beside(results)
    model = best_model_metrics(results, evaluation_record, training)
    return ReportInputs(
        results, history, analysis, recommend(analysis, evaluation_record, exports_record),
        assess(analysis, model.values, sanity_data, champion_data, promotion.min_map50), model, training,
        evaluation_record, Path(evaluation) if evaluation else None, exports_record, sanity_data, champion_data,
        read_json(changes, "dataset changes"))


def write_report(results: Path, out_dir: Path, sanity: Path | None = None, champion: Path | None = None,
                 evaluation: Path | None = None, exports: Path | None = None,
                 promotion: PromotionConfig = PromotionConfig(), changes: Path | None = None) -> ReportResult:
    """Analyze results.csv (+ the optional inputs) and write report.md, its PNGs and a self-contained report.html.

    `results` may also be the run dir holding results.csv; `changes` is the dataset's changes since the
    champion's snapshot (components.data.changes), which say why the run trained.
    """
    inputs = _read_inputs(results, sanity, champion, evaluation, exports, promotion, changes)
    blocks = _compose(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for block in blocks:
        if isinstance(block, Figure) and block.png is not None:
            (out_dir / block.name).write_bytes(block.png)
    markdown, page = out_dir / "report.md", out_dir / "report.html"
    markdown.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks, f"Training report: {inputs.results.parent.name}"))
    return ReportResult(markdown, page, inputs.analysis, inputs.recommendations, inputs.assessment)
