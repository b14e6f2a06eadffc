"""Ultralytics' results.csv: the one column map and the one parser that training, the sanity gate,
the report and publish share, so a metric means the same column everywhere."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.errors import UserError

LOSS_KINDS = ("box_loss", "cls_loss", "dfl_loss")
METRICS = {  # our metric key -> ultralytics results.csv column
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "map50": "metrics/mAP50(B)",
    "map50_95": "metrics/mAP50-95(B)",
}
EPOCH_COLUMNS = {**{kind: f"train/{kind}" for kind in LOSS_KINDS}, **METRICS}  # one epoch's figures by our names
# ultralytics keeps as best.pt the first epoch of highest fitness, which for detection is mAP50-95 alone
# (ultralytics 8.4, requirements.lock; 8.3 weighed in a tenth of mAP50)
FITNESS = "map50_95"


@dataclass(frozen=True)
class RunHistory:
    """results.csv as columns, plus args.yaml (empty when the run has none)."""

    epochs: tuple[int, ...]
    columns: dict[str, tuple[float, ...]]
    args: dict[str, Any]


@dataclass(frozen=True)
class MetricSummary:
    key: str
    best: float
    best_epoch: int
    final: float


def read_history(results: Path) -> RunHistory:
    """Parse results.csv (older ultralytics pads column names with spaces; bad cells read as NaN) and args.yaml."""
    try:
        with open(results, newline="") as handle:
            rows = [{key.strip(): value.strip() for key, value in row.items() if key}
                    for row in csv.DictReader(handle)]
    except FileNotFoundError:
        raise UserError(f"{results}: no such results.csv") from None
    if not rows or "epoch" not in rows[0]:
        raise UserError(f"{results}: not an ultralytics results.csv (no 'epoch' column or no rows)")

    def number(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return math.nan

    columns = {name: tuple(number(row.get(name, "")) for row in rows) for name in rows[0] if name != "epoch"}
    args_path = results.parent / "args.yaml"
    args = yaml.safe_load(args_path.read_text()) if args_path.is_file() else {}
    return RunHistory(tuple(int(float(row["epoch"])) for row in rows), columns, args or {})


def per_epoch(history: RunHistory) -> list[dict[str, float]]:
    """Each epoch's losses and metrics under our names (the sanity verdict's epochs)."""
    return [{name: history.columns[column][index] for name, column in EPOCH_COLUMNS.items()}
            for index in range(len(history.epochs))]


def _best_index(values: tuple[float, ...]) -> int:
    """The first index of the highest value; NaN never wins."""
    return max(range(len(values)), key=lambda i: (values[i] if math.isfinite(values[i]) else -1.0))


def summarize_metrics(history: RunHistory) -> dict[str, MetricSummary]:
    """Each metric's best value, the epoch it came at, and its final value."""
    summaries = {}
    for key, column in METRICS.items():
        values = history.columns.get(column)
        if not values:
            continue
        best_index = _best_index(values)
        summaries[key] = MetricSummary(key, values[best_index], history.epochs[best_index], values[-1])
    return summaries


def best_checkpoint_epoch(history: RunHistory) -> tuple[int, dict[str, float]] | None:
    """The epoch whose weights ultralytics kept as best.pt and that epoch's metrics (None without a fitness column).

    One row: each metric's own best epoch may differ, and no checkpoint reached that mix.
    """
    fitness = history.columns.get(METRICS[FITNESS])
    if not fitness:
        return None
    index = _best_index(fitness)
    return history.epochs[index], {key: history.columns[column][index] for key, column in METRICS.items()
                                   if column in history.columns}
