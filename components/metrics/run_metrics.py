"""A run's metrics as its files record them: the JSON inputs, and the figures of the model it publishes.

Publish decides on these without the report, so a publish (or a nightly skip) never loads what
drawing a report needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.errors import UserError
from components.metrics.results_csv import METRICS, best_checkpoint_epoch, read_history


@dataclass(frozen=True)
class ModelMetrics:
    """The figures of best.pt and the measurement they come from (the report names it)."""

    values: dict[str, float]
    source: str


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


def _ours(figures: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in figures.items() if key in METRICS and value is not None}


def training_metrics(results_csv: Path) -> dict[str, Any] | None:
    """metrics.json, which training writes beside results.csv (None for a bare ultralytics run)."""
    path = Path(results_csv).parent / "metrics.json"
    return read_json(path, "training metrics") if path.is_file() else None


def best_model_metrics(results_csv: Path, evaluation: dict[str, Any] | None,
                       training: dict[str, Any] | None) -> ModelMetrics:
    """What best.pt, the model a run publishes, measured: the evaluation's overall figures, else the final
    validation training wrote to metrics.json beside results.csv (`training`, from `training_metrics`), else results.csv's row at the epoch
    ultralytics kept as best.pt. Always one measurement of one model, never each metric's best epoch."""
    overall = _ours((evaluation or {}).get("overall") or {})
    if overall:
        return ModelMetrics(overall, "evaluation")
    final = _ours((training or {}).get("metrics") or {})
    if final:
        return ModelMetrics(final, "final validation")
    best = best_checkpoint_epoch(read_history(Path(results_csv)))
    if best is None:
        return ModelMetrics({}, "no mAP50-95 in results.csv")
    epoch, values = best
    return ModelMetrics(values, f"best epoch {epoch}")


def sanity_metrics(verdict: dict[str, Any] | None) -> dict[str, float]:
    """The CPU sanity run's metrics at its last epoch (empty without a verdict or epochs)."""
    epochs = (verdict or {}).get("epochs") or []
    return {key: float(epochs[-1][key]) for key in METRICS if epochs and epochs[-1].get(key) is not None}
