"""What a run's history says: losses, learning rate, convergence and whether the run learned at all.

Computed from ultralytics' own `results.csv` (and `args.yaml` beside it when present), so it
works on any ultralytics detection run, not only ours; the advice and the report build on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from components.metrics.results_csv import LOSS_KINDS, METRICS, MetricSummary, RunHistory, summarize_metrics
from components.training.deadrun import Verdict

LOSS_COLUMNS = tuple(f"{split}/{kind}" for split in ("train", "val") for kind in LOSS_KINDS)
TREND_THRESHOLD_PCT = 5.0      # a loss that moved less than this (percent) is "flat"
CONVERGED_WITHIN = 0.01        # "converged" = first epoch within 1% of the best mAP50-95
OSCILLATION_DROP = 0.05        # an epoch-to-epoch mAP50-95 drop above 5% of the best is a swing
OVERFIT_RISE_PCT = 5.0         # validation loss this far above its minimum while training loss falls
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
    status: Verdict
    losses: tuple[LossSummary, ...]
    metrics: dict[str, MetricSummary]
    learning_rate: LearningRateSummary | None
    convergence: Convergence | None


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


def _status(history: RunHistory, losses: Sequence[LossSummary], metrics: dict[str, MetricSummary]) -> Verdict:
    """Dead (all training losses 0/NaN, seed 004), not learning (no useful mAP50 or box loss not falling), or healthy."""
    train_losses = [values for name, values in history.columns.items() if name.startswith("train/")]
    if train_losses and all(not math.isfinite(v) or v == 0 for values in train_losses for v in values):
        return Verdict.DEAD
    box = next((loss for loss in losses if loss.column == "train/box_loss"), None)
    best_map50 = metrics["map50"].best if "map50" in metrics else 0.0
    if best_map50 < NOT_LEARNING_MAP50 or (box is not None and box.trend != "falling"):
        return Verdict.NOT_LEARNING
    return Verdict.HEALTHY


def analyze(history: RunHistory) -> Analysis:
    losses, metrics = summarize_losses(history), summarize_metrics(history)
    return Analysis(len(history.epochs), _status(history, losses, metrics), losses, metrics,
                    analyze_learning_rate(history), analyze_convergence(history))
