"""Benchmark the sanity gate: (1) how fast the dead-run detector stops the seed's failure, compared with a
plain ultralytics run of the same configuration that trains to the end; (2) the time to a healthy verdict
on a 2,974-image demo dataset (the size of the real one) at imgsz 640 on this machine.

    .venv/bin/python bench/sanity.py [--work /tmp/pogona-bench] [--max-images N] [--model yolo11s]

Target (seed 004: a 3-epoch CPU sanity run took 49.68 minutes): a verdict in at most 5 minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from components.config import SanityConfig
from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.training.sanity import run_sanity, sanity_train_args
from components.training.outputs import read_results
from components.runtime.yolo_env import offline_ultralytics


def demo_dataset(work: Path, images: int) -> Path:
    """The demo dataset at the real dataset's size, generated once and reused."""
    root = work / f"demo-{images}"
    if not (root / "data.yaml").is_file():
        generate_demo_dataset(str(root), DemoSpec(images=images, size=640))
    return root


def empty_label_copy(dataset: Path) -> Path:
    """The same images (hard links) with every label file present and empty: the seed's dead run."""
    root = dataset.parent / f"{dataset.name}-empty-labels"
    if not root.exists():
        shutil.copytree(dataset / "images", root / "images", copy_function=os.link)
        for label in (dataset / "labels").rglob("*.txt"):
            target = root / label.relative_to(dataset)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("")
        shutil.copyfile(dataset / "data.yaml", root / "data.yaml")
    return root


def dead_run_latency(dataset: Path, work: Path, config: SanityConfig, model: str) -> None:
    empty = empty_label_copy(dataset)
    verdict = run_sanity(empty, work / "dead" / "verdict.json", config, model=model)
    print(f"dead run, guarded: verdict {verdict.verdict} after {verdict.steps} optimizer steps, "
          f"{verdict.wall_seconds:.1f} s", flush=True)
    started = time.monotonic()
    offline_ultralytics().YOLO(f"{model}.yaml").train(
        **sanity_train_args(config, work / "dead" / "sanity-run" / "data.yaml", work / "dead" / "plain"))
    plain_seconds = time.monotonic() - started
    last = read_results(work / "dead" / "plain" / "results.csv")[-1]
    print(f"dead run, plain ultralytics: completed {config.epochs} epochs in {plain_seconds:.1f} s with "
          f"box_loss {last['box_loss']}, dfl_loss {last['dfl_loss']}, mAP50 {last['map50']} (no error raised)")
    print(f"dead run: the detector stopped it {plain_seconds / verdict.wall_seconds:.1f}x sooner", flush=True)


def healthy_verdict(dataset: Path, work: Path, config: SanityConfig, model: str) -> None:
    verdict = run_sanity(dataset, work / "healthy" / "verdict.json", config, model=model)
    losses = [round(e["box_loss"] + e["cls_loss"] + e["dfl_loss"], 3) for e in verdict.epochs]
    print(f"healthy run: verdict {verdict.verdict} in {verdict.wall_seconds:.1f} s "
          f"({verdict.wall_seconds / 60:.2f} min; target <= 5 min) after {verdict.steps} optimizer steps; "
          f"total loss per epoch {losses}; {'; '.join(verdict.reasons)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/pogona-bench"))
    parser.add_argument("--images", type=int, default=2974)
    parser.add_argument("--model", default="yolo11s")
    parser.add_argument("--max-images", type=int, default=SanityConfig().max_images)
    parser.add_argument("--only", choices=("dead", "healthy"), default=None)
    args = parser.parse_args()
    config = replace(SanityConfig(), max_images=args.max_images)
    print(f"sanity bench: {args.model}, imgsz {config.imgsz}, batch {config.batch}, {config.epochs} epochs, "
          f"max_images {config.max_images}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
          flush=True)
    dataset = demo_dataset(args.work, args.images)
    if args.only in (None, "dead"):
        dead_run_latency(dataset, args.work, config, args.model)
    if args.only in (None, "healthy"):
        healthy_verdict(dataset, args.work, config, args.model)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
