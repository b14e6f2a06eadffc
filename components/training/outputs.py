"""What a finished training leaves for the steps after it: metrics.json (TrainingMetrics) and the TrainResult.

A run that trained to the end and one that an earlier attempt trained (completed on resume)
end here the same way, so their outputs cannot differ.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.config import TrainConfig
from components.metrics.artifacts import load_record, parse_record
from components.metrics.results_csv import EPOCH_COLUMNS, per_epoch, read_history, summarize_metrics
from components.training.batch_policy import BatchPlan
from components.training.weights import BaseWeights


METRICS_JSON = "metrics.json"  # beside results.csv


@dataclass(frozen=True)
class TrainingMetrics:
    """metrics.json: the final validation of best.pt and how the run went. Runs of older versions lack
    some fields (None); `config` and `hyperparameters` are the run's configuration and args.yaml as given."""

    metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    epochs_completed: int | None = None
    epochs_requested: int | None = None
    early_stopped: bool | None = None
    device: str | None = None  # ultralytics' spelling: "cpu", or GPU indices such as "0" or "0,1"
    config: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    base_weights: BaseWeights | None = None
    batch_plan: BatchPlan | None = None

    @classmethod
    def from_json(cls, document: Any, where: str) -> TrainingMetrics:
        def build(doc: dict[str, Any]) -> TrainingMetrics:
            weights, plan = doc.get("base_weights"), doc.get("batch_plan")
            return cls(doc.get("metrics") or {}, doc.get("best_epoch"), doc.get("epochs_completed"),
                       doc.get("epochs_requested"), doc.get("early_stopped"), doc.get("device"), doc.get("config"),
                       doc.get("hyperparameters"), BaseWeights(**weights) if weights else None,
                       _batch_plan(plan) if plan else None)
        return parse_record(document, where, "training metrics", build)

    @classmethod
    def beside(cls, results_csv: Path) -> TrainingMetrics | None:
        """The metrics.json training writes beside results.csv (None for a bare ultralytics run)."""
        path = Path(results_csv).parent / METRICS_JSON
        return load_record(path, "training metrics", cls.from_json) if path.is_file() else None

    def to_json(self) -> dict[str, Any]:
        return {**{name: value for name, value in self.__dict__.items() if value is not None},
                "base_weights": asdict(self.base_weights) if self.base_weights else None,
                "batch_plan": asdict(self.batch_plan) if self.batch_plan else None}


def _batch_plan(record: dict[str, Any]) -> BatchPlan:
    """A recorded batch plan; fields a plan of an older version lacks read as 0."""
    return BatchPlan(**{**{name: 0 for name in BatchPlan.__dataclass_fields__}, **record})


@dataclass(frozen=True)
class TrainResult:
    best: Path
    last: Path
    results_csv: Path
    args_yaml: Path
    metrics_json: Path
    epochs_completed: int
    metrics: dict[str, float] = field(default_factory=dict)


def read_results(results_csv: Path) -> list[dict[str, float]]:
    """Per-epoch losses and metrics from ultralytics' results.csv, under the verdict/report names."""
    return per_epoch(read_history(results_csv)) if results_csv.is_file() else []


def write_outputs(metrics_source: dict[str, Any], trained_epochs: int, out_dir: Path, config: TrainConfig,
                  device: str, base_weights: BaseWeights, batch_plan: BatchPlan | None = None) -> TrainResult:
    """metrics.json and the TrainResult from the save dir and the final validation of best.pt."""
    history = read_history(out_dir / "results.csv")
    epochs = len(history.epochs)
    best = summarize_metrics(history).get("map50_95")
    names = {column: name for name, column in EPOCH_COLUMNS.items()}
    metrics = {names.get(key, key): float(value) for key, value in metrics_source.items() if _is_number(value)}
    summary = TrainingMetrics(
        metrics=metrics, best_epoch=best.best_epoch if best else 0, epochs_completed=epochs,
        epochs_requested=trained_epochs, early_stopped=epochs < trained_epochs, device=device,
        config=asdict(config), hyperparameters=history.args, base_weights=base_weights, batch_plan=batch_plan)
    metrics_json = out_dir / METRICS_JSON
    metrics_json.write_text(json.dumps(summary.to_json(), indent=2, default=str) + "\n")
    return TrainResult(best=out_dir / "weights" / "best.pt", last=out_dir / "weights" / "last.pt",
                       results_csv=out_dir / "results.csv", args_yaml=out_dir / "args.yaml",
                       metrics_json=metrics_json, epochs_completed=epochs, metrics=metrics)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
