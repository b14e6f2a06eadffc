"""Shared fixtures: real S3 endpoints on loopback (moto's standalone server in its own process, and
Ceph's radosgw), small generated datasets, and one tiny trained ultralytics run."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.training.weights import WEIGHTS_DIR_ENV


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with code {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"moto server did not listen on port {port} within {timeout}s")


@contextlib.contextmanager
def _moto_server(**env: str) -> Iterator[str]:
    """moto's standalone S3 server in its own process on loopback; yields its endpoint URL."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(autouse=True)
def no_baked_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from the weights they make, never from weights baked into the machine they run on."""
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)


@pytest.fixture(autouse=True)
def pogona_info_lines(caplog: pytest.LogCaptureFixture) -> None:
    """Every test sees pogona's INFO lines in caplog, whether or not an earlier test ran an entry point
    (`show_logs` sets the logger's level for the whole process)."""
    caplog.set_level(logging.INFO, logger="pogona")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The S3 endpoint the tests talk to (moto's server, credentials not checked)."""
    with _moto_server() as url:
        yield url


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the standard AWS variables at the loopback server (as a user would for MinIO)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A fresh, empty bucket; returns its URI `s3://<name>`."""
    import boto3

    name = f"pogona-{uuid.uuid4().hex[:12]}"
    boto3.session.Session().client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def radosgw_server():
    """Ceph's radosgw (tests/radosgw.py): a second, real S3 server that checks signatures; started on
    first use, stopped after the session. A failed start fails the tests that use it, with the logs' tail."""
    from radosgw import radosgw

    with radosgw() as gateway:
        yield gateway


@pytest.fixture
def radosgw_env(radosgw_server, monkeypatch: pytest.MonkeyPatch):
    """Point the standard AWS variables at radosgw, with its user's keys."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", radosgw_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", radosgw_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", radosgw_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return radosgw_server


@pytest.fixture
def radosgw_bucket(radosgw_env) -> str:
    """A fresh, empty bucket on radosgw; returns its URI `s3://<name>`."""
    import boto3

    name = f"pogona-{uuid.uuid4().hex[:12]}"
    # a session of its own: boto3's default one keeps the first credentials it resolved (moto's, in a whole run)
    boto3.session.Session().client("s3", endpoint_url=radosgw_env.endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def demo_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated dataset (80 images, 96 px) in a folder; treat it as read-only."""
    root = tmp_path_factory.mktemp("demo") / "dataset"
    generate_demo_dataset(str(root), DemoSpec(images=80, size=96), progress=False)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, demo_dataset_dir: Path) -> Path:
    """One tiny ultralytics run (yolo11n, 2 epochs, 64 px) for steps that consume weights; read-only."""
    from components.data.dataset import load_dataset
    from components.runtime.yolo_env import offline_ultralytics

    data = load_dataset(demo_dataset_dir).write_yaml(tmp_path_factory.mktemp("trained_data") / "data.yaml")
    project = tmp_path_factory.mktemp("runs")
    offline_ultralytics().YOLO("yolo11n.yaml").train(data=str(data), epochs=2, imgsz=64, batch=16, device="cpu",
                                                     workers=0, project=str(project), name="tiny", exist_ok=True,
                                                     seed=42, verbose=False)
    return project / "tiny"


@pytest.fixture
def s3_faults(s3_bucket: str, monkeypatch: pytest.MonkeyPatch):
    """A fault-injecting proxy (tests/faults.py) in front of the loopback server, with the AWS
    variables pointing at it; ask for `s3_bucket` too to get the bucket it serves."""
    from faults import FaultProxy

    with FaultProxy(os.environ["AWS_ENDPOINT_URL_S3"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        yield proxy


@pytest.fixture(scope="session")
def s3_server_with_auth() -> str:
    """A second loopback S3 server that checks credentials (every key is unknown to it)."""
    with _moto_server(INITIAL_NO_AUTH_ACTION_COUNT="0") as url:
        yield url


@pytest.fixture(scope="session")
def empty_label_dataset(demo_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's failure: every label file exists and is empty (ultralytics trains on, only warning)."""
    root = tmp_path_factory.mktemp("empty") / "dataset"
    shutil.copytree(demo_dataset_dir, root, ignore=shutil.ignore_patterns("*.cache"))
    for label in (root / "labels").rglob("*.txt"):
        label.write_text("")
    return root


@pytest.fixture(scope="session")
def no_modality_dataset_dir(demo_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset's images and labels with no modality in their paths (`images/val/frame_00003.jpg`):
    the layout of a dataset that states none; read-only."""
    root = tmp_path_factory.mktemp("plain") / "dataset"
    for image in sorted((demo_dataset_dir / "images").rglob("*.jpg")):
        split, stem = image.parent.parent.name, image.stem.split("_", 1)[1]
        for kind, source in (("images", image), ("labels", demo_dataset_dir / "labels" / split
                                                  / image.parent.name / f"{image.stem}.txt")):
            target = root / kind / split / f"frame_{stem}{source.suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    shutil.copyfile(demo_dataset_dir / "data.yaml", root / "data.yaml")
    return root
