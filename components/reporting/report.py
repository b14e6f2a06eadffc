"""The training report: the analysis an engineer used to write by hand (seed 000), written as Markdown and HTML.

The numbers come from the run's analysis (components.reporting.analysis) and advice (components.reporting.advice);
optional inputs add the per-modality evaluation, the CPU sanity baseline, the production
champion and the exported models. One list of blocks is rendered twice: report.md with its PNGs
beside it, and a self-contained report.html.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from components.reporting.advice import Recommendation, assess, recommend
from components.reporting.analysis import OSCILLATION_DROP, Analysis, analyze
from components.config import PromotionConfig
from components.errors import UserError
from components.metrics.results_csv import METRICS, RunHistory, read_history
from components.metrics.run_metrics import ModelMetrics, best_model_metrics, read_json, sanity_metrics, training_metrics


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


# --- rendering: one list of blocks, written both as Markdown and as self-contained HTML -------------

@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Figure:
    name: str
    caption: str
    png: bytes | None = field(default=None, repr=False)


Block = Union[Heading, Paragraph, Table, Bullets, Figure]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    return Table(tuple(header), tuple(tuple(_fmt(cell) for cell in row) for row in rows))


def to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif block.png is not None:
            lines += [f"![{block.caption}]({block.name})", ""]
        else:
            lines += [f"*{block.caption}*", ""]
    return "\n".join(lines)


def to_html(blocks: Sequence[Block], title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             "img{max-width:100%}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in block.header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows]
            parts.append("</table>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block.items) + "</ul>")
        elif block.png is not None:
            encoded = base64.b64encode(block.png).decode()
            mime = "image/jpeg" if block.name.endswith(".jpg") else "image/png"
            parts.append(f"<figure><img alt='{html.escape(block.caption)}' src='data:{mime};base64,{encoded}'>"
                         f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        else:
            parts.append(f"<p><em>{html.escape(block.caption)}</em></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


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
    if changes["groups"]:
        blocks.append(_table(("split", "modality", *(c.replace("_", " ") for c in _CHANGE_COLUMNS)),
                             [(g["split"], g["modality"], *(g[c] for c in _CHANGE_COLUMNS))
                              for g in changes["groups"]]))
    if changes["names_before"] != changes["names_after"]:
        before, after = (", ".join(f"{index}: {name}" for index, name in sorted(names.items(), key=lambda i: int(i[0])))
                         for names in (changes["names_before"], changes["names_after"]))
        blocks.append(Paragraph(f"Class names were {before}; now {after}."))
    if changes["compared"] and not changes["groups"] and changes["names_before"] == changes["names_after"]:
        blocks.append(Paragraph("No image, label or class name differs from that snapshot."))
    return blocks


def _failure_blocks(evaluation: dict[str, Any] | None, evaluation_path: Path | None) -> list[Block]:
    """The evaluation's worst validation images per modality (components.evaluation.failures), drawn."""
    worst = (evaluation or {}).get("worst_images")
    if worst is None or evaluation_path is None:
        return []
    blocks: list[Block] = [Heading("Where the model fails"), Paragraph(
        "The validation images with the most missed heads and false detections (confidence 0.25 or more, "
        "IoU 0.5), per modality. Ground truth in green, thick where missed; detections in blue; false "
        "detections in red; numbers are confidences.")]
    for modality in sorted(set(worst) | set((evaluation or {}).get("by_modality") or {})):
        records = worst.get(modality, [])
        blocks.append(Heading(modality, 3))
        if not records:
            blocks.append(Paragraph("No validation image has a missed head or a false detection."))
        blocks += [Figure(f"worst-{Path(r['drawing']).name}", r["caption"],
                          (Path(evaluation_path).parent / r["drawing"]).read_bytes()) for r in records]
    return blocks


def _weights_text(record: dict[str, Any]) -> str:
    return record.get("uri") or record.get("path") or "?"


def _setup_blocks(training: dict[str, Any] | None, sanity: dict[str, Any] | None,
                  evaluation: dict[str, Any] | None, exports: dict[str, Any] | None) -> list[Block]:
    """Where the run started from and what it ran on: the base weights, the batch plan, the devices."""
    lines: list[str] = []
    weights = (training or {}).get("base_weights")
    if weights and not weights.get("pretrained"):
        lines.append(f"Warning: trained from scratch (`{_weights_text(weights)}`, no pretrained weights): from-scratch "
                     "training needs far more epochs than the field notes' figures, which assume COCO-pretrained "
                     "weights. Stage them with `pogona weights stage <model>.pt --store <store>`, or bake them "
                     "into the images.")
    elif weights:
        lines.append(f"Base weights: `{_weights_text(weights)}` ({weights.get('source', '?')}).")
    started = (sanity or {}).get("base_weights")
    if weights and started and _weights_text(started) != _weights_text(weights):
        lines.append(f"The sanity gate started from `{_weights_text(started)}`, training from "
                     f"`{_weights_text(weights)}`.")
    plan = (training or {}).get("batch_plan")
    if plan:
        lines.append(f"Batch {plan['batch']} ({plan['reason']}): {plan['optimizer_steps_per_epoch']:g} optimizer "
                     f"steps per epoch; warm-up {plan['warmup_epochs']:g} epochs ({plan['warmup_share']:.0%} of "
                     "the run).")
    if training and training.get("device"):
        device = str(training["device"])  # ultralytics' spelling: "cpu", or GPU indices such as "0" or "0,1"
        lines.append(f"Trained on {'cuda:' + device if device[0].isdigit() else device}.")
    if evaluation and evaluation.get("device"):
        lines.append(f"Evaluated on {evaluation['device']} (speed_ms was measured there).")
    if exports and exports.get("device"):
        lines.append(f"Exported by ultralytics on {exports['device']}; ONNX and INT8 accuracy and latency measured "
                     "with ONNX Runtime on the CPU.")
    return [Heading("How it was trained"), Bullets(tuple(lines))] if lines else []


def _compose(history: RunHistory, analysis: Analysis, recommendations: Sequence[Recommendation],
             assessment: str, results: Path, model: ModelMetrics, evaluation: dict[str, Any] | None,
             sanity: dict[str, Any] | None,
             champion: dict[str, Any] | None, exports: dict[str, Any] | None,
             pr_curve: Path | None, changes: dict[str, Any] | None = None,
             failures: Sequence[Block] = (), training: dict[str, Any] | None = None) -> list[Block]:
    # matplotlib only when a report is drawn: `pogona report --help` imports this module
    from components.reporting.plots import plot_learning_rate, plot_losses, plot_metrics

    args = history.args
    blocks: list[Block] = [Heading("Training report", 1), Paragraph(
        f"Source: {results}. Model {args.get('model', '?')}, imgsz {args.get('imgsz', '?')}, epochs "
        f"{analysis.epochs_run} run of {args.get('epochs', '?')} configured, patience {args.get('patience', '?')}, "
        f"optimizer {args.get('optimizer', '?')}, lr0 {args.get('lr0', '?')}, batch {args.get('batch', '?')}.")]
    blocks += [Heading("Overall assessment"), Paragraph(assessment)]
    blocks += _setup_blocks(training, sanity, evaluation, exports)
    if changes is not None:
        blocks += _changes_blocks(changes)
    blocks += [Heading("Recommendations"), Bullets(tuple(f"{r.action} (because {r.trigger})" for r in recommendations))
               if recommendations else Paragraph("None: no number in this run calls for a change.")]

    blocks += [Heading("Losses"), _table(
        ("loss", "start", "final", "change %", "trend"),
        [(s.column, s.start, s.final, f"{s.change_pct:+.1f}", s.trend) for s in analysis.losses])]
    blocks += [Heading("Metrics"), _table(
        ("metric", "best", "best epoch", "final"),
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

    modalities = (evaluation or {}).get("by_modality") or {}
    blocks.append(Heading("Per modality"))
    blocks.append(_table(("modality", *METRICS), [(name, *(values.get(key) for key in METRICS))
                                                  for name, values in sorted(modalities.items())])
                  if modalities else Paragraph("No evaluation given: per-modality numbers are absent."))
    blocks += failures

    baseline = sanity_metrics(sanity)
    champion_metrics = (champion or {}).get("metrics") or {}
    blocks += [Heading("Compared with the sanity baseline and the production champion"), _table(
        ("metric", f"this run ({model.source})", "CPU sanity (last epoch)",
         f"champion {champion.get('run_id', '')}" if champion else "champion"),
        [(key, model.values.get(key), baseline.get(key), champion_metrics.get(key)) for key in METRICS])]
    if sanity:
        blocks.append(Paragraph(f"Sanity verdict: {sanity.get('verdict', '?')} "
                                f"({sanity.get('wall_seconds', 0.0):.0f} s on {sanity.get('device', '?')})."))

    models = (exports or {}).get("models") or []
    blocks.append(Heading("Exported models"))
    blocks.append(_table(("format", "file", "size MB", "mAP50", "mAP50-95", "latency ms/image"),
                         [(m["format"], Path(m["file"]).name, m.get("size_bytes", 0) / 1e6, m.get("map50"),
                           m.get("map50_95"), m.get("latency_ms")) for m in models])
                  if models else Paragraph("No exports given."))
    if models:
        blocks.append(Paragraph("On GPU nodes, TensorRT (`pogona export --formats engine`) is the faster option; "
                                "it needs CUDA and is built on the node that serves it."))

    columns = history.columns
    blocks += [Heading("Plots"),
               Figure("losses.png", "Training and validation losses", plot_losses(history.epochs, columns)),
               Figure("metrics.png", "Precision, recall and mAP per epoch", plot_metrics(history.epochs, columns))]
    if any(name.startswith("lr/") for name in columns):
        blocks.append(Figure("learning_rate.png", "Learning rate per epoch",
                             plot_learning_rate(history.epochs, columns)))
    blocks.append(Figure("pr_curve.png", "Precision-recall curve (evaluation)", pr_curve.read_bytes())
                  if pr_curve else Figure("pr_curve.png", "PR curve absent: no evaluation PR-curve image was given."))
    return blocks


def write_report(results: Path, out_dir: Path, sanity: Path | None = None, champion: Path | None = None,
                 evaluation: Path | None = None, exports: Path | None = None,
                 promotion: PromotionConfig = PromotionConfig(), changes: Path | None = None) -> ReportResult:
    """Analyze results.csv (+ the optional inputs) and write report.md, its PNGs and a self-contained report.html.

    `results` may also be the run dir holding results.csv; `changes` is the dataset's changes since the
    champion's snapshot (components.data.changes), which say why the run trained.
    """
    results = find_run_files(Path(results)).results
    history = read_history(results)
    analysis = analyze(history)
    evaluation_data = read_json(evaluation, "evaluation")
    sanity_data = read_json(sanity, "sanity verdict")
    champion_data = read_json(champion, "production champion")
    exports_data = read_json(exports, "exports")
    training = training_metrics(results)
    model = best_model_metrics(results, evaluation_data, training)
    recommendations = recommend(analysis, evaluation_data, exports_data)
    assessment = assess(analysis, model.values, sanity_data, champion_data, promotion.min_map50)
    blocks = _compose(history, analysis, recommendations, assessment, Path(results), model, evaluation_data,
                      sanity_data, champion_data, exports_data, _find_pr_curve(evaluation),
                      read_json(changes, "dataset changes"), _failure_blocks(evaluation_data, evaluation),
                      training)

    out_dir.mkdir(parents=True, exist_ok=True)
    for block in blocks:
        if isinstance(block, Figure) and block.png is not None:
            (out_dir / block.name).write_bytes(block.png)
    markdown, page = out_dir / "report.md", out_dir / "report.html"
    markdown.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks, f"Training report: {Path(results).parent.name}"))
    return ReportResult(markdown, page, analysis, recommendations, assessment)
