"""The recorded ultralytics runs the analysis, advice and report tests read, and results.csv read plainly."""

from __future__ import annotations

import csv
from pathlib import Path

FIXTURES = Path(__file__).parent / "components" / "fixtures"


def read_csv(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {name: [float(row[name]) for row in rows] for name in rows[0]}


def first_within_one_percent(values: list[float]) -> int:
    return next(i for i, value in enumerate(values) if value >= 0.99 * max(values)) + 1


# mAP50 and mAP50-95 peak at different epochs: no checkpoint reached both bests
SPLIT_PEAKS = ({"metrics/mAP50(B)": 0.52, "metrics/mAP50-95(B)": 0.31},
               {"metrics/mAP50(B)": 0.96, "metrics/mAP50-95(B)": 0.55},
               {"metrics/mAP50(B)": 0.91, "metrics/mAP50-95(B)": 0.62},
               {"metrics/mAP50(B)": 0.90, "metrics/mAP50-95(B)": 0.58})


def write_results(path: Path, rows: tuple[dict[str, float], ...]) -> dict[str, float]:
    """Write rows as an ultralytics results.csv; returns the row of highest mAP50-95 (the epoch kept as best.pt)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", *rows[0]])
        writer.writeheader()
        writer.writerows({"epoch": epoch, **row} for epoch, row in enumerate(rows, start=1))
    return max(rows, key=lambda row: row["metrics/mAP50-95(B)"])
