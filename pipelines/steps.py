"""Adapters between KFP artifact paths and the step functions in `components/`.

A KFP component body is shipped as source text, so it stays a two-line call into this
module; everything here is plain Python that the tests call directly. The step functions are
a pod's entry points: each first sends pogona's log lines to stderr. Each adapter lays the
artifacts it receives out as the run's working directory (docs/architecture.md), calls one
step function, and returns the numbers the KFP UI shows as Metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from components import layout
from components.publishing.attempts import Attempt
from components.config import PromotionConfig, SanityConfig, TrainConfig
from components.errors import UserError
from components.log import LOG, show_logs


def dataset_cache_root() -> Path:
    """Where snapshots are materialized: POGONA_CACHE_DIR (a pod's emptyDir), else the user cache."""
    from components.config import cache_root

    return Path(os.environ.get("POGONA_CACHE_DIR") or cache_root() / "datasets")


def snapshot_cache(fingerprint: str) -> Path:
    """One folder per dataset snapshot, so concurrent runs on a shared cache never mix two snapshots."""
    return dataset_cache_root() / fingerprint[:16]


def materialize(manifest_path: str) -> Path:
    """Sync the snapshot a manifest names into the cache and return its data.yaml."""
    from components.data.snapshot import Manifest
    from components.data.sync import sync_snapshot

    fingerprint = Manifest.load(Path(manifest_path)).fingerprint
    return sync_snapshot(Path(manifest_path), snapshot_cache(fingerprint)).data_yaml


def validate_step(dataset_uri: str, manifest_path: str, report_path: str) -> tuple[str, dict[str, float]]:
    """Validate the bucket, write manifest and report; fail the run when the dataset is unusable.

    The images validation downloads stay in the snapshot cache, so later steps on the same
    machine (a laptop, `kfp.local`) do not download them again.
    """
    show_logs()
    from components.data.validate import validate_dataset

    dataset_cache_root().mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".validate-", dir=dataset_cache_root()))
    try:
        result = validate_dataset(dataset_uri, Path(manifest_path), Path(report_path), cache_dir=scratch)
        with contextlib.suppress(OSError):  # another run cached this snapshot first: keep theirs
            os.replace(scratch, snapshot_cache(result.manifest.fingerprint))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not result.usable:
        raise UserError(f"dataset {dataset_uri} is not usable: " + "; ".join(result.errors[:5]))
    return result.manifest.fingerprint, result.metrics()


@dataclass(frozen=True)
class TrainingDecision:
    train: bool
    note: str


def training_attempt(fingerprint: str, code_version: str, config: TrainConfig, num_gpus: str,
                     store_uri: str = "") -> Attempt:
    """What a run would train: this dataset snapshot, this code, these training parameters, and, when no
    weights are given, the version of the weights staged in the store (the images' own come with the code)."""
    from components.training.weights import staged_weights_version

    parameters = {**asdict(config), "num_gpus": num_gpus}
    staged = staged_weights_version(store_uri, config.model) if store_uri and not config.weights else ""
    return Attempt(fingerprint, code_version, {**parameters, "staged_weights": staged} if staged else parameters)


def decide_training(store_uri: str, model_name: str, attempt: Attempt, skip_if_unchanged: bool) -> TrainingDecision:
    """Skip training when an earlier run already trained exactly this attempt (unless forced)."""
    show_logs()
    from components.publishing.attempts import describe, find_attempt
    from components.storage import open_store

    if not skip_if_unchanged:
        return TrainingDecision(True, "skip_if_unchanged is off: training")
    what = (f"dataset {attempt.dataset_fingerprint[:16]} with code {attempt.code_version} "
            "and these training parameters")
    store = open_store(store_uri)
    earlier = find_attempt(store, model_name, attempt)
    if earlier is None:
        return TrainingDecision(True, f"no run of {model_name} has trained {what} yet: training")
    snapshot = store.url(layout.run_manifest(earlier.get('run_id')))
    return TrainingDecision(False, f"{describe(earlier)} already trained {what} (its snapshot {snapshot}): "
                                   "training skipped (skip_if_unchanged=false trains anyway)")


def sanity_step(manifest_path: str, verdict_path: str, config: SanityConfig, model: str,
                weights: str, store_uri: str) -> dict[str, float]:
    """Run the CPU sanity gate from the base weights training will start from (the same store); a dead or
    non-learning verdict fails the step with its reasons."""
    show_logs()
    from components.training.sanity import run_sanity

    verdict = run_sanity(materialize(manifest_path), Path(verdict_path), config, weights=weights, model=model,
                         store=store_uri)
    if not verdict.healthy:
        raise UserError(f"sanity gate: {verdict.verdict}: " + " ".join(verdict.reasons))
    last = verdict.epochs[-1] if verdict.epochs else {}
    return {"steps": float(verdict.steps), "wall_seconds": verdict.wall_seconds,
            **{f"last_epoch_{key}": value for key, value in last.items()}}


def training_device(device: str, num_gpus: str) -> str:
    """`cuda` with N GPUs becomes the device list ultralytics uses for DDP on one node."""
    if not num_gpus.isdigit() or int(num_gpus) < 1:
        raise UserError(f"num_gpus {num_gpus!r}: give a whole number of GPUs, at least 1")
    if device == "cuda" and int(num_gpus) > 1:
        return ",".join(str(index) for index in range(int(num_gpus)))
    return device


def train_step(manifest_path: str, out_dir: str, config: TrainConfig, num_gpus: str, store_uri: str, run_id: str,
               kfp_run_id: str) -> dict[str, float]:
    """Train; a failure no retry can fix (no CUDA, a bad parameter, a dead run) is recorded under the
    run so that KFP's retries within the same pipeline run (`kfp_run_id`) end at once instead of training
    again. KFP retries a failed step whatever the cause; lost nodes and evicted pods are what they are for."""
    show_logs()
    from components.training.deadrun import DeadRunError
    from components.storage import StorageError, open_store
    from components.training.train import train_model

    store, refusal = open_store(store_uri), layout.run_refusal(run_id, kfp_run_id)
    if (refused := store.get_json(refusal, missing_ok=True)) is not None:
        raise UserError(f"not trained again: an earlier attempt failed for a reason a retry cannot fix: "
                        f"{refused['reason']}")
    try:
        device = training_device(config.device, num_gpus)
        return train_model(materialize(manifest_path), Path(out_dir), replace(config, device=device),
                           store=store_uri, run_id=run_id).metrics
    except (UserError, DeadRunError) as exc:
        try:
            store.put_json(refusal, {"reason": str(exc)})
        except StorageError as unrecorded:  # the failure that ends the step stays the one that explains it
            LOG.error(f"could not record that a retry cannot fix this ({unrecorded})")
        raise


def analyze_step(manifest_path: str, trained_dir: str, verdict_path: str, analysis_dir: str, store_uri: str,
                 model_name: str, export_formats: str,
                 promotion: PromotionConfig = PromotionConfig()) -> dict[str, float]:
    """Evaluate per modality, export, and write the report (judged against the run's promotion floors; saying
    what changed in the dataset since the champion's snapshot)."""
    show_logs()
    from components.data.changes import changes_since_champion
    from components.evaluation.evaluate import evaluate_model
    from components.evaluation.export import export_model, parse_formats
    from components.publishing.publish import read_champion
    from components.reporting.report import write_report

    # checked before the evaluation spends its time; empty exports nothing
    formats = parse_formats(export_formats, "export_formats") if export_formats.strip() else ()
    data = materialize(manifest_path)
    out = Path(analysis_dir)
    weights = Path(trained_dir) / "weights" / "best.pt"
    evaluation = evaluate_model(weights, data, out / "evaluation" / "evaluation.json")
    exports_json = None
    if formats:
        export_model(weights, data, out / "exports", formats)
        exports_json = out / "exports" / "exports.json"
    champion = read_champion(store_uri, model_name)
    champion_path = None
    if champion is not None:
        champion_path = out / "champion.json"
        champion_path.write_text(json.dumps(champion, indent=2))
    changes_since_champion(store_uri, champion, Path(manifest_path)).save(out / "changes.json")
    write_report(Path(trained_dir), out / "report", sanity=Path(verdict_path), champion=champion_path,
                 evaluation=out / "evaluation" / "evaluation.json", exports=exports_json, promotion=promotion,
                 changes=out / "changes.json")
    return {key: float(value) for key, value in evaluation["overall"].items()}


def assemble_run_dir(run_dir: Path, manifest_path: str, validation_report: str, verdict_path: str,
                     trained_dir: str, analysis_dir: str) -> Path:
    """Lay the artifacts of one run out as the working-directory layout publish expects."""
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(manifest_path, run_dir / "manifest.json")
    shutil.copyfile(validation_report, run_dir / "validation.md")
    (run_dir / "sanity").mkdir(exist_ok=True)
    shutil.copyfile(verdict_path, run_dir / "sanity" / "verdict.json")
    shutil.copytree(trained_dir, run_dir / "train", dirs_exist_ok=True)
    for part in ("evaluation", "exports", "report"):
        if (Path(analysis_dir) / part).exists():
            shutil.copytree(Path(analysis_dir) / part, run_dir / part, dirs_exist_ok=True)
    return run_dir


def publish_step(run_dir: Path, store_uri: str, run_id: str, model_name: str, promotion: PromotionConfig,
                 attempt: Attempt) -> tuple[bool, str]:
    """Upload the run, decide promotion and record the attempt; returns whether it was promoted and why."""
    show_logs()
    from components.publishing.attempts import record_attempt
    from components.publishing.publish import publish_run
    from components.storage import open_store

    result = publish_run(run_dir, store_uri, run_id, model_name, promotion)
    record_attempt(open_store(store_uri), model_name, attempt, run_id, result.promoted, result.reason)
    return result.promoted, ("promoted" if result.promoted else "not promoted") + f": {result.reason}"
