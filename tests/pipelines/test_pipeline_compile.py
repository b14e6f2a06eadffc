"""The compiled pipeline is what a cluster runs: check its Kubernetes placement and parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from pipelines.compile import COMMITTED_PIPELINE, compile_pipeline
from pipelines.images import cpu_image, cuda_image
from pipelines.pipeline import Placement


def _load(path: Path) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def gpu_pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    return _load(compile_pipeline(tmp_path_factory.mktemp("gpu") / "p.yaml", Placement.for_profile("gpu")))


def _tasks(spec: dict) -> dict:
    """Every task of the pipeline, including those inside dsl.If / dsl.Else branches."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    return tasks


def test_training_is_placed_on_nvidia_nodes(gpu_pipeline):
    spec, k8s = gpu_pipeline
    container = spec["deploymentSpec"]["executors"]["exec-train-detector"]["container"]
    assert container["image"] == cuda_image()
    accelerator = container["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu"
    assert accelerator["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--num_gpus']}}"
    train = k8s["exec-train-detector"]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in train["tolerations"]
    shm = [m for m in train["emptyDirMounts"] if m["mountPath"] == "/dev/shm"]
    assert shm and shm[0]["medium"] == "Memory"
    assert container["resources"]["resourceCpuRequest"] and container["resources"]["resourceMemoryRequest"]


def test_cpu_steps_use_the_cpu_image_and_no_gpu(gpu_pipeline):
    spec, k8s = gpu_pipeline
    for name, executor in spec["deploymentSpec"]["executors"].items():
        if name == "exec-train-detector":
            continue
        assert executor["container"]["image"] == cpu_image(), name
        assert "accelerator" not in executor["container"].get("resources", {}), name
        assert "nodeSelector" not in k8s[name] and "tolerations" not in k8s[name], name
    assert cpu_image() != cuda_image()


def test_s3_credentials_come_from_a_secret_and_never_appear_as_values(gpu_pipeline):
    spec, k8s = gpu_pipeline
    for name, config in k8s.items():
        (secret,) = config["secretAsEnv"]
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("s3_secret_name")
        assert {m["envVar"] for m in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for executor in spec["deploymentSpec"]["executors"].values():
        env_names = {e["name"] for e in executor["container"].get("env", [])}
        assert not env_names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_pods_install_nothing_at_start(gpu_pipeline):
    spec, _ = gpu_pipeline
    for name, executor in spec["deploymentSpec"]["executors"].items():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command and "pip3 install" not in command, name


def test_parameters_carry_defaults_and_descriptions(gpu_pipeline):
    spec, _ = gpu_pipeline
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("dataset_uri", "store_uri", "model", "base_weights_uri", "epochs", "patience", "imgsz", "batch",
                 "num_gpus", "sanity_min_loss_drop", "min_map50", "min_margin", "skip_if_unchanged"):
        assert parameters[name].get("description"), name
    assert parameters["epochs"]["defaultValue"] == 100
    assert parameters["patience"]["defaultValue"] == 10
    assert parameters["batch"]["defaultValue"] == 0.95
    assert parameters["min_map50"]["defaultValue"] == 0.95
    assert parameters["training_device"]["defaultValue"] == "cuda"


def test_training_retries_and_sync_is_never_cached(gpu_pipeline):
    spec, _ = gpu_pipeline
    tasks = _tasks(spec)
    assert int(tasks["train-detector"]["retryPolicy"]["maxRetryCount"]) >= 1
    assert tasks["validate-dataset"]["cachingOptions"] == {}
    assert tasks["sanity-gate"]["cachingOptions"] == {"enableCache": True}


def test_training_branch_depends_on_the_skip_decision(gpu_pipeline):
    spec, _ = gpu_pipeline
    conditions = [t.get("triggerPolicy", {}).get("condition", "") for t in _tasks(spec).values()]
    assert any("decide-training" in c and "train" in c for c in conditions)
    assert "training-skipped" in _tasks(spec)


def test_kind_profile_trains_on_cpu_without_gpu_placement(tmp_path):
    spec, k8s = _load(compile_pipeline(tmp_path / "kind.yaml", Placement.for_profile("kind")))
    train = spec["deploymentSpec"]["executors"]["exec-train-detector"]["container"]
    assert train["image"] == cpu_image()
    assert "accelerator" not in train["resources"]
    assert "nodeSelector" not in k8s["exec-train-detector"]
    assert spec["root"]["inputDefinitions"]["parameters"]["training_device"]["defaultValue"] == "cpu"


def test_committed_pipeline_matches_the_code(capsys):
    assert main(["compile", "--check"]) == 0
    assert COMMITTED_PIPELINE.exists()


def test_check_reports_drift(tmp_path, capsys):
    stale = tmp_path / "stale.yaml"
    stale.write_text(COMMITTED_PIPELINE.read_text().replace("pogona-train", "old-name", 1))
    assert main(["compile", "--check", "--output", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
