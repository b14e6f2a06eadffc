"""The report's figures, drawn from results.csv columns with matplotlib's Agg backend (no display needed).

Each function returns PNG bytes, so the same image can be written next to report.md and
embedded as base64 in the self-contained report.html.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402  (the backend must be chosen first)

from components.metrics.results_csv import LOSS_KINDS, METRICS  # noqa: E402

LEGEND = {"map50": "mAP50", "map50_95": "mAP50-95"}  # metric keys spelled as ultralytics prints them


def _png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _per_epoch(axis: Any) -> None:
    """The common frame of every per-epoch chart: epoch axis, legend, light grid."""
    axis.set_xlabel("epoch")
    axis.legend()
    axis.grid(alpha=0.3)


def plot_losses(epochs: Sequence[int], columns: Mapping[str, Sequence[float]]) -> bytes:
    """One panel per loss kind, training and validation curves together (overfitting shows as a gap)."""
    figure, axes = plt.subplots(1, len(LOSS_KINDS), figsize=(12, 3.5))
    for axis, kind in zip(axes, LOSS_KINDS):
        for split in ("train", "val"):
            values = columns.get(f"{split}/{kind}")
            if values is not None:
                axis.plot(epochs, values, marker=".", label=split)
        axis.set_title(kind)
        _per_epoch(axis)
    return _png(figure)


def plot_metrics(epochs: Sequence[int], columns: Mapping[str, Sequence[float]]) -> bytes:
    """Precision, recall, mAP50 and mAP50-95 per epoch on one axis (all lie in 0..1)."""
    figure, axis = plt.subplots(figsize=(8, 4))
    for key, column in METRICS.items():
        if column in columns:
            axis.plot(epochs, columns[column], marker=".", label=LEGEND.get(key, key))
    axis.set_ylim(0, 1.02)
    _per_epoch(axis)
    return _png(figure)


def plot_learning_rate(epochs: Sequence[int], columns: Mapping[str, Sequence[float]]) -> bytes:
    """The learning rate of each parameter group per epoch (warm-up, then the schedule)."""
    figure, axis = plt.subplots(figsize=(8, 3.5))
    for name in sorted(column for column in columns if column.startswith("lr/")):
        axis.plot(epochs, columns[name], marker=".", label=name)
    axis.set_ylabel("learning rate")
    _per_epoch(axis)
    return _png(figure)
