"""The demo pipeline through kfp.local's DockerRunner, each step in the image the compiled pipeline
names, against the same pipeline through the SubprocessRunner: the same decisions and results."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import images

RUN_ID = "demo-run"
MODEL_NAME = "demo-detector"


def run_demo(work: Path, runner: str) -> Path:
    """`pogona run --local --demo --runner <runner>` in its own folder; returns its store."""
    work.mkdir()
    command = [str(Path(sys.executable).parent / "pogona"), "run", "--local", "--demo", "--runner", runner,
               "--store", "store", "--run-id", RUN_ID, "--model-name", MODEL_NAME]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=1500,
                            env={**os.environ, "PYTHONPATH": str(images.REPO)})
    assert result.returncode == 0, f"{runner}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return work / "store"


def read_json(store: Path, key: str) -> dict:
    """The object's JSON with its run folder written as <work> and kfp.local's per-run folder as <run>:
    each run has its own (paths in args.yaml)."""
    text = (store / key).read_text().replace(str(store.parent), "<work>")
    return json.loads(re.sub(r"kfp-local/[^/\"]+/", "kfp-local/<run>/", text))


# What differs between any two runs, whatever runs them: how long things took.
TIMINGS = re.compile(r"seconds|duration|elapsed|_at$|time")


def differences(left, right, path="") -> list[str]:
    """Where two JSON documents differ, floats to 1e-6 (both runs train with the same locked torch
    on CPU) and timings left out."""
    if isinstance(left, dict) and isinstance(right, dict):
        return [difference for key in sorted(left.keys() | right.keys()) if not TIMINGS.search(key)
                for difference in (differences(left[key], right[key], f"{path}.{key}")
                                   if key in left and key in right else [f"{path}.{key}: only in one run"])]
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [difference for index, (a, b) in enumerate(zip(left, right))
                for difference in differences(a, b, f"{path}[{index}]")]
    if isinstance(left, float) and isinstance(right, (int, float)):
        return [] if math.isclose(left, right, rel_tol=1e-6, abs_tol=1e-9) else [f"{path}: {left} != {right}"]
    return [] if left == right else [f"{path}: {left!r} != {right!r}"]


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("demo")
    return {runner: run_demo(root / runner, runner) for runner in ("subprocess", "docker")}


def test_docker_steps_ran_in_the_images_the_pipeline_names(stores):
    """Published runs record the git revision of the code that ran: in a container, the image's label."""
    labels = json.loads(subprocess.run(["docker", "image", "inspect", images.cpu_image()], capture_output=True,
                                       text=True, check=True).stdout)[0]["Config"]["Labels"]
    recorded = read_json(stores["docker"], f"runs/{RUN_ID}/metrics.json")["code_version"]
    assert recorded["git_revision"] == labels["org.opencontainers.image.revision"]
    attempts = list((stores["docker"] / "models" / MODEL_NAME / "attempts").glob("*.json"))
    assert attempts and images.cpu_image() in attempts[0].read_text()


def test_docker_run_gives_the_subprocess_runs_verdict_metrics_report_and_model(stores):
    subprocess_store, docker_store = stores["subprocess"], stores["docker"]
    key = f"runs/{RUN_ID}/sanity/verdict.json"
    found = differences(read_json(subprocess_store, key), read_json(docker_store, key), "verdict")
    metrics = [read_json(store, f"runs/{RUN_ID}/metrics.json") for store in (subprocess_store, docker_store)]
    for field in ("metrics", "by_modality", "dataset_fingerprint", "hyperparameters"):
        found += differences(metrics[0][field], metrics[1][field], field)
    assert not found, "\n".join(found)
    reports = [store / f"runs/{RUN_ID}/report/report.html" for store in (subprocess_store, docker_store)]
    assert all(report.stat().st_size > 0 for report in reports)
    production = [read_json(store, f"models/{MODEL_NAME}/production.json") for store in (subprocess_store, docker_store)]
    assert production[0]["run_id"] == RUN_ID  # promoted
    # Not its sha256: the checkpoint holds its training date and paths, so the bytes differ by run.
    found = [difference for difference in differences(*production, "production") if ".sha256" not in difference]
    assert not found, "\n".join(found)
    published = [sorted(re.sub(r"/history/\d{8}T\d+Z-", "/history/<time>-", path.relative_to(store).as_posix())
                        for path in (store / "models" / MODEL_NAME).rglob("*") if path.is_file())
                 for store in (subprocess_store, docker_store)]
    assert published[0] == published[1] and published[0]
