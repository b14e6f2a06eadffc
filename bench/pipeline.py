"""Orchestration overhead of a local pipeline run.

Baseline: the same step functions (`pipelines.steps`) called in sequence in one process, on
the same demo dataset and parameters. Measured: `pogona run --local` (kfp.local, one
subprocess per component). Prints both times and the overhead ratio; target <= 10%.

    .venv/bin/python bench/pipeline.py [--images 300] [--epochs 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from components.config import PromotionConfig, SanityConfig, TrainConfig
from components.data.demo_dataset import generate_demo_dataset
from pipelines import steps
from pipelines.local import DemoScale, run_local


def direct(dataset: str, store: str, work: Path, scale: DemoScale, run_id: str) -> dict[str, float]:
    """The pipeline's steps as plain calls, in order, with the same parameters; seconds per step."""
    timings: dict[str, float] = {}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        result = call()
        timings[name] = time.monotonic() - started
        return result

    manifest, report, verdict = work / "manifest.json", work / "validation.md", work / "verdict.json"
    trained, analysis = work / "trained", work / "analysis"
    fingerprint, _ = timed("validate", lambda: steps.validate_step(dataset, str(manifest), str(report)))
    training = TrainConfig(model=scale.model, epochs=scale.epochs, patience=scale.patience,
                           imgsz=scale.dataset.size, batch=scale.batch, device="cpu")
    sanity = replace(SanityConfig(), imgsz=scale.dataset.size, max_images=scale.sanity_max_images)
    decision, attempt = timed("decide", lambda: steps.decide_training(store, "bench", fingerprint, "bench", training,
                                                                      sanity, "1", skip_if_unchanged=False))
    assert decision.train
    timed("sanity", lambda: steps.sanity_step(str(manifest), str(verdict), sanity, scale.model, "", store))
    timed("train", lambda: steps.train_step(str(manifest), str(trained), training, "1", store, run_id, run_id))
    timed("evaluate and report", lambda: steps.analyze_step(str(manifest), str(trained), str(verdict),
                                                            str(analysis), store, "bench", "onnx,int8",
                                                            PromotionConfig(min_map50=scale.min_map50)))
    run_dir = steps.assemble_run_dir(work / "run", str(manifest), str(report), str(verdict), str(trained),
                                     str(analysis))
    timed("publish", lambda: steps.publish_step(run_dir, store, run_id, "bench",
                                                PromotionConfig(min_map50=scale.min_map50), attempt))
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=DemoScale().dataset.images)
    parser.add_argument("--epochs", type=int, default=DemoScale.epochs)
    args = parser.parse_args()
    scale = replace(DemoScale(), dataset=replace(DemoScale().dataset, images=args.images), epochs=args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = str(root / "dataset")
        generate_demo_dataset(dataset, scale.dataset, progress=False)
        timings = direct(dataset, (root / "store-direct").as_uri(), root / "work", scale, "bench-direct")
        run = run_local(store=str(root / "store-kfp"), dataset=dataset, model_name="bench", run_id="bench-kfp",
                        work_dir=root / "kfp",
                        overrides={**scale.pipeline_parameters(), "skip_if_unchanged": False})
    baseline = sum(timings.values())
    overhead = run.seconds / baseline - 1
    for name, seconds in timings.items():
        print(f"  baseline {name:<34}{seconds:8.1f} s")
    print(f"{'baseline: step functions in sequence':<44}{baseline:8.1f} s")
    print(f"{'kfp.local pipeline run':<44}{run.seconds:8.1f} s")
    print(f"{'orchestration overhead':<44}{overhead:8.1%}  (target <= 10%)")
    return 0 if overhead <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
