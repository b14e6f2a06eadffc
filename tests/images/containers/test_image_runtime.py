"""The built images as a cluster runs them: Kubernetes' runAsNonRoot, OpenShift's arbitrary UID in
group 0, no network; labels, no build leftovers; the CUDA image's torch and its refusal without a GPU.
Needs the images `make images` built under the names the pipeline compiles with (make test-images)."""

from __future__ import annotations

import json
import subprocess

import pytest

from pipelines import images

OPENSHIFT_USER = "1000321000:0"  # an arbitrary UID from a namespace's range, group 0
WRITABLE = ("/home/pogona", "/var/cache/pogona", "/gcs", "/minio", "/s3")


def docker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def run_in(image: str, *command: str, user: str = "") -> subprocess.CompletedProcess:
    """One command in a fresh container with no network, as a pod without egress runs it."""
    return docker("run", "--rm", "--network", "none", *(["--user", user] if user else []), image, *command)


def inspect(image: str) -> dict:
    result = docker("image", "inspect", image)
    assert result.returncode == 0, f"{image} is not built: run `make images` ({result.stderr.strip()})"
    return json.loads(result.stdout)[0]


@pytest.mark.parametrize("flavour", images.FLAVOURS)
def test_images_run_as_a_numeric_non_root_user_and_carry_their_labels(flavour):
    config = inspect(images.image_name(flavour))["Config"]
    assert config["User"] == "10001"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == f"pogona-{flavour}"
    assert labels["org.opencontainers.image.version"] == images.image_tag(flavour)
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    assert labels["org.opencontainers.image.base.name"]


@pytest.mark.parametrize("user", ["", OPENSHIFT_USER], ids=["image-user", "openshift-uid"])
def test_cpu_image_runs_the_cli_and_writes_where_it_must_under_any_uid_in_group_0(user):
    script = ("import os, components; from components.runtime.yolo_env import offline_ultralytics; "
              "offline_ultralytics(); "
              f"[open(os.path.join(d, 'probe'), 'w').write('x') for d in {WRITABLE!r}]; "
              "print(os.getuid(), os.getgid())")
    result = run_in(images.cpu_image(), "python", "-c", script, user=user)
    assert result.returncode == 0, result.stderr
    uid, gid = map(int, result.stdout.split()[-2:])
    assert uid != 0 and gid == 0
    assert uid == (int(OPENSHIFT_USER.split(":")[0]) if user else 10001)
    help_text = run_in(images.cpu_image(), "pogona", "--help", user=user)
    assert help_text.returncode == 0 and "usage: pogona" in help_text.stdout


@pytest.mark.parametrize("flavour", images.FLAVOURS)
def test_no_pip_cache_build_certificates_or_sources_are_left_in_the_image(flavour):
    script = ("import glob, os; "
              "print([p for p in ['/root/.cache/pip', '/home/pogona/.cache/pip', '/etc/pogona-build-ca', '/src', "
              "'/tmp/fetch_weights.py'] if os.path.exists(p)])")
    result = run_in(images.image_name(flavour), "python", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_cuda_image_holds_a_cuda_build_of_torch():
    result = run_in(images.cuda_image(), "python", "-c", "import torch; print(torch.__version__, torch.version.cuda)")
    assert result.returncode == 0, result.stderr
    version, cuda = result.stdout.split()[-2:]
    assert cuda != "None" and version.startswith("2."), result.stdout


def test_training_without_a_gpu_refuses_cuda_in_one_line(tmp_path):
    """No GPU reaches this container: the training step must stop at once, saying why, not train on CPU."""
    result = run_in(images.cuda_image(), "pogona", "train", "--data", "/nonexistent/data.yaml", "--device", "cuda")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "asks for CUDA, but CUDA is not available" in lines[0], result.stderr
