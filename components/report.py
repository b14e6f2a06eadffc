"""The training report: the analysis an engineer used to write by hand (seed 000), computed from results.csv.

Everything comes from ultralytics' own `results.csv` (and `args.yaml` beside it when present),
so the report works on any ultralytics detection run, not only ours. Optional inputs add the
per-modality evaluation, the CPU sanity baseline, the production champion and the exported
models. Every recommendation and the overall assessment carry the number that triggered them,
so a failed run reads as failed.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

from components.config import PromotionConfig
from components.errors import UserError
from components.results_csv import LOSS_KINDS, METRICS, MetricSummary, RunHistory, read_history, summarize_metrics

LOSS_COLUMNS = tuple(f"{split}/{kind}" for split in ("train", "val") for kind in LOSS_KINDS)
TREND_THRESHOLD_PCT = 5.0      # a loss that moved less than this (percent) is "flat"
CONVERGED_WITHIN = 0.01        # "converged" = first epoch within 1% of the best mAP50-95
OSCILLATION_DROP = 0.05        # an epoch-to-epoch mAP50-95 drop above 5% of the best is a swing
OVERFIT_RISE_PCT = 5.0         # validation loss this far above its minimum while training loss falls
WEAK_MODALITY_GAP = 0.05       # mAP50-95 gap between modalities that calls for more data
INT8_TOLERANCE = 0.02          # INT8 may lose this much mAP50-95 against FP32 and still be recommended
SCHEDULE_FIT_TOLERANCE = 0.15  # relative RMS error under which an LR curve "looks like" a schedule
NOT_LEARNING_MAP50 = 0.1       # a run whose best mAP50 stays below this learned nothing useful


@dataclass(frozen=True)
class LossSummary:
    column: str
    start: float
    final: float
    change_pct: float
    trend: str


@dataclass(frozen=True)
class LearningRateSummary:
    start: float
    end: float
    configured: str | None
    observed: str
    matches: bool | None


@dataclass(frozen=True)
class Convergence:
    epochs_run: int
    epochs_configured: int | None
    patience: int | None
    converged_epoch: int
    recommended_epochs: int
    early_stopped: bool
    swings: int
    largest_swing: float
    overfitting: bool
    val_loss_min_epoch: int
    val_loss_rise_pct: float
    train_loss_change_pct: float


@dataclass(frozen=True)
class Analysis:
    epochs_run: int
    status: str
    losses: tuple[LossSummary, ...]
    metrics: dict[str, MetricSummary]
    learning_rate: LearningRateSummary | None
    convergence: Convergence | None


@dataclass(frozen=True)
class Recommendation:
    action: str
    trigger: str


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


def _change_pct(start: float, final: float) -> float:
    return (final - start) / abs(start) * 100 if start else 0.0


def summarize_losses(history: RunHistory) -> tuple[LossSummary, ...]:
    summaries = []
    for column in LOSS_COLUMNS:
        values = history.columns.get(column)
        if not values:
            continue
        change = _change_pct(values[0], values[-1])
        trend = "flat" if abs(change) < TREND_THRESHOLD_PCT else ("falling" if change < 0 else "rising")
        summaries.append(LossSummary(column, values[0], values[-1], change, trend))
    return tuple(summaries)


def _schedule(name: str, epoch_index: int, total: int, lrf: float) -> float:
    """Ultralytics' LR factor at a 0-based epoch: `one_cycle` for cos_lr, else linear decay to lrf."""
    if name == "cosine":
        return max((1 - math.cos(epoch_index * math.pi / total)) / 2, 0) * (lrf - 1) + 1
    return max(1 - epoch_index / total, 0) * (1 - lrf) + lrf


def _observed_schedule(points: Sequence[tuple[int, float]], total: int, lrf: float) -> str:
    """Which schedule the post-warm-up LR values follow, by relative fit error with a fitted scale."""
    if len(points) < 3:
        return "too short to tell"
    values = [value for _, value in points]
    if max(values) / min(values) < 1.02:
        return "constant"
    errors = {}
    for name in ("cosine", "linear"):
        curve = [_schedule(name, index, total, lrf) for index, _ in points]
        scale = sum(v * c for v, c in zip(values, curve)) / sum(c * c for c in curve)
        errors[name] = math.sqrt(sum(((v - scale * c) / (scale * c)) ** 2 for v, c in zip(values, curve)) / len(curve))
    best = min(errors, key=errors.get)
    return best if errors[best] < SCHEDULE_FIT_TOLERANCE else "irregular"


def analyze_learning_rate(history: RunHistory) -> LearningRateSummary | None:
    values = history.columns.get("lr/pg0")
    if not values:
        return None
    args = history.args
    configured = None if "cos_lr" not in args else ("cosine" if args["cos_lr"] else "linear")
    total = int(args.get("epochs") or len(values))
    warmup = math.ceil(float(args.get("warmup_epochs", 3)))
    points = [(epoch - 1, value) for epoch, value in zip(history.epochs, values)
              if epoch > warmup and math.isfinite(value) and value > 0]
    observed = _observed_schedule(points, total, float(args.get("lrf", 0.01)))
    matches = None if configured is None or observed == "too short to tell" else observed == configured
    return LearningRateSummary(values[0], values[-1], configured, observed, matches)


def _total(history: RunHistory, split: str) -> list[float]:
    parts = [history.columns[f"{split}/{kind}"] for kind in LOSS_KINDS if f"{split}/{kind}" in history.columns]
    return [sum(values) for values in zip(*parts)]


def analyze_convergence(history: RunHistory) -> Convergence | None:
    """Convergence epoch, early stopping, metric swings and overfitting from the mAP50-95 and loss curves."""
    scores = history.columns.get(METRICS["map50_95"])
    if not scores:
        return None
    epochs, args = history.epochs, history.args
    best = max(score for score in scores if math.isfinite(score)) if any(map(math.isfinite, scores)) else 0.0
    converged_index = next((i for i, score in enumerate(scores) if score >= best * (1 - CONVERGED_WITHIN)), 0)
    converged_epoch = epochs[converged_index]
    configured = int(args["epochs"]) if args.get("epochs") else None
    headroom = max(5, math.ceil(0.2 * converged_epoch))
    recommended = min(configured or epochs[-1], converged_epoch + headroom)
    drops = [previous - current for previous, current in zip(scores, scores[1:])
             if best > 0 and previous - current > OSCILLATION_DROP * best]

    train, val = _total(history, "train"), _total(history, "val")
    overfitting, min_index, rise, train_change = False, 0, 0.0, 0.0
    if train and val:
        min_index = min(range(len(val)), key=val.__getitem__)
        rise = _change_pct(val[min_index], val[-1])
        train_change = _change_pct(train[min_index], train[-1])
        overfitting = rise > OVERFIT_RISE_PCT and train_change < 0
    return Convergence(
        epochs_run=len(epochs), epochs_configured=configured,
        patience=int(args["patience"]) if args.get("patience") is not None else None,
        converged_epoch=converged_epoch, recommended_epochs=recommended,
        early_stopped=configured is not None and epochs[-1] < configured,
        swings=len(drops), largest_swing=max(drops, default=0.0),
        overfitting=overfitting, val_loss_min_epoch=epochs[min_index],
        val_loss_rise_pct=rise, train_loss_change_pct=train_change)


def _status(history: RunHistory, losses: Sequence[LossSummary], metrics: dict[str, MetricSummary]) -> str:
    """'dead' (all training losses 0/NaN, seed 004), 'not learning' (no useful mAP50 or box loss not falling), or 'learned'."""
    train_losses = [values for name, values in history.columns.items() if name.startswith("train/")]
    if train_losses and all(not math.isfinite(v) or v == 0 for values in train_losses for v in values):
        return "dead"
    box = next((loss for loss in losses if loss.column == "train/box_loss"), None)
    best_map50 = metrics["map50"].best if "map50" in metrics else 0.0
    if best_map50 < NOT_LEARNING_MAP50 or (box is not None and box.trend != "falling"):
        return "not learning"
    return "learned"


def analyze(history: RunHistory) -> Analysis:
    losses, metrics = summarize_losses(history), summarize_metrics(history)
    return Analysis(len(history.epochs), _status(history, losses, metrics), losses, metrics,
                    analyze_learning_rate(history), analyze_convergence(history))


def read_json(path: Path | None, what: str) -> dict[str, Any] | None:
    """A JSON input file (None when not given); a missing or broken file is a UserError naming it."""
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what} file") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: the {what} is not valid JSON ({exc})") from None


def _export_pair(exports: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    models = {model["format"]: model for model in (exports or {}).get("models", [])}
    if "onnx" in models and "int8" in models and models["int8"].get("map50_95") is not None:
        return models["onnx"], models["int8"]
    return None


def recommend(analysis: Analysis, evaluation: dict[str, Any] | None,
              exports: dict[str, Any] | None) -> tuple[Recommendation, ...]:
    """Actions derived from the numbers; each names the value that triggered it."""
    if analysis.status == "dead":
        return (Recommendation(
            "Do not use these weights. Re-run the CPU sanity gate and train on CUDA (never MPS); check AMP.",
            f"every training loss was 0 or NaN for all {analysis.epochs_run} epochs"),)
    if analysis.status == "not learning":
        return (Recommendation(
            "Do not use these weights. Check the labels against the images, then train longer or from "
            "pretrained weights.", _not_learning_trigger(analysis)),)
    found: list[Recommendation] = []
    conv = analysis.convergence
    if conv is not None:
        if conv.converged_epoch <= 0.8 * conv.epochs_run and not conv.early_stopped:
            found.append(Recommendation(
                f"Train for about {conv.recommended_epochs} epochs instead of {conv.epochs_configured or conv.epochs_run}.",
                f"mAP50-95 was within 1% of its best ({analysis.metrics['map50_95'].best:.3f}) from epoch "
                f"{conv.converged_epoch} of {conv.epochs_run}"))
            if conv.patience is not None and conv.epochs_run - conv.converged_epoch > conv.patience:
                found.append(Recommendation(
                    f"Lower patience below {conv.patience} or rely on the epoch cap: gains under 1% kept "
                    f"resetting it.",
                    f"a {conv.epochs_run - conv.converged_epoch}-epoch plateau did not trigger early stopping "
                    f"(patience {conv.patience})"))
        if conv.early_stopped:
            found.append(Recommendation(
                f"Set epochs to about {conv.recommended_epochs}: early stopping ended the run well before the cap.",
                f"stopped at epoch {conv.epochs_run} of {conv.epochs_configured} (patience {conv.patience}); "
                f"mAP50-95 within 1% of its best from epoch {conv.converged_epoch}"))
        if conv.converged_epoch == conv.epochs_run and conv.epochs_run > 1 and not conv.early_stopped:
            found.append(Recommendation(
                "Train longer: the metrics were still improving when the run ended.",
                f"best mAP50-95 {analysis.metrics['map50_95'].best:.3f} came at the last epoch ({conv.epochs_run})"))
        if conv.overfitting:
            found.append(Recommendation(
                "Add data augmentation (or more data) and stop near the validation-loss minimum.",
                f"validation loss rose {conv.val_loss_rise_pct:.1f}% after its minimum at epoch "
                f"{conv.val_loss_min_epoch} while training loss changed {conv.train_loss_change_pct:.1f}%"))
        if conv.swings >= 2:
            found.append(Recommendation(
                "Lower lr0 or raise the batch size to steady the optimisation.",
                f"mAP50-95 dropped by more than {OSCILLATION_DROP:.0%} of its best {conv.swings} times "
                f"(largest drop {conv.largest_swing:.3f})"))
    modalities = (evaluation or {}).get("by_modality", {})
    scored = {name: values["map50_95"] for name, values in modalities.items()
              if isinstance(values, dict) and values.get("map50_95") is not None}
    if len(scored) >= 2:
        weak, strong = min(scored, key=scored.get), max(scored, key=scored.get)
        if scored[strong] - scored[weak] > WEAK_MODALITY_GAP:
            found.append(Recommendation(
                f"Label more {weak} images: that modality is the weak one.",
                f"{weak} mAP50-95 {scored[weak]:.3f} vs {strong} {scored[strong]:.3f}"))
    pair = _export_pair(exports)
    if pair:
        fp32, int8 = pair
        loss = fp32["map50_95"] - int8["map50_95"]
        speed = f", {int8['latency_ms']:.1f} vs {fp32['latency_ms']:.1f} ms/image" if int8.get("latency_ms") else ""
        if loss <= INT8_TOLERANCE:
            found.append(Recommendation(
                "Deploy the INT8 ONNX model on CPU: its accuracy holds.",
                f"INT8 mAP50-95 {int8['map50_95']:.3f} vs FP32 {fp32['map50_95']:.3f}{speed}"))
        else:
            found.append(Recommendation(
                "Deploy the FP32 ONNX model: INT8 costs too much accuracy.",
                f"INT8 mAP50-95 {int8['map50_95']:.3f} vs FP32 {fp32['map50_95']:.3f} "
                f"(loses {loss:.3f} > {INT8_TOLERANCE})"))
    return tuple(found)


def _not_learning_trigger(analysis: Analysis) -> str:
    best = analysis.metrics["map50"].best if "map50" in analysis.metrics else 0.0
    box = next((loss for loss in analysis.losses if loss.column == "train/box_loss"), None)
    loss_text = f", training box loss {box.start:.3f} -> {box.final:.3f} ({box.trend})" if box else ""
    return f"best mAP50 only {best:.3f} after {analysis.epochs_run} epochs{loss_text}"


def headline_metrics(evaluation: dict[str, Any] | None, metrics: dict[str, MetricSummary]) -> dict[str, float]:
    """The run's metrics (report and promotion): the evaluation of best.pt when it has overall figures, else
    results.csv at each metric's best epoch."""
    if evaluation and evaluation.get("overall"):
        return {key: float(value) for key, value in evaluation["overall"].items() if key in METRICS}
    return {key: summary.best for key, summary in metrics.items()}


def assess(analysis: Analysis, evaluation: dict[str, Any] | None, sanity: dict[str, Any] | None,
           champion: dict[str, Any] | None, floor: float) -> str:
    """The 'Overall assessment' paragraph, each sentence driven by a number (a failed run reads as failed)."""
    if analysis.status == "dead":
        return (f"This run failed: every training loss stayed at 0 (or NaN) for all {analysis.epochs_run} epochs, "
                "so the model learned nothing and its metrics are meaningless. This is the signature of a silent "
                "backend failure (seed 004's MPS run); the weights must not be used.")
    if analysis.status == "not learning":
        return (f"This run did not learn: {_not_learning_trigger(analysis)}. The model is not usable; check the "
                "labels, the data and the training length.")
    metrics = headline_metrics(evaluation, analysis.metrics)
    map50, map50_95 = metrics.get("map50", 0.0), metrics.get("map50_95", 0.0)
    sentences = [f"This run reaches mAP50 {map50:.3f} and mAP50-95 {map50_95:.3f}, which "
                 + (f"meets the production floor of mAP50 {floor:.2f}." if map50 >= floor
                    else f"falls short of the production floor of mAP50 {floor:.2f} by {floor - map50:.3f}.")]
    conv = analysis.convergence
    if conv is not None:
        sentences.append(f"mAP50-95 settled within 1% of its best at epoch {conv.converged_epoch} of "
                         f"{conv.epochs_run}" + (" and early stopping ended the run." if conv.early_stopped else "."))
        sentences.append(
            f"Validation loss rose {conv.val_loss_rise_pct:.1f}% after epoch {conv.val_loss_min_epoch} while "
            "training loss kept falling: the model overfits." if conv.overfitting
            else "Training and validation losses fell together (no sign of overfitting).")
        sentences.append(f"The metrics swung {conv.swings} times (largest mAP50-95 drop {conv.largest_swing:.3f})."
                         if conv.swings >= 2 else "The metrics progressed without significant oscillation.")
    baseline = _sanity_metrics(sanity)
    if baseline:
        sentences.append(f"Against the CPU sanity baseline (mAP50 {baseline.get('map50', 0.0):.3f}) this is a change "
                         f"of {map50 - baseline.get('map50', 0.0):+.3f}.")
    if champion and champion.get("metrics", {}).get("map50_95") is not None:
        delta = map50_95 - float(champion["metrics"]["map50_95"])
        sentences.append(f"Against the production champion ({champion.get('run_id', 'unknown run')}, mAP50-95 "
                         f"{champion['metrics']['map50_95']:.3f}) it is {delta:+.3f} mAP50-95"
                         + (" better." if delta > 0 else ", not an improvement."))
    return " ".join(sentences)


def _sanity_metrics(sanity: dict[str, Any] | None) -> dict[str, float]:
    epochs = (sanity or {}).get("epochs") or []
    return {key: float(epochs[-1][key]) for key in METRICS if epochs and epochs[-1].get(key) is not None}


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
    """Why this run trained: the dataset's changes since the champion's snapshot (components.changes)."""
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
    """The evaluation's worst validation images per modality (components.failures), drawn."""
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


def _compose(history: RunHistory, analysis: Analysis, recommendations: Sequence[Recommendation],
             assessment: str, results: Path, evaluation: dict[str, Any] | None, sanity: dict[str, Any] | None,
             champion: dict[str, Any] | None, exports: dict[str, Any] | None,
             pr_curve: Path | None, changes: dict[str, Any] | None = None,
             failures: Sequence[Block] = ()) -> list[Block]:
    # matplotlib only when a report is drawn: publish and the CLI import this module for its readers
    from components.report_plots import plot_learning_rate, plot_losses, plot_metrics

    args = history.args
    blocks: list[Block] = [Heading("Training report", 1), Paragraph(
        f"Source: {results}. Model {args.get('model', '?')}, imgsz {args.get('imgsz', '?')}, epochs "
        f"{analysis.epochs_run} run of {args.get('epochs', '?')} configured, patience {args.get('patience', '?')}, "
        f"optimizer {args.get('optimizer', '?')}, lr0 {args.get('lr0', '?')}, batch {args.get('batch', '?')}.")]
    blocks += [Heading("Overall assessment"), Paragraph(assessment)]
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

    headline = headline_metrics(evaluation, analysis.metrics)
    baseline = _sanity_metrics(sanity)
    champion_metrics = (champion or {}).get("metrics") or {}
    blocks += [Heading("Compared with the sanity baseline and the production champion"), _table(
        ("metric", "this run" + (" (evaluation)" if evaluation else " (best epoch)"), "CPU sanity (last epoch)",
         f"champion {champion.get('run_id', '')}" if champion else "champion"),
        [(key, headline.get(key), baseline.get(key), champion_metrics.get(key)) for key in METRICS])]
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
    """Analyse results.csv (+ the optional inputs) and write report.md, its PNGs and a self-contained report.html.

    `results` may also be the run dir holding results.csv; `changes` is the dataset's changes since the
    champion's snapshot (components.changes), which say why the run trained.
    """
    results = find_run_files(Path(results)).results
    history = read_history(results)
    analysis = analyze(history)
    evaluation_data = read_json(evaluation, "evaluation")
    sanity_data = read_json(sanity, "sanity verdict")
    champion_data = read_json(champion, "production champion")
    exports_data = read_json(exports, "exports")
    recommendations = recommend(analysis, evaluation_data, exports_data)
    assessment = assess(analysis, evaluation_data, sanity_data, champion_data, promotion.min_map50)
    blocks = _compose(history, analysis, recommendations, assessment, Path(results), evaluation_data, sanity_data,
                      champion_data, exports_data, _find_pr_curve(evaluation), read_json(changes, "dataset changes"),
                      _failure_blocks(evaluation_data, evaluation))

    out_dir.mkdir(parents=True, exist_ok=True)
    for block in blocks:
        if isinstance(block, Figure) and block.png is not None:
            (out_dir / block.name).write_bytes(block.png)
    markdown, page = out_dir / "report.md", out_dir / "report.html"
    markdown.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks, f"Training report: {Path(results).parent.name}"))
    return ReportResult(markdown, page, analysis, recommendations, assessment)
