"""Benchmark the batch policy on CPU: the same data, epochs and seed, trained once with a batch that gives about two
optimizer steps per epoch (the baseline: what a batch filling the GPU gives a small dataset) and once with the
batch the policy picks within it; mAP50 per epoch for both.

    .venv/bin/python bench/batch_policy.py [--images 400] [--imgsz 96] [--epochs 20] [--seeds 42,1] [--work DIR]

The policy's batch is `choose_batch` with the baseline batch as the GPU-memory ceiling (what AutoBatch would have
answered), so the comparison is the one the policy makes on a GPU. Target: the policy's batch ends with a higher
mAP50 than the baseline for every seed.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

from components.training.batch_policy import choose_batch, plan_batch
from components.config import TrainConfig
from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.data.dataset import load_dataset
from components.training.train import train_model
from components.training.outputs import read_results


def demo_dataset(work: Path, images: int, imgsz: int) -> Path:
    root = work / f"demo-{images}-{imgsz}"
    if not (root / "data.yaml").is_file():
        generate_demo_dataset(str(root), DemoSpec(images=images, size=imgsz), progress=False)
    return root


def train(dataset: Path, out: Path, batch: int, seed: int, args: argparse.Namespace) -> list[float]:
    """mAP50 after each epoch of one pogona training run (yolo11n from its YAML, CPU)."""
    config = TrainConfig(model="yolo11n", epochs=args.epochs, patience=args.epochs, imgsz=args.imgsz, batch=batch,
                         device="cpu", workers=0, seed=seed, cache="none")
    started = time.monotonic()
    result = train_model(dataset, out, config)
    curve = [round(epoch["map50"], 3) for epoch in read_results(result.results_csv)]
    print(f"  batch {batch}, seed {seed}: mAP50 per epoch {curve} ({time.monotonic() - started:.0f} s)", flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/pogona-batch-policy"))
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", default="42,1")
    args = parser.parse_args()
    dataset = demo_dataset(args.work, args.images, args.imgsz)
    train_images = len(load_dataset(dataset).images("train"))
    baseline = math.ceil(train_images / 2)  # two batches, two optimizer steps per epoch
    plans = {"baseline (2 steps/epoch)": plan_batch(baseline, train_images, args.epochs),
             "policy": choose_batch(baseline, train_images, args.epochs)}
    print(f"batch policy bench: yolo11n from YAML, {train_images} train images at {args.imgsz} px, "
          f"{args.epochs} epochs, CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f})", flush=True)
    seeds = [int(text) for text in args.seeds.split(",")]
    finals: dict[str, list[float]] = {}
    for name, plan in plans.items():
        print(f"{name}: {plan.summary()}", flush=True)
        finals[name] = [train(dataset, args.work / f"{name.split()[0]}-seed{seed}" / "train", plan.batch, seed,
                              args)[-1] for seed in seeds]
    means = {name: sum(values) / len(values) for name, values in finals.items()}
    for name, values in finals.items():
        print(f"{name}: final mAP50 {values} (mean {means[name]:.3f})")
    baseline_finals, policy_finals = finals.values()
    wins = sum(ours > theirs for ours, theirs in zip(policy_finals, baseline_finals))
    print(f"final mAP50, mean over seeds: policy {means['policy']:.3f} vs baseline "
          f"{means['baseline (2 steps/epoch)']:.3f}; policy higher for {wins} of {len(seeds)} seeds (target: all)")


if __name__ == "__main__":
    main()
