"""The compiled pipeline is what a cluster runs: check its Kubernetes placement and parameters."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format, struct_pb2

from components.config import RunParameters, SanityConfig, TrainConfig, run_parameter_types, run_parameters_of
from pipelines.cli import main
from pipelines.client import parameter_types, parse_params
from pipelines.compile import COMMITTED_PIPELINE, compile_pipeline
from pipelines.images import cpu_image, cuda_image
from pipelines.kfp_backends import NEWEST, OLDEST
from pipelines.kfp_defaults import DEFAULT_PIPELINE_NAME as PIPELINE_NAME
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
    train = k8s["exec-train-detector"]
    assert train["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in train["tolerations"]


def _driver_gpu_limit(spec: dict, arguments: dict) -> str:
    """The `nvidia.com/gpu` limit the KFP backend's driver (2.17, driver.go and resolve.go) puts on the
    training pod: a runtime `resourceCount` is the executor input parameter read with GetStringValue(),
    which is empty for any value that is not a string, and an empty count sets no limit."""
    count = spec["deploymentSpec"]["executors"]["exec-train-detector"]["container"]["resources"]["accelerator"][
        "resourceCount"]
    placeholder = re.fullmatch(r"\{\{\$\.inputs\.parameters\['pipelinechannel--(\w+)'\]\}\}", count)
    if placeholder is None:
        return count
    name = placeholder.group(1)
    value = arguments.get(name, spec["root"]["inputDefinitions"]["parameters"][name].get("defaultValue"))
    return json_format.ParseDict(value, struct_pb2.Value()).string_value


def test_the_backend_gives_the_training_pod_the_gpus_the_run_asks_for(gpu_pipeline):
    spec, _ = gpu_pipeline
    assert _driver_gpu_limit(spec, {}) == "1"
    arguments = parse_params(["num_gpus=4"], parameter_types(spec))  # as `pogona submit --param` sends it
    assert _driver_gpu_limit(spec, arguments) == "4"


def _component_inputs(spec: dict, task: str) -> dict:
    """The inputs the component of `task` declares: those its body is called with."""
    component = _tasks(spec)[task]["componentRef"]["name"]
    return spec["components"][component]["inputDefinitions"]["parameters"]


def test_no_component_input_is_a_constant_holding_parameter_placeholders(gpu_pipeline):
    """Launchers before backend 2.14 replace such placeholders in random order and may leave them in place
    (kubeflow/pipelines#11035). The compiler's own `accelerator_count` input is read by no component: the
    driver takes the GPU count from the num_gpus channel."""
    spec, _ = gpu_pipeline
    for name, task in _tasks(spec).items():
        declared = _component_inputs(spec, name) if "componentRef" in task else {}
        for input_name, source in task.get("inputs", {}).get("parameters", {}).items():
            constant = json.dumps(source.get("runtimeValue", {}).get("constant", ""))
            assert input_name not in declared or "{{$.inputs.parameters" not in constant, (name, input_name)


@pytest.mark.parametrize("task, config", [
    ("decide-training", TrainConfig), ("train-detector", TrainConfig), ("sanity-gate", SanityConfig)])
def test_each_setting_reaches_its_components_as_the_run_parameter_itself(gpu_pipeline, task, config):
    spec, _ = gpu_pipeline
    settings = run_parameters_of(config)
    assert settings, f"no run parameter sets {config.__name__}"
    inputs, declared = _tasks(spec)[task]["inputs"]["parameters"], _component_inputs(spec, task)
    pipeline_parameters = spec["root"]["inputDefinitions"]["parameters"]
    for parameter in settings:
        source = inputs[parameter]["componentInputParameter"]
        assert source.removeprefix("pipelinechannel--") == parameter, (task, parameter)
        assert declared[parameter]["parameterType"] == pipeline_parameters[parameter]["parameterType"], parameter


def test_steps_that_load_data_with_workers_get_a_memory_backed_shm(gpu_pipeline):
    _, k8s = gpu_pipeline
    for executor in ("exec-sanity-gate", "exec-train-detector", "exec-evaluate-and-report"):
        shm = [m for m in k8s[executor].get("emptyDirMounts", []) if m["mountPath"] == "/dev/shm"]
        assert shm and shm[0]["medium"] == "Memory" and shm[0]["sizeLimit"], executor


def test_every_step_has_a_timeout_and_the_run_a_deadline(gpu_pipeline, tmp_path):
    _, k8s = gpu_pipeline
    for name, config in k8s.items():
        assert int(config["activeDeadlineSeconds"]) > 0, name
    train_timeout = int(k8s["exec-train-detector"]["activeDeadlineSeconds"])

    def run_config(placement: Placement, backend=NEWEST) -> dict:
        _, platform = yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", placement, backend).read_text())
        return platform["platforms"]["kubernetes"].get("pipelineConfig", {})

    assert run_config(Placement.for_profile("gpu"))["activeDeadlineSeconds"] > train_timeout
    assert run_config(replace(Placement.for_profile("gpu"), run_deadline_s=0)) == {}
    assert run_config(Placement.for_profile("gpu"), backend=OLDEST) == {}  # backends before 2.17 reject it


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


def test_the_run_form_offers_exactly_the_run_parameters_with_their_defaults(gpu_pipeline):
    spec, _ = gpu_pipeline
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert {name: parameter.get("defaultValue") for name, parameter in parameters.items()} == asdict(RunParameters())
    kfp_types = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN"}
    assert parameter_types(spec) == {name: kfp_types[kind] for name, kind in run_parameter_types().items()}


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


def test_only_training_retries_and_sync_is_never_cached(gpu_pipeline):
    spec, _ = gpu_pipeline
    tasks = _tasks(spec)
    assert int(tasks["train-detector"]["retryPolicy"]["maxRetryCount"]) >= 1
    assert [name for name, task in tasks.items() if "retryPolicy" in task] == ["train-detector"]
    assert tasks["validate-dataset"]["cachingOptions"] == {}
    assert tasks["sanity-gate"]["cachingOptions"] == {"enableCache": True}


def _condition_around(spec: dict, task: str) -> str:
    """The trigger condition of the dsl.If / dsl.Else branch whose own DAG runs `task`."""
    branch = next(name for name, component in spec["components"].items()
                  if task in component.get("dag", {}).get("tasks", {}))
    return next(t["triggerPolicy"]["condition"] for t in _tasks(spec).values()
                if t.get("componentRef", {}).get("name") == branch)


def test_training_branch_depends_on_the_skip_decision(gpu_pipeline):
    spec, _ = gpu_pipeline
    decided_to_train = "inputs.parameter_values['pipelinechannel--decide-training-train'] == true"
    assert _condition_around(spec, "train-detector") == decided_to_train
    assert _condition_around(spec, "publish-model") == decided_to_train
    assert _condition_around(spec, "training-skipped") == f"!({decided_to_train})"


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
    stale.write_text(COMMITTED_PIPELINE.read_text().replace(PIPELINE_NAME, "old-name", 1))
    assert main(["compile", "--check", "--output", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err


def test_compile_for_a_newer_backend_needs_its_own_output_and_refuses_one_too_old(tmp_path, capsys):
    assert main(["compile", "--kfp-version", "2.17"]) == 2
    assert "give --output" in capsys.readouterr().err
    assert main(["compile", "--kfp-version", "2.4"]) == 2
    assert "older than 2.5" in capsys.readouterr().err
    newer = tmp_path / "kfp-2.17.yaml"
    assert main(["compile", "--kfp-version", "2.17.0", "--output", str(newer)]) == 0
    _, platform = yaml.safe_load_all(newer.read_text())
    assert platform["platforms"]["kubernetes"]["pipelineConfig"]["activeDeadlineSeconds"] > 0
    assert main(["compile", "--check", "--kfp-version", "2.17", "--output", str(newer)]) == 0
    assert main(["compile", "--check", "--output", str(newer)]) == 1  # the default, 2.5, has no deadline
