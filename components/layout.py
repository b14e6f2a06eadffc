"""Every object key of a pogona store, built in one place (docs/architecture.md, "Object store layout").

A key typed twice can be typed two ways, and a run's files then land where no reader looks;
so each module asks here instead of writing `f"runs/{...}"` itself. Keys are relative to the
store's root and '/'-separated, as `ObjectStore` takes them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath

DEMO_DATASET = "datasets/demo"  # where `pogona run --local --demo` generates its dataset
WEIGHTS = "weights"  # staged pretrained weights (`pogona weights stage`)
BEST_WEIGHTS = "train/weights/best.pt"  # the published model, relative to its run


def staged_weights(file_name: str) -> str:
    """`weights/<model>.pt`: where a model's pretrained weights are staged, given the model or its file name."""
    return f"{WEIGHTS}/{PurePosixPath(file_name).stem}.pt"


def run(run_id: str) -> str:
    """`runs/<run-id>`: everything one run writes."""
    return f"runs/{run_id}"


def run_file(run_id: str, relative: str) -> str:
    """`runs/<run-id>/<relative>`: one file of a run, by its path under the run's working dir."""
    return f"{run(run_id)}/{relative}"


def run_manifest(run_id: str) -> str:
    return run_file(run_id, "manifest.json")


def run_metrics(run_id: str) -> str:
    return run_file(run_id, "metrics.json")


def run_sanity_verdict(run_id: str) -> str:
    return run_file(run_id, "sanity/verdict.json")


def run_report(run_id: str) -> str:
    return run_file(run_id, "report/report.html")


def run_checkpoints(run_id: str) -> str:
    """`runs/<run-id>/checkpoints`: the newest epoch's last.pt, results.csv and best.pt (resume)."""
    return run_file(run_id, "checkpoints")


def run_refusal(run_id: str, kfp_run_id: str) -> str:
    """Why training refused within one KFP run: the step's retries read it and stop at once."""
    return run_file(run_id, f"refusals/{kfp_run_id}.json")


def production(model_name: str) -> str:
    """`models/<name>/production.json`: the champion pointer, written last and conditionally."""
    return f"models/{model_name}/production.json"


def history(model_name: str, promoted_at: datetime, run_id: str) -> str:
    """`models/<name>/history/<time>-<run-id>.json`: one promotion, named so the keys sort by time."""
    return f"models/{model_name}/history/{promoted_at.strftime('%Y%m%dT%H%M%S%fZ')}-{run_id}.json"


def attempt(model_name: str, attempt_key: str) -> str:
    """`models/<name>/attempts/<key>.json`: one run that reached publish, found again by what it trained."""
    return f"models/{model_name}/attempts/{attempt_key}.json"
