"""Benchmark INT8 against FP32 on the demo data at the training size, over detectors trained with several seeds.

    .venv/bin/python bench/int8.py [--seeds 42,1,2] [--epochs 50] [--work /tmp/pogona-int8] [--latency-imgsz 640]

Each detector is trained as tests/components/evaluation/test_export.py trains its own (yolo11n from its YAML, the
80-image demo dataset at 96 px, CPU), exported to FP32 ONNX, and quantized twice: the shipped recipe
(components.evaluation.export.INT8, the stem convolution kept float) and the baseline that quantizes every
convolution. Both INT8 models are measured against the FP32 model of the same run, with ultralytics'
validator on two validation sets: the dataset's own val split (16 images) and 200 held-out images
generated from another seed, where one box crossing an IoU threshold moves mAP50-95 far less.
Latency: median single-thread ONNX Runtime time on one image, at 96 px and at --latency-imgsz.

Target: INT8 loses at most 0.02 mAP50-95 against FP32 on the 200 held-out images (the 16-image split is
printed for comparison: one box there moves mAP50-95 by about 0.01, either way).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
from pathlib import Path

from components.data.dataset import load_dataset
from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.evaluation.export import (INT8, Int8Recipe, calibration_images, export_weights, latency_ms, quantize_int8,
                               exported_map)
from components.runtime.yolo_env import offline_ultralytics

TRAINING_SET = DemoSpec(images=80, size=96)
HELD_OUT_SET = DemoSpec(images=400, size=96, seed=7, val_fraction=0.5)
RECIPES = {"shipped": INT8, "baseline (every conv)": Int8Recipe(float_stem=False)}
TARGET_LOSS = 0.02


def generated(work: Path, name: str, spec: DemoSpec) -> Path:
    root = work / name
    if not (root / "data.yaml").is_file():
        generate_demo_dataset(str(root), spec, progress=False)
    return root


def train_detector(dataset: Path, work: Path, seed: int, epochs: int) -> Path:
    """The test's detector for one seed (reused when this work folder already holds it)."""
    weights = work / "runs" / f"seed{seed}-e{epochs}" / "weights" / "best.pt"
    if not weights.is_file():
        data = load_dataset(dataset).write_yaml(work / "train-data.yaml")
        offline_ultralytics().YOLO("yolo11n.yaml").train(
            data=str(data), epochs=epochs, imgsz=TRAINING_SET.size, batch=16, device="cpu", workers=0,
            project=str(work / "runs"), name=f"seed{seed}-e{epochs}", exist_ok=True, seed=seed, verbose=False,
            plots=False)
    return weights


def measure_seed(seed: int, weights: Path, training: Path, held_out: Path, out: Path, latency_imgsz: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    imgsz, files = export_weights(weights, out, ("onnx",))
    training_set = load_dataset(training)
    images = calibration_images(training_set)
    models = {"fp32": files["onnx"]}
    models.update({name: quantize_int8(files["onnx"], out / f"int8-{index}.onnx", images, imgsz, recipe)
                   for index, (name, recipe) in enumerate(RECIPES.items())})
    sample = training_set.images("val")[0]
    row: dict = {"seed": seed}
    for val_name, root in (("val16", training), ("held200", held_out)):
        data_yaml = load_dataset(root).write_yaml(out / f"{val_name}.yaml")
        for name, path in models.items():
            row[(val_name, name)] = exported_map(path, data_yaml, imgsz)["map50_95"]
    for name, path in models.items():
        row[("ms", imgsz, name)] = latency_ms(path, imgsz, sample)
    if latency_imgsz:
        large_dir = out / str(latency_imgsz)
        large_dir.mkdir(exist_ok=True)
        _, exported = export_weights(weights, large_dir, ("onnx",), imgsz=latency_imgsz)
        large = {"fp32": exported["onnx"]}
        large.update({name: quantize_int8(large["fp32"], out / f"int8-{index}-{latency_imgsz}.onnx",
                                          images[:16], latency_imgsz, recipe)
                      for index, (name, recipe) in enumerate(RECIPES.items())})
        for name, path in large.items():
            row[("ms", latency_imgsz, name)] = latency_ms(path, latency_imgsz, sample)
    return row


def report(rows: list[dict], latency_sizes: list[int]) -> bool:
    print(f"\nINT8 loss in mAP50-95 against FP32 (positive = INT8 worse); {platform.processor() or platform.machine()}")
    print(f"{'seed':>5} {'validation':>15} {'FP32':>7} " + " ".join(f"{name:>22}" for name in RECIPES))
    worst = {name: float("-inf") for name in RECIPES}
    for row in rows:
        for val_name, label in (("val16", "16 val images"), ("held200", "200 held-out")):
            fp32 = row[(val_name, "fp32")]
            losses = {name: fp32 - row[(val_name, name)] for name in RECIPES}
            if val_name == "held200":
                worst = {name: max(worst[name], loss) for name, loss in losses.items()}
            print(f"{row['seed']:>5} {label:>15} {fp32:7.3f} "
                  + " ".join(f"{row[(val_name, name)]:7.3f} ({loss:+.3f})".rjust(22) for name, loss in losses.items()))
    for size in latency_sizes:
        print(f"latency at {size} px, 1 thread, median over the seeds: "
              + "; ".join(f"{name} {statistics.median(row[('ms', size, name)] for row in rows):.1f} ms"
                          for name in ("fp32", *RECIPES)))
    for name, loss in worst.items():
        print(f"{name}: worst loss on the held-out images {loss:+.3f} (target <= {TARGET_LOSS})")
    return worst["shipped"] <= TARGET_LOSS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,1,2", help="training seeds, comma-separated (42 is the test's)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pogona-int8")
    parser.add_argument("--latency-imgsz", type=int, default=640, help="second latency size; 0 skips it")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    training = generated(args.work, "demo", TRAINING_SET)
    held_out = generated(args.work, "held-out", HELD_OUT_SET)
    rows = []
    for seed in (int(part) for part in args.seeds.split(",")):
        weights = train_detector(training, args.work, seed, args.epochs)
        rows.append(measure_seed(seed, weights, training, held_out, args.work / f"exports-{seed}", args.latency_imgsz))
    sizes = [TRAINING_SET.size] + ([args.latency_imgsz] if args.latency_imgsz else [])
    return 0 if report(rows, sizes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
