"""The training pipeline: validate -> skip decision -> CPU sanity gate -> training -> evaluate + report -> publish.

Placement (images, GPU scheduling, caches) is decided when the pipeline is compiled, from a
`Placement`; everything a user may change per run is a pipeline parameter with a default and
a description in the KFP UI.
"""

from dataclasses import dataclass, replace
from typing import Callable

from kfp import dsl, kubernetes

from components.config import PromotionConfig, SanityConfig, TrainConfig
from pipelines.images import cpu_image, cuda_image
from pipelines.kfp_components import build_components

PIPELINE_NAME = "pogona-train"
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
S3_CONFIG_KEYS = {"AWS_ENDPOINT_URL_S3": "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION"}
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
    analyse: StepSize = StepSize("2", "6Gi", "4", "10Gi", timeout_s=2 * HOUR, shm="2Gi")
    publish: StepSize = StepSize("500m", "1Gi", "2", "2Gi", timeout_s=HOUR)


KIND_SIZES = StepSizes(
    validate=StepSize("250m", "512Mi", "2", "2Gi", timeout_s=HOUR),
    decide=StepSize("100m", "256Mi", "500m", "512Mi", timeout_s=10 * MINUTE),
    sanity=StepSize("1", "2Gi", "2", "4Gi", timeout_s=HOUR, shm="1Gi"),
    train=StepSize("1", "3Gi", "2", "6Gi", timeout_s=4 * HOUR, shm="1Gi"),
    analyse=StepSize("500m", "2Gi", "2", "4Gi", timeout_s=HOUR, shm="1Gi"),
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
    # Retries resume from the last per-epoch checkpoint: they help when a node or pod is lost.
    train_retries: int = 2
    # The whole run, pending pods included (an unschedulable GPU pod); needs KFP backend >= 2.17, 0 for none.
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


def _on_cluster(task: dsl.PipelineTask, placement: Placement, s3_secret_name: str, size: StepSize, *,
                caching: bool = True) -> dsl.PipelineTask:
    """S3 credentials from the Secret, endpoint from the ConfigMap, size, timeout, caching, dataset cache.

    The dataset cache is the pod's emptyDir. A PersistentVolumeClaim shared between runs is not
    offered: kfp-kubernetes cannot set the pod's fsGroup, so the non-root images could not write
    to a volume its provisioner created root-owned, and CPU and GPU pods on different nodes would
    need ReadWriteMany storage.
    """
    kubernetes.use_secret_as_env(task, secret_name=s3_secret_name, secret_key_to_env=S3_SECRET_KEYS)
    kubernetes.use_config_map_as_env(task, config_map_name=placement.s3_config_map,
                                     config_map_key_to_env=S3_CONFIG_KEYS, optional=True)
    task.set_cpu_request(size.cpu).set_cpu_limit(size.cpu_limit)
    task.set_memory_request(size.memory).set_memory_limit(size.memory_limit).set_caching_options(caching)
    kubernetes.set_timeout(task, size.timeout_s)
    if size.shm:  # PyTorch DataLoader workers share batches through /dev/shm (64 MiB by default)
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=size.shm)
    kubernetes.empty_dir_mount(task, volume_name="dataset-cache", mount_path=CACHE_MOUNT)
    return task


def _on_gpu(task: dsl.PipelineTask, placement: Placement, num_gpus: str) -> None:
    """GPU placement; the count is a string parameter because the KFP driver reads it with GetStringValue."""
    key, value = placement.gpu_node_selector
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(num_gpus)
    kubernetes.add_node_selector(task, label_key=key, label_value=value)
    kubernetes.add_toleration(task, key=placement.gpu_toleration_key, operator="Exists", effect="NoSchedule")


def build_pipeline(placement: Placement) -> Callable:
    """The @dsl.pipeline for a placement (the compiled YAML and `kfp.local` both use it)."""
    steps = build_components(placement.cpu_image, placement.cuda_image)
    train_defaults, sanity_defaults, promotion_defaults = TrainConfig(), SanityConfig(), PromotionConfig()
    default_device = "cuda" if placement.gpu else "cpu"

    run_config = dsl.PipelineConfig(active_deadline_seconds=placement.run_deadline_s or None)

    @dsl.pipeline(name=PIPELINE_NAME, pipeline_config=run_config,
                  description="Train a YOLO11 detector: validate the dataset, prove on CPU that training "
                              "learns, train, evaluate per modality, report, and publish the champion.")
    def pogona_train(
        dataset_uri: str = "s3://pogona/datasets/pogona-head",
        store_uri: str = "s3://pogona",
        model_name: str = "pogona-head",
        model: str = train_defaults.model,
        base_weights_uri: str = train_defaults.weights,
        epochs: int = train_defaults.epochs,
        patience: int = train_defaults.patience,
        imgsz: int = train_defaults.imgsz,
        batch: float = train_defaults.batch,
        training_device: str = default_device,
        num_gpus: str = "1",
        sanity_epochs: int = sanity_defaults.epochs,
        sanity_batch: int = sanity_defaults.batch,
        sanity_imgsz: int = sanity_defaults.imgsz,
        sanity_max_images: int = sanity_defaults.max_images,
        sanity_min_loss_drop: float = sanity_defaults.min_loss_drop,
        sanity_min_map50: float = sanity_defaults.min_map50,
        min_map50: float = promotion_defaults.min_map50,
        min_margin: float = promotion_defaults.min_margin_map50_95,
        skip_if_unchanged: bool = True,
        export_formats: str = "onnx,int8",
        s3_secret_name: str = "pogona-s3",
        run_id: str = "",
    ):
        """Train, evaluate and publish a YOLO11 detector.

        Args:
            dataset_uri: Labeled dataset in the contract layout (s3://bucket/datasets/NAME or a folder).
            store_uri: Object store root for runs, weights and the production pointer (s3://bucket).
            model_name: Name of the published model (models/NAME/production.json).
            model: Architecture when no base weights are given (yolo11n/s/m/l/x, built from YAML).
            base_weights_uri: Optional pretrained weights in object storage (s3://bucket/weights/yolo11s.pt).
            epochs: Maximum training epochs (the field notes found 50-80 enough).
            patience: Early-stopping patience in epochs.
            imgsz: Training and evaluation image size in pixels.
            batch: Batch size; below 1, a fraction of GPU memory (0.95 = 95%, single GPU only).
            training_device: cuda on GPU nodes; cpu only on kind or laptops.
            num_gpus: GPUs for training (a whole number, given as text); above 1 trains with DDP on one node.
            sanity_epochs: Epochs of the CPU sanity gate.
            sanity_batch: Batch size of the CPU sanity gate.
            sanity_imgsz: Image size of the CPU sanity gate.
            sanity_max_images: Images in the stratified sanity subset.
            sanity_min_loss_drop: Fraction the total loss must fall during the sanity gate.
            sanity_min_map50: mAP50 the sanity gate must reach when starting from pretrained weights.
            min_map50: Promotion floor on mAP50 (the field notes expect more than 0.95).
            min_margin: mAP50-95 the challenger must gain over the champion to be promoted.
            skip_if_unchanged: Skip training when an earlier run trained this dataset snapshot with the same
                code and training parameters; false forces training.
            export_formats: Comma-separated exports (onnx, int8); empty for none.
            s3_secret_name: Kubernetes Secret holding AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
            run_id: Folder name under runs/ (defaults to the KFP run id).
        """
        sizes = placement.sizes

        def on_cluster(task: dsl.PipelineTask, size: StepSize, caching: bool = True) -> dsl.PipelineTask:
            return _on_cluster(task, placement, s3_secret_name, size, caching=caching)

        validate = on_cluster(steps.validate(dataset_uri=dataset_uri), sizes.validate, caching=False)
        validate.set_display_name("sync and validate dataset")
        decide = on_cluster(steps.decide(
            store_uri=store_uri, model_name=model_name, fingerprint=validate.outputs["Output"],
            skip_if_unchanged=skip_if_unchanged, code_version=placement.code_version, model=model,
            base_weights_uri=base_weights_uri, epochs=epochs, patience=patience, imgsz=imgsz, batch=batch,
            device=training_device, num_gpus=num_gpus), sizes.decide, caching=False)
        decide.set_display_name("skip if unchanged")

        with dsl.If(decide.outputs["train"] == True, name="dataset-changed"):  # noqa: E712 (KFP condition)
            sanity = on_cluster(steps.sanity(
                manifest=validate.outputs["manifest"], model=model, base_weights_uri=base_weights_uri,
                sanity_epochs=sanity_epochs, sanity_batch=sanity_batch, sanity_imgsz=sanity_imgsz,
                sanity_max_images=sanity_max_images, sanity_min_loss_drop=sanity_min_loss_drop,
                sanity_min_map50=sanity_min_map50), sizes.sanity)
            sanity.set_display_name("CPU sanity gate")

            train = on_cluster(steps.train(
                manifest=validate.outputs["manifest"], verdict=sanity.outputs["verdict"], store_uri=store_uri,
                run_id=run_id, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, model=model,
                base_weights_uri=base_weights_uri, epochs=epochs, patience=patience, imgsz=imgsz, batch=batch,
                device=training_device, num_gpus=num_gpus), sizes.train)
            train.set_display_name("train").set_retry(num_retries=placement.train_retries,
                                                      backoff_duration="60s", backoff_factor=2)
            if placement.gpu:
                _on_gpu(train, placement, num_gpus)

            analyse = on_cluster(steps.analyse(
                manifest=validate.outputs["manifest"], trained=train.outputs["trained"],
                verdict=sanity.outputs["verdict"], store_uri=store_uri, model_name=model_name,
                export_formats=export_formats, min_map50=min_map50, min_margin=min_margin), sizes.analyse)
            analyse.set_display_name("evaluate and report")

            publish = on_cluster(steps.publish(
                manifest=validate.outputs["manifest"], validation_report=validate.outputs["validation_report"],
                verdict=sanity.outputs["verdict"], trained=train.outputs["trained"],
                analysis=analyse.outputs["analysis"], store_uri=store_uri, run_id=run_id,
                kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, model_name=model_name, min_map50=min_map50,
                min_margin=min_margin, attempt=decide.outputs["attempt"]), sizes.publish, caching=False)
            publish.set_display_name("publish")
        with dsl.Else(name="dataset-unchanged"):
            on_cluster(steps.skipped(note=decide.outputs["note"]), sizes.decide).set_display_name("training skipped")

    return pogona_train
