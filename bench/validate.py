"""Benchmark dataset validation with the near-duplicate check against the same validation without it.

A 2,974-image demo dataset at 640 px (the real dataset's size, generated once and reused),
with planted leaks: train images re-saved as JPEG quality 50 and at half size into val.
Baseline: `validate_dataset(..., near_duplicates=False)` (exact copies only), measured in
the same run, alternating with the full check; best of `--repeat`. Prints both times, the
ratio, and how many planted leaks each found.

    .venv/bin/python bench/validate.py [--work /tmp/pogona-bench] [--images 2974] [--leaks 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components.data.demo_dataset import DemoSpec, generate_demo_dataset  # noqa: E402
from components.data.validate import validate_dataset  # noqa: E402


def leaky_dataset(work: Path, images: int, leaks: int) -> tuple[Path, list[str]]:
    """Hard links to the demo dataset plus `leaks` re-saved train images in val; returns the leaked keys."""
    demo = work / f"demo-{images}"
    if not (demo / "data.yaml").is_file():
        generate_demo_dataset(str(demo), DemoSpec(images=images, size=640))
    root = work / f"demo-{images}-leaks-{leaks}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(demo, root, copy_function=os.link)
    leaked = []
    for index, source in enumerate(sorted((root / "images/train/visible").glob("*.jpg"))[:leaks]):
        image = Image.open(source)
        if index % 2:
            image = image.resize((image.width // 2, image.height // 2))
        target = root / "images/val/visible" / f"leaked_{index:03d}.jpg"
        image.save(target, quality=50)
        leaked.append(target.relative_to(root).as_posix())
    return root, leaked


def timed(root: Path, near_duplicates: bool, leaked: list[str]) -> tuple[float, float, int]:
    """Wall and CPU seconds (all threads) for one validation, and how many planted leaks it reported."""
    started, started_cpu = time.monotonic(), time.process_time()
    result = validate_dataset(str(root), near_duplicates=near_duplicates)
    seconds, cpu = time.monotonic() - started, time.process_time() - started_cpu
    return seconds, cpu, sum(any(e.startswith(f"{key}: leakage") for e in result.errors) for key in leaked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/pogona-bench"))
    parser.add_argument("--images", type=int, default=2974)
    parser.add_argument("--leaks", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root, leaked = leaky_dataset(args.work, args.images, args.leaks)
    print(f"validate bench: {args.images} images at 640 px + {len(leaked)} planted leaks, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    runs: dict[bool, list[tuple[float, float, int]]] = {False: [], True: []}
    for _ in range(args.repeat):
        for near_duplicates in (False, True):
            runs[near_duplicates].append(timed(root, near_duplicates, leaked))
            seconds, cpu, found = runs[near_duplicates][-1]
            print(f"  near_duplicates={near_duplicates}: {seconds:.2f} s wall, {cpu:.2f} s CPU, "
                  f"{found}/{len(leaked)} leaks found", flush=True)
    for name, flag in (("baseline (exact copies only)", False), ("with the near-duplicate check", True)):
        print(f"{name}: best {min(r[0] for r in runs[flag]):.2f} s wall, {min(r[1] for r in runs[flag]):.2f} s CPU, "
              f"{runs[flag][0][2]}/{len(leaked)} leaks found")
    for measure, column in (("wall", 0), ("CPU", 1)):
        baseline, full = (min(r[column] for r in runs[flag]) for flag in (False, True))
        print(f"ratio, {measure}: {full / baseline:.2f}x the baseline ({(full - baseline) / args.images * 1e3:.2f} ms "
              "per image)")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
