"""The compiled pipeline is what a cluster runs: check its Kubernetes placement and parameters."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from google.protobuf import json_format, struct_pb2

from components.config import (RunParameters, SanityConfig, TrainConfig, config_from_json, run_parameter_types,
                               run_parameters_of)
from pipelines.cli import main
from pipelines.client import parameter_types, parse_params
from pipelines.compile import COMMITTED_PIPELINE, compile_pipeline
from pipelines.images import cpu_image, cuda_image
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


def _launcher_text(value: struct_pb2.Value) -> str:
    """A parameter's value as the backend's launcher (2.17, launcher_v2.go getPlaceholders) writes it into text:
    a string as it is, a number in its shortest form without exponent (strconv 'f', -1), a bool as true/false."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return np.format_float_positional(value.number_value, trim="-")
    if kind == "bool_value":
        return str(value.bool_value).lower()
    return value.string_value


def _executor_input_value(spec: dict, task: str, name: str, arguments: dict) -> str:
    """What the KFP executor in the pod reads for an input the pipeline built from several run parameters.

    The compiler makes it a runtime constant holding `{{$.inputs.parameters['pipelinechannel--…']}}`
    and gives the task one input per channel. The driver (resolve.go) passes the constant on as it
    is and resolves the channels; the launcher (compileCmdAndArgs) writes the executor input as
    JSON and replaces each placeholder in that text with the parameter's value.
    """
    parameters = _tasks(spec)[task]["inputs"]["parameters"]
    executor_input = json.dumps({"inputs": {"parameterValues": {name: parameters[name]["runtimeValue"]["constant"]}}})
    pipeline_parameters = spec["root"]["inputDefinitions"]["parameters"]
    for channel, source in parameters.items():
        if "componentInputParameter" in source:
            parameter = source["componentInputParameter"].removeprefix("pipelinechannel--")
            value = arguments.get(parameter, pipeline_parameters[parameter].get("defaultValue"))
            executor_input = executor_input.replace(f"{{{{$.inputs.parameters['{channel}']}}}}",
                                                    _launcher_text(json_format.ParseDict(value, struct_pb2.Value())))
    return json.loads(executor_input)["inputs"]["parameterValues"][name]


def _changed(value: str | int | float) -> str | int | float:
    """Another value of the same type; a float becomes a whole number, which the backend writes without '.0'."""
    if isinstance(value, str):
        return f"{value}/changed"
    return value + 1 if isinstance(value, int) else float(int(value) + 16)


@pytest.mark.parametrize("task, config_input, config", [
    ("decide-training", "train_config", TrainConfig), ("train-detector", "train_config", TrainConfig),
    ("sanity-gate", "sanity_config", SanityConfig)])
def test_each_component_gets_the_configuration_the_run_parameters_set(gpu_pipeline, task, config_input, config):
    spec, _ = gpu_pipeline
    settings = run_parameters_of(config)
    assert settings, f"no run parameter sets {config.__name__}"
    for values in ({}, {parameter: _changed(getattr(RunParameters(), parameter)) for parameter in settings}):
        arguments = parse_params([f"{name}={value}" for name, value in values.items()], parameter_types(spec))
        run = replace(RunParameters(), **values)
        expected = config(**{field: getattr(run, parameter) for parameter, field in settings.items()})
        assert config_from_json(config, _executor_input_value(spec, task, config_input, arguments)) == expected


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

    def run_config(placement: Placement) -> dict:
        _, platform = yaml.safe_load_all(compile_pipeline(tmp_path / "p.yaml", placement).read_text())
        return platform["platforms"]["kubernetes"].get("pipelineConfig", {})

    assert run_config(Placement.for_profile("gpu"))["activeDeadlineSeconds"] > train_timeout
    assert run_config(replace(Placement.for_profile("gpu"), run_deadline_s=0)) == {}  # for backends before 2.17


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
    stale.write_text(COMMITTED_PIPELINE.read_text().replace(PIPELINE_NAME, "old-name", 1))
    assert main(["compile", "--check", "--output", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
