"""What a finished training leaves for the steps after it: metrics.json and the TrainResult naming its files.

A run that trained to the end and one that an earlier attempt trained (completed on resume)
end here the same way, so their outputs cannot differ.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.training.batch_policy import BatchPlan
from components.config import TrainConfig
from components.metrics.results_csv import EPOCH_COLUMNS, per_epoch, read_history, summarize_metrics
from components.training.weights import BaseWeights


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
    summary = {
        "metrics": metrics, "best_epoch": best.best_epoch if best else 0, "epochs_completed": epochs,
        "epochs_requested": trained_epochs, "early_stopped": epochs < trained_epochs,
        "device": device, "config": asdict(config), "hyperparameters": history.args,
        "base_weights": base_weights.record(), "batch_plan": asdict(batch_plan) if batch_plan else None,
    }
    metrics_json = out_dir / "metrics.json"
    metrics_json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return TrainResult(best=out_dir / "weights" / "best.pt", last=out_dir / "weights" / "last.pt",
                       results_csv=out_dir / "results.csv", args_yaml=out_dir / "args.yaml",
                       metrics_json=metrics_json, epochs_completed=epochs, metrics=metrics)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
