"""bench/gpu.py at tiny CPU settings: one command prints the throughput ratio, the time-to-mAP50 line and the epochs
a kill -9 loses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_bench_runs_on_cpu_and_prints_its_three_measurements(tmp_path: Path):
    command = [sys.executable, str(REPO / "bench" / "gpu.py"), "--device", "cpu", "--images", "64", "--imgsz", "64",
               "--epochs", "2", "--throughput-epochs", "2", "--resume-epochs", "2", "--model", "yolo11n.yaml",
               "--batch", "16", "--workers", "0", "--work", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert finished.returncode == 0, finished.stderr[-2000:]
    lines = finished.stdout.splitlines()
    ratio = next(line for line in lines if line.startswith("(a) pogona/plain images/s:"))
    assert float(ratio.split(":")[1].split()[0]) > 0 and "target >= 0.97" in ratio
    assert any(line.startswith("(b) time to mAP50 >= 0.9:") for line in lines)
    lost = next(line for line in lines if line.startswith("(c) epochs lost:"))
    assert int(re.search(r"epochs lost: (-?\d+)", lost).group(1)) <= 1
    assert "final epochs 2 (same as requested)" in lost
