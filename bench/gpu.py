"""Benchmark pogona training on a GPU, in one run: (a) its training throughput against plain ultralytics, (b) the
default configuration's time to mAP50 >= 0.9 on the demo dataset, (c) the epochs a kill -9 mid-run loses.

    .venv/bin/python bench/gpu.py [--device cuda] [--work DIR] [--images 2974] [--imgsz 640] [--model yolo11s]
                                  [--batch 64] [--epochs 100] [--throughput-epochs 4] [--resume-epochs 3]

(a) trains --model from its YAML twice on the same data with the same fixed --batch, epochs, workers, AMP, seed
and no image cache: plain ultralytics (`YOLO(...).train`, the baseline) and `components.training.train.train_model` with a
folder store and a run id (checkpoints upload as in production). The training loop is timed from each epoch's
on_train_epoch_start to its on_train_epoch_end, summed over the epochs after the first (which also warms the file
cache); images = train images x those epochs. Target: pogona/plain images/s >= 0.97.
(b) trains the default configuration (`TrainConfig`: the default base weights or --weights, batch 0.95 of GPU
memory, the batch policy choosing within AutoBatch's answer) for up to --epochs and stops at the first epoch with mAP50 >= 0.9. Target: within 10 minutes
on one H100, counted from the call of train_model.
(c) runs `pogona train` with a store and a run id in a subprocess, kills it with SIGKILL halfway through epoch 2,
runs it again with the same run id and reads results.csv and the stored last.pt. Target: at most one epoch lost,
and the same final epoch count.

With --device cpu and tiny settings it runs anywhere in a minute or two (ultralytics downloads nothing: every model
is built from its YAML):

    .venv/bin/python bench/gpu.py --device cpu --images 64 --imgsz 64 --epochs 2 --throughput-epochs 2 \\
        --resume-epochs 2 --model yolo11n.yaml --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from components.runtime.yolo_env import offline_ultralytics

offline_ultralytics()

from components.config import TrainConfig  # noqa: E402  (after offline_ultralytics)
from components.data.demo_dataset import DemoSpec, generate_demo_dataset  # noqa: E402
from components.data.dataset import load_dataset  # noqa: E402
from components.training.train import train_model  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.utils.callbacks.base import default_callbacks  # noqa: E402

REAL_DATASET_IMAGES = 2974  # the size of the real dataset
TARGET_RATIO = 0.97
TARGET_MAP50 = 0.9
TARGET_SECONDS = 600
KILL_EPOCH = 2


def fresh(folder: Path) -> Path:
    """An empty folder for one part: a store left by an earlier bench run would make training resume instead."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def demo_dataset(work: Path, images: int, imgsz: int) -> Path:
    """The demo dataset (DemoSpec's generator at this size), generated once and reused."""
    root = work / f"demo-{images}-{imgsz}"
    if not (root / "data.yaml").is_file():
        generate_demo_dataset(str(root), DemoSpec(images=images, size=imgsz), progress=False)
    return root


def on_every_trainer(event: str, callback: Callable[[Any], None]) -> Callable[[], None]:
    """Give every trainer made from now on `callback` for `event` (pogona's and plain ultralytics' alike, since
    both copy ultralytics' default callbacks); returns the undo."""
    default_callbacks[event].append(callback)
    return lambda: default_callbacks[event].remove(callback)


def now() -> float:
    """The time once the GPU has finished what was queued on it (CUDA runs asynchronously)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def timed_training_loop(train: Callable[[], Any]) -> list[float]:
    """Seconds each epoch's training loop took while `train()` ran (validation and checkpoints excluded)."""
    started: list[float] = []
    loops: list[float] = []
    undo = [on_every_trainer("on_train_epoch_start", lambda trainer: started.append(now())),
            on_every_trainer("on_train_epoch_end", lambda trainer: loops.append(now() - started[-1]))]
    try:
        train()
    finally:
        for remove in undo:
            remove()
    return loops


def throughput(dataset: Path, work: Path, args: argparse.Namespace) -> None:
    """(a) images/s of the training loop, pogona against plain ultralytics, same model, data and settings."""
    config = TrainConfig(model=args.model, epochs=args.throughput_epochs, patience=args.throughput_epochs,
                         imgsz=args.imgsz, batch=args.batch, device=args.device, workers=args.workers, cache="none")
    on_gpu = args.device != "cpu"
    folder = fresh(work / "throughput")
    data_yaml = load_dataset(dataset).write_yaml(folder / "data.yaml")
    train_images = len(load_dataset(dataset).images("train"))
    plain = timed_training_loop(lambda: YOLO(f"{args.model}.yaml").train(
        data=str(data_yaml), save_dir=str(folder / "plain"), exist_ok=True, epochs=config.epochs,
        patience=config.patience, imgsz=config.imgsz, batch=int(config.batch), device=config.device,
        optimizer=config.optimizer, lr0=config.lr0, cos_lr=config.cos_lr, seed=config.seed, workers=config.workers,
        cache=False, amp=on_gpu))
    pogona = timed_training_loop(lambda: train_model(dataset, folder / "pogona" / "train", config,
                                                     store=str(folder / "store"), run_id="throughput"))
    rates = {}
    for name, loops in (("plain", plain), ("pogona", pogona)):
        timed = loops[1:] or loops  # the first epoch also warms the file cache
        rates[name] = train_images * len(timed) / sum(timed)
        print(f"(a) {name}: {rates[name]:.1f} images/s over {len(timed)} epochs of {train_images} train images "
              f"(training loop per epoch: {', '.join(f'{seconds:.2f}' for seconds in loops)} s)", flush=True)
    print(f"(a) pogona/plain images/s: {rates['pogona'] / rates['plain']:.3f} (target >= {TARGET_RATIO})",
          flush=True)


def time_to_map50(dataset: Path, work: Path, args: argparse.Namespace) -> None:
    """(b) the default configuration until the first epoch with mAP50 >= TARGET_MAP50 (or --epochs)."""
    config = TrainConfig(model=args.model, weights=args.weights, epochs=args.epochs, imgsz=args.imgsz,
                         device=args.device, workers=args.workers)
    epochs: dict[int, tuple[float, float]] = {}  # epoch -> (mAP50, seconds since train_model was called)
    started = time.monotonic()

    stopped = []  # set once training stops: the final validation of best.pt then reports under epoch + 1

    def record(trainer: Any) -> None:
        if stopped or trainer.epoch >= trainer.epochs:
            return
        epochs[trainer.epoch] = (float(trainer.metrics.get("metrics/mAP50(B)", 0.0)), time.monotonic() - started)
        trainer.stop = trainer.stop or epochs[trainer.epoch][0] >= TARGET_MAP50
        if trainer.stop:
            stopped.append(trainer.epoch)

    undo = on_every_trainer("on_fit_epoch_end", record)
    try:
        result = train_model(dataset, fresh(work / "default") / "train", config)
    finally:
        undo()
    curve = [epochs[epoch] for epoch in sorted(epochs)]
    recorded = json.loads(result.metrics_json.read_text())
    plan, weights = recorded["batch_plan"], recorded["base_weights"]
    print(f"(b) default configuration: {args.model} from {weights['uri'] or weights['path']} ({weights['source']}), "
          f"imgsz {args.imgsz}, batch {config.batch} -> batch {plan['batch']} ({plan['reason']}); mAP50 per epoch "
          f"{[round(map50, 3) for map50, _ in curve]}", flush=True)
    reached = next(((epoch, seconds) for epoch, (map50, seconds) in enumerate(curve, 1) if map50 >= TARGET_MAP50),
                   None)
    if reached:
        print(f"(b) time to mAP50 >= {TARGET_MAP50}: {reached[1]:.0f} s at epoch {reached[0]} "
              f"(target <= {TARGET_SECONDS} s on one H100)", flush=True)
    else:
        print(f"(b) time to mAP50 >= {TARGET_MAP50}: not reached in {len(curve)} epochs "
              f"({curve[-1][1] if curve else 0:.0f} s; target <= {TARGET_SECONDS} s on one H100)", flush=True)


def _rows(results_csv: Path) -> int:
    """Epochs in a results.csv that ultralytics may be writing right now (complete lines after the header)."""
    return max(results_csv.read_text().count("\n") - 1, 0) if results_csv.is_file() else 0


# `pogona train` that stops halfway through epoch KILL_EPOCH for the kill: its training thread writes a marker file
# there and waits to be killed (checkpoint uploads go on, as during the rest of a real epoch), so the kill lands
# mid-epoch however fast or loaded the machine is, and never after the run ended by itself.
HALFWAY_THEN_WAIT_FOR_THE_KILL = """
import sys, threading
from pathlib import Path
from components.runtime.yolo_env import offline_ultralytics
marker, kill_epoch = Path(sys.argv.pop(1)), int(sys.argv.pop(1))
batches = []

def halfway(trainer):
    if trainer.epoch == kill_epoch - 1:
        batches.append(trainer.epoch)
        if len(batches) == max(1, len(trainer.train_loader) // 2):
            marker.write_text(str(len(batches)))
            threading.Event().wait()

offline_ultralytics()
from ultralytics.utils.callbacks.base import default_callbacks
default_callbacks["on_train_batch_end"].append(halfway)
from pipelines.cli import main
sys.exit(main(sys.argv[1:]))
"""


def kill_and_resume(dataset: Path, work: Path, args: argparse.Namespace) -> None:
    """(c) SIGKILL `pogona train` during epoch KILL_EPOCH, run it again with the same run id, count what was lost."""
    import torch

    folder, run_id, epochs = fresh(work / "resume"), "killed", args.resume_epochs
    store = folder / "store"
    train = ["train", "--data", str(dataset), "--model", args.model, "--epochs", str(epochs),
             "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--device", args.device,
             "--store", str(store), "--run-id", run_id]
    command = [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main(sys.argv[1:]))",
               *train]
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    first, halfway = folder / "machine1" / "train", folder / "halfway-marker"
    process = subprocess.Popen([sys.executable, "-c", HALFWAY_THEN_WAIT_FOR_THE_KILL, str(halfway), str(KILL_EPOCH),
                                *train, "--out", str(first)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=environment)
    try:
        while not halfway.is_file() and process.poll() is None:  # the marker the first attempt writes
            time.sleep(0.05)
        done_before_kill = _rows(first / "results.csv")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    if process.returncode != -signal.SIGKILL:
        print(f"(c) the first attempt ended (exit {process.returncode}) before epoch {KILL_EPOCH}; "
              f"give --resume-epochs at least {KILL_EPOCH}", flush=True)
        return
    checkpoint = store / "runs" / run_id / "checkpoints" / "last.pt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"] + 1 if checkpoint.is_file() else 0
    second = folder / "machine2" / "train"
    resumed = subprocess.run([*command, "--out", str(second)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=environment)
    if resumed.returncode != 0:
        print(f"(c) the second attempt failed (exit {resumed.returncode}): {resumed.stderr.strip()[-500:]}")
        return
    final = _rows(second / "results.csv")
    print(f"(c) killed during epoch {done_before_kill + 1} of {epochs}; the store held {stored} epochs; "
          f"the second attempt ended with {final} of {epochs} epochs", flush=True)
    print(f"(c) epochs lost: {done_before_kill - stored} (target <= 1); final epochs {final} "
          f"({'same' if final == epochs else 'NOT the same'} as requested)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--work", type=Path, default=Path("/tmp/pogona-gpu-bench"))
    parser.add_argument("--images", type=int, default=REAL_DATASET_IMAGES)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--model", default=TrainConfig().model, help="architecture, built from its YAML")
    parser.add_argument("--weights", default="", help="base weights of (b) (a .pt file); empty: the default "
                                                      "resolution ($POGONA_WEIGHTS_DIR/<model>.pt in the images)")
    parser.add_argument("--batch", type=int, default=64, help="the fixed batch of (a) and (c)")
    parser.add_argument("--workers", type=int, default=TrainConfig().workers)
    parser.add_argument("--epochs", type=int, default=TrainConfig().epochs, help="most epochs of (b)")
    parser.add_argument("--throughput-epochs", type=int, default=4)
    parser.add_argument("--resume-epochs", type=int, default=3)
    args = parser.parse_args()
    args.model = args.model.removesuffix(".yaml")
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    print(f"gpu bench: {args.model}, {args.images} demo images at {args.imgsz} px, device {args.device} ({gpu}), "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
          flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    dataset = demo_dataset(args.work, args.images, args.imgsz)
    throughput(dataset, args.work, args)
    time_to_map50(dataset, args.work, args)
    kill_and_resume(dataset, args.work, args)


if __name__ == "__main__":
    main()
