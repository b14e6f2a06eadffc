"""A run's metrics as its files record them: the JSON inputs, and the figures of the model it publishes.

Publish decides on these without the report, so a publish (or a nightly skip) never loads what
drawing a report needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.metrics.artifacts import Evaluation
from components.metrics.results_csv import METRICS, best_checkpoint_epoch, read_history

if TYPE_CHECKING:  # training's record; the metrics package is below the stages that write it
    from components.training.outputs import TrainingMetrics


@dataclass(frozen=True)
class ModelMetrics:
    """The figures of best.pt and the measurement they come from (the report names it)."""

    values: dict[str, float]
    source: str


def _ours(figures: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in figures.items() if key in METRICS and value is not None}


def best_model_metrics(results_csv: Path, evaluation: Evaluation | None,
                       training: TrainingMetrics | None) -> ModelMetrics:
    """What best.pt, the model a run publishes, measured: the evaluation's overall figures, else the final
    validation training wrote to metrics.json beside results.csv (`training`), else results.csv's row at the
    epoch ultralytics kept as best.pt. Always one measurement of one model, never each metric's best epoch."""
    overall = evaluation.overall.values() if evaluation else {}
    if overall:
        return ModelMetrics(overall, "evaluation")
    final = _ours(training.metrics) if training else {}
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
