"""The training pipeline: validate -> skip decision -> CPU sanity gate -> training -> evaluate + report -> publish.

Placement (images, GPU scheduling, step sizes and timeouts) is decided when the pipeline is
compiled, from a `Placement`; everything a user may change per run is a pipeline parameter
(`components.config.RunParameters`) with a default and a description in the KFP UI.
"""

import inspect
from dataclasses import dataclass, fields, replace
from types import SimpleNamespace
from typing import Any, Callable

from kfp import dsl, kubernetes

from components.config import RunParameters, SanityConfig, TrainConfig, run_parameter_types, run_parameters_of
from pipelines.images import cpu_image, cuda_image
from pipelines.kfp_backends import OLDEST, Backend
from pipelines.kfp_components import build_components
from pipelines.kfp_defaults import DEFAULT_PIPELINE_NAME as PIPELINE_NAME
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
S3_CONFIG_KEYS = {"AWS_ENDPOINT_URL_S3": "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION"}
GRACE_SECONDS_ENV = "POGONA_GRACE_SECONDS"  # read by components/training/trainer.py
CACHE_MOUNT = "/var/cache/pogona"  # the images set POGONA_CACHE_DIR to this path
MINUTE, HOUR = 60, 3600


@dataclass(frozen=True)
class StepSize:
    """One step's container: requests, limits, memory-backed /dev/shm, and how long its pod may run.

    Every step sets limits so a namespace LimitRange never fills in a default limit below its
    request (the pod would be rejected). A memory-backed /dev/shm counts towards the memory
    limit, so `memory_limit` leaves room for it. The timeout is the pod's activeDeadlineSeconds:
    it ends a pod that cannot start (a missing Secret) but not one that is never scheduled; the
    run deadline covers that.
    """

    cpu: str
    memory: str
    cpu_limit: str
    memory_limit: str
    timeout_s: int
    shm: str = ""


@dataclass(frozen=True)
class StepSizes:
    """Sizes for production nodes: training owns a GPU node's share; bookkeeping steps stay small."""

    validate: StepSize = StepSize("1", "2Gi", "4", "4Gi", timeout_s=2 * HOUR)
    decide: StepSize = StepSize("100m", "256Mi", "500m", "512Mi", timeout_s=10 * MINUTE)
    sanity: StepSize = StepSize("4", "6Gi", "4", "10Gi", timeout_s=HOUR, shm="2Gi")
    train: StepSize = StepSize("8", "32Gi", "16", "64Gi", timeout_s=24 * HOUR, shm="16Gi")
    analyze: StepSize = StepSize("2", "6Gi", "4", "10Gi", timeout_s=2 * HOUR, shm="2Gi")
    publish: StepSize = StepSize("500m", "1Gi", "2", "2Gi", timeout_s=HOUR)


KIND_SIZES = StepSizes(
    validate=StepSize("250m", "512Mi", "2", "2Gi", timeout_s=HOUR),
    decide=StepSize("100m", "256Mi", "500m", "512Mi", timeout_s=10 * MINUTE),
    sanity=StepSize("1", "2Gi", "2", "4Gi", timeout_s=HOUR, shm="1Gi"),
    train=StepSize("1", "3Gi", "2", "6Gi", timeout_s=4 * HOUR, shm="1Gi"),
    analyze=StepSize("500m", "2Gi", "2", "4Gi", timeout_s=HOUR, shm="1Gi"),
    publish=StepSize("100m", "256Mi", "1", "1Gi", timeout_s=HOUR))


@dataclass(frozen=True)
class Placement:
    """Where each step runs on Kubernetes; fixed at compile time."""

    cpu_image: str
    cuda_image: str
    gpu: bool = True
    gpu_node_selector: tuple[str, str] = ("nvidia.com/gpu.present", "true")
    gpu_toleration_key: str = "nvidia.com/gpu"
    s3_config_map: str = "pogona-s3-endpoint"
    sizes: StepSizes = StepSizes()
    # Retries resume from the last per-epoch checkpoint: they help when a node or pod is lost. Every failure
    # a retry cannot fix that is knowable before training is refused by a step without retries (validate:
    # the dataset; decide: the settings); what only training finds ends the retries (training/refusals.py).
    train_retries: int = 2
    # SIGTERM to SIGKILL for pipeline pods, as manifests/kfp/training-grace sets it (KFP has no per-task
    # field); an evicted training waits this less 10 s for its checkpoint uploads (POGONA_GRACE_SECONDS).
    termination_grace_s: int = 120
    # The whole run, pending pods included (an unschedulable GPU pod); compiled in for KFP backends >= 2.17.
    run_deadline_s: int = 30 * HOUR

    @property
    def code_version(self) -> str:
        """The code a run executes: its images, whose tags change with the code (pipelines/images.py)."""
        return self.cpu_image if self.cpu_image == self.cuda_image else f"{self.cpu_image} {self.cuda_image}"

    @classmethod
    def for_profile(cls, profile: str, cpu: str | None = None, cuda: str | None = None) -> "Placement":
        """`gpu`: production shape; `kind`: CPU-only training for a local cluster."""
        placement = cls(cpu_image=cpu or cpu_image(), cuda_image=cuda or cuda_image())
        if profile == "gpu":
            return placement
        if profile == "kind":
            return replace(placement, gpu=False, cuda_image=placement.cpu_image, sizes=KIND_SIZES,
                           run_deadline_s=6 * HOUR)
        raise ValueError(f"unknown profile {profile!r} (gpu or kind)")


def _on_cluster(task: dsl.PipelineTask, placement: Placement, backend: Backend, s3_secret_name: str,
                size: StepSize, *, caching: bool = True) -> dsl.PipelineTask:
    """S3 credentials from the Secret, endpoint from the ConfigMap, size, timeout, caching, dataset cache.

    The ConfigMap may be missing (AWS S3 needs no endpoint) only on backends that know `optional`;
    before 2.15 it must exist with both keys.

    The dataset cache is the pod's emptyDir. A PersistentVolumeClaim shared between runs is not
    offered: kfp-kubernetes cannot set the pod's fsGroup, so the non-root images could not write
    to a volume its provisioner created root-owned, and CPU and GPU pods on different nodes would
    need ReadWriteMany storage.
    """
    kubernetes.use_secret_as_env(task, secret_name=s3_secret_name, secret_key_to_env=S3_SECRET_KEYS)
    kubernetes.use_config_map_as_env(task, config_map_name=placement.s3_config_map,
                                     config_map_key_to_env=S3_CONFIG_KEYS, optional=backend.optional_config_map)
    if not backend.optional_config_map:
        _drop_optional(task)
    task.set_cpu_request(size.cpu).set_cpu_limit(size.cpu_limit)
    task.set_memory_request(size.memory).set_memory_limit(size.memory_limit).set_caching_options(caching)
    kubernetes.set_timeout(task, size.timeout_s)
    if size.shm:  # PyTorch DataLoader workers share batches through /dev/shm (64 MiB by default)
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=size.shm)
    kubernetes.empty_dir_mount(task, volume_name="dataset-cache", mount_path=CACHE_MOUNT)
    return task


def _drop_optional(task: dsl.PipelineTask) -> None:
    """Leave out the `optional` of SecretAsEnv and ConfigMapAsEnv: kfp-kubernetes writes it even when false,
    and backends before 2.15 know neither field, so they would reject the whole pipeline."""
    for mapping in task.platform_config["kubernetes"]["secretAsEnv"] + task.platform_config["kubernetes"][
            "configMapAsEnv"]:
        mapping.pop("optional", None)


def _on_gpu(task: dsl.PipelineTask, placement: Placement, num_gpus: str) -> None:
    """GPU placement; the count is a string parameter because the KFP driver reads it with GetStringValue."""
    key, value = placement.gpu_node_selector
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(num_gpus)
    kubernetes.add_node_selector(task, label_key=key, label_value=value)
    kubernetes.add_toleration(task, key=placement.gpu_toleration_key, operator="Exists", effect="NoSchedule")


def run_signature(defaults: RunParameters) -> tuple[inspect.Signature, str]:
    """The pipeline's parameters and their Google-style docstring, from `RunParameters`."""
    types = run_parameter_types()
    parameters = [inspect.Parameter(item.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=types[item.name],
                                    default=getattr(defaults, item.name)) for item in fields(RunParameters)]
    docs = "\n".join(f"    {item.name}: {item.metadata['help']}" for item in fields(RunParameters))
    return inspect.Signature(parameters), f"Train, evaluate and publish a YOLO11 detector.\n\nArgs:\n{docs}\n"


def settings_of(config: type, run: SimpleNamespace) -> dict[str, Any]:
    """The run parameters that set `config`'s fields, each to be passed as a component input of its own.

    One input per setting, never a text the pipeline assembles from several parameters: KFP compiles
    such a text to a constant holding `{{$.inputs.parameters[...]}}` placeholders, which launchers
    before backend 2.14 replace in random order and may leave in place (kubeflow/pipelines#11035).
    """
    return {parameter: getattr(run, parameter) for parameter in run_parameters_of(config)}


def build_pipeline(placement: Placement, backend: Backend = OLDEST) -> Callable:
    """The @dsl.pipeline for a placement and the oldest KFP backend it must load on (the compiled YAML and
    `kfp.local` both use it)."""
    steps = build_components(placement.cpu_image, placement.cuda_image)
    defaults = RunParameters(training_device="cuda" if placement.gpu else "cpu")
    run_deadline_s = placement.run_deadline_s if backend.run_deadline else 0
    run_config = dsl.PipelineConfig(active_deadline_seconds=run_deadline_s or None)
    signature, docstring = run_signature(defaults)

    def pogona_train(*values: Any) -> None:  # KFP passes one channel per parameter, in signature order
        run = SimpleNamespace(**dict(zip(signature.parameters, values)))
        sizes = placement.sizes

        def on_cluster(task: dsl.PipelineTask, size: StepSize, caching: bool = True) -> dsl.PipelineTask:
            return _on_cluster(task, placement, backend, run.s3_secret_name, size, caching=caching)

        validate = on_cluster(steps.validate(dataset_uri=run.dataset_uri), sizes.validate, caching=False)
        validate.set_display_name("sync and validate dataset")
        train_settings, sanity_settings = settings_of(TrainConfig, run), settings_of(SanityConfig, run)
        decide = on_cluster(steps.decide(
            store_uri=run.store_uri, model_name=run.model_name, fingerprint=validate.outputs["Output"],
            skip_if_unchanged=run.skip_if_unchanged, code_version=placement.code_version, num_gpus=run.num_gpus,
            **train_settings, **sanity_settings), sizes.decide, caching=False)
        decide.set_display_name("skip if unchanged")

        with dsl.If(decide.outputs["train"] == True, name="dataset-changed"):  # noqa: E712 (KFP condition)
            sanity = on_cluster(steps.sanity(
                manifest=validate.outputs["manifest"], store_uri=run.store_uri, model=run.model,
                base_weights_uri=run.base_weights_uri, **sanity_settings), sizes.sanity)
            sanity.set_display_name("CPU sanity gate")

            train = on_cluster(steps.train(
                manifest=validate.outputs["manifest"], verdict=sanity.outputs["verdict"], store_uri=run.store_uri,
                run_id=run.run_id, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, num_gpus=run.num_gpus,
                **train_settings), sizes.train)
            train.set_display_name("train").set_retry(num_retries=placement.train_retries,
                                                      backoff_duration="60s", backoff_factor=2)
            train.set_env_variable(GRACE_SECONDS_ENV, str(placement.termination_grace_s - 10))
            if placement.gpu:
                _on_gpu(train, placement, run.num_gpus)

            analyze = on_cluster(steps.analyze(
                manifest=validate.outputs["manifest"], trained=train.outputs["trained"],
                verdict=sanity.outputs["verdict"], store_uri=run.store_uri, model_name=run.model_name,
                export_formats=run.export_formats, min_map50=run.min_map50, min_margin=run.min_margin),
                sizes.analyze)
            analyze.set_display_name("evaluate and report")

            publish = on_cluster(steps.publish(
                manifest=validate.outputs["manifest"], validation_report=validate.outputs["validation_report"],
                verdict=sanity.outputs["verdict"], trained=train.outputs["trained"],
                analysis=analyze.outputs["analysis"], store_uri=run.store_uri, run_id=run.run_id,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, model_name=run.model_name, min_map50=run.min_map50,
                min_margin=run.min_margin, attempt=decide.outputs["attempt"]), sizes.publish, caching=False)
            publish.set_display_name("publish")
        with dsl.Else(name="dataset-unchanged"):
            on_cluster(steps.skipped(note=decide.outputs["note"]), sizes.decide).set_display_name("training skipped")

    pogona_train.__signature__, pogona_train.__doc__ = signature, docstring
    return dsl.pipeline(pogona_train, name=PIPELINE_NAME, pipeline_config=run_config,
                        description="Train a YOLO11 detector: validate the dataset, prove on CPU that training "
                                    "learns, train, evaluate per modality, report, and publish the champion.")
