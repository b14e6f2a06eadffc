"""`pogona run --local`: the whole pipeline through kfp.local on this machine.

No cluster: by default kfp.local's SubprocessRunner runs each component body with this
interpreter (the project is installed in it); `runner="docker"` runs each one inside the image
the compiled pipeline names (kfp.local's DockerRunner; `make images` builds them). Either way
against a folder object store by default: the same pipeline definition that is compiled for the
cluster, with CPU training.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from components import layout
from components.config import RunParameters
from components.data.demo_dataset import DemoSpec, generate_demo_dataset
from components.errors import UserError
from components.log import LOG
from components.storage import FolderStore, open_store

DEFAULT_STORE = ".pogona/store"
RUNNERS = ("subprocess", "docker")
# Handed to the containers when set here, for stores and datasets on S3.
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                  "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@dataclass(frozen=True)
class DemoScale:
    """Settings that make the whole pipeline finish in minutes on a 2-core laptop."""

    dataset: DemoSpec = DemoSpec()
    model: str = "yolo11n"
    epochs: int = 15
    patience: int = 5
    batch: float = 16.0
    sanity_max_images: int = 96
    min_map50: float = 0.5

    def pipeline_parameters(self) -> dict[str, Any]:
        """The pipeline parameters these settings stand for (images are trained at their generated size)."""
        return dict(model=self.model, epochs=self.epochs, patience=self.patience, imgsz=self.dataset.size,
                    batch=self.batch, sanity_imgsz=self.dataset.size, sanity_max_images=self.sanity_max_images,
                    min_map50=self.min_map50)


@dataclass
class LocalRun:
    """Outcome of a local pipeline run: where things landed and what was decided."""

    run_id: str
    store_uri: str
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    champion: dict[str, Any] | None = None
    sanity_verdict: str = ""
    skipped: bool = False


def _new_run_id() -> str:
    return time.strftime("local-%Y%m%d-%H%M%S")


def run_local(store: str = DEFAULT_STORE, dataset: str = "", demo: bool = False,
              overrides: dict[str, Any] | None = None, run_id: str = "", model_name: str = RunParameters.model_name,
              work_dir: Path | None = None, runner: str = "subprocess") -> LocalRun:
    """Run the pipeline locally; `overrides` are pipeline parameters (epochs, imgsz, ...);
    `runner` is where each step runs: `subprocess` (this interpreter) or `docker` (the images)."""
    import kfp.local

    from pipelines.pipeline import Placement, build_pipeline

    if runner not in RUNNERS:
        raise UserError(f"--runner {runner!r}: one of {', '.join(RUNNERS)}")
    store_uri = store if "://" in store else Path(store).resolve().as_uri()
    params: dict[str, Any] = {"store_uri": store_uri, "model_name": model_name, "training_device": "cpu",
                              "run_id": run_id or _new_run_id()}
    if demo:
        scale = DemoScale()
        dataset = dataset or f"{store_uri}/{layout.DEMO_DATASET}"
        _ensure_demo_dataset(dataset, scale.dataset)
        params.update(scale.pipeline_parameters())
    if not dataset:
        raise UserError("--dataset is required unless --demo is given")
    if runner == "docker" and _local_folder(dataset):  # a relative path means nothing inside a container
        dataset = str(_local_folder(dataset))
    params["dataset_uri"] = dataset
    params.update(overrides or {})

    work_dir = work_dir or Path(".pogona") / "kfp-local"
    step_runner = (kfp.local.SubprocessRunner(use_venv=False) if runner == "subprocess"
                   else _docker_runner([store_uri, dataset]))
    kfp.local.init(runner=step_runner, pipeline_root=str(work_dir.resolve()), raise_on_error=True)
    started = time.monotonic()
    with warnings.catch_warnings():
        # kfp.local warns about every Kubernetes setting it cannot apply on a laptop; that is expected here.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
        pipeline = build_pipeline(Placement.for_profile("kind"))
        try:
            pipeline(**params)
        except RuntimeError as exc:
            raise UserError(f"local pipeline run {params['run_id']} failed: {exc} (task logs above)") from exc
    return _collect(params["run_id"], store_uri, model_name, time.monotonic() - started)


def _local_folder(uri: str) -> Path | None:
    """The absolute folder a store or dataset URI names on this machine; None for s3:// and the like."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path).resolve()
    return None if parsed.scheme else Path(uri).resolve()


def _docker_runner(uris: list[str]):
    """kfp.local's DockerRunner for the images: each local store or dataset folder bind-mounted at its own
    path (so its URI means the same inside; kfp mounts the pipeline root itself), the caller's UID in
    group 0 (files land owned by the caller; the images admit any UID in group 0, as OpenShift runs
    them), and no network unless a store or dataset lies beyond this machine."""
    import kfp.local
    from docker.types import Mount

    folders = sorted({folder for folder in map(_local_folder, uris) if folder})
    remote = any(_local_folder(uri) is None for uri in uris)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return kfp.local.DockerRunner(
        mounts=[Mount(target=str(folder), source=str(folder), type="bind") for folder in folders],
        user=f"{os.getuid()}:0", network_mode="host" if remote else "none",
        environment={name: os.environ[name] for name in CREDENTIAL_ENV if name in os.environ})


def _ensure_demo_dataset(dataset: str, spec: DemoSpec) -> None:
    if open_store(dataset).exists("data.yaml"):
        LOG.info(f"demo dataset: reusing {dataset}")
        return
    generate_demo_dataset(dataset, spec)


def _collect(run_id: str, store_uri: str, model_name: str, seconds: float) -> LocalRun:
    store = open_store(store_uri)
    result = LocalRun(run_id=run_id, store_uri=store_uri, seconds=seconds)
    if (metrics := store.get_json(layout.run_metrics(run_id), missing_ok=True)) is not None:
        result.metrics = metrics
        result.sanity_verdict = store.get_json(layout.run_sanity_verdict(run_id))["verdict"]
    else:
        result.skipped = True
    result.champion = store.get_json(layout.production(model_name), missing_ok=True)
    return result


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_table(run: LocalRun) -> str:
    """The table `pogona run --local` ends with."""
    lines = [f"run {run.run_id} finished in {run.seconds:.0f} s", ""]
    if run.skipped:
        lines.append("training skipped: an earlier run trained this dataset snapshot with the same code and "
                     "training parameters (--no-skip-if-unchanged trains anyway)")
    else:
        lines.append(f"{'sanity verdict':<24}{run.sanity_verdict}")
        header = f"{'':<24}{'precision':>10}{'recall':>10}{'mAP50':>10}{'mAP50-95':>10}"
        lines += ["", header]
        rows = {"overall": run.metrics.get("metrics", {}), **run.metrics.get("by_modality", {})}
        for name, values in rows.items():
            lines.append(f"{name:<24}" + "".join(f"{_fmt(values.get(k, '-')):>10}"
                                                   for k in ("precision", "recall", "map50", "map50_95")))
        promoted = bool(run.champion and run.champion.get("run_id") == run.run_id)
        lines += ["", f"{'promoted':<24}{'yes' if promoted else 'no'}"]
    base = open_store(run.store_uri)
    if not run.skipped:
        report = layout.run_report(run.run_id)
        lines.append(f"{'report':<24}{base.root / report if isinstance(base, FolderStore) else base.url(report)}")
    if run.champion:
        lines.append(f"{'production model':<24}{run.champion.get('weights_uri')}")
    return "\n".join(lines)
