"""The step doors: what a KFP component body calls, between its artifact paths and `components/`.

A KFP component body is shipped as source text, so it stays a two-line call into this
module; everything here is plain Python that the tests call directly. The step functions are
a pod's entry points: each first sends pogona's log lines to stderr. Each door lays the
artifacts it receives out as the run's working directory (docs/architecture.md), calls one
step function, and returns the numbers the KFP UI shows as Metrics. The rules themselves
live in their stage (the skip rule in components/publishing/attempts.py, the snapshot cache
in components/data/sync.py). Each step function also makes SIGTERM (an eviction) raise
`Evicted`, so the step's cleanup runs and the pod ends with one line saying why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from components.config import PromotionConfig, SanityConfig, TrainConfig, check_settings
from components.data.sync import dataset_cache_root, materialize, snapshot_cache
from components.publishing import attempts
from components.publishing.attempts import Attempt, TrainingDecision, training_attempt
from components.errors import UserError
from components.log import show_logs
from components.runtime.eviction import handle_sigterm


def validate_step(dataset_uri: str, manifest_path: str, report_path: str) -> tuple[str, dict[str, float]]:
    """Validate the bucket, write manifest and report; fail the run when the dataset is unusable.

    The images validation downloads stay in the snapshot cache, so later steps on the same
    machine (a laptop, `kfp.local`) do not download them again.
    """
    show_logs()
    handle_sigterm()
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


def decide_training(store_uri: str, model_name: str, fingerprint: str, code_version: str, train: TrainConfig,
                    sanity: SanityConfig, num_gpus: str, skip_if_unchanged: bool) -> tuple[TrainingDecision, Attempt]:
    """Refuse settings outside their range, then skip training when an earlier run already trained exactly this
    attempt (unless forced). The settings are checked here, in a step KFP never retries, so a run with a bad
    one fails in seconds, before the sanity gate and without spending training's retries."""
    show_logs()
    handle_sigterm()
    check_settings(train, sanity)
    attempt = training_attempt(fingerprint, code_version, train, num_gpus, store_uri)
    return attempts.decide_training(store_uri, model_name, attempt, skip_if_unchanged), attempt


def sanity_step(manifest_path: str, verdict_path: str, config: SanityConfig, model: str,
                weights: str, store_uri: str) -> dict[str, float]:
    """Run the CPU sanity gate from the base weights training will start from (the same store); a dead or
    non-learning verdict fails the step with its reasons."""
    show_logs()
    handle_sigterm()
    from components.training.sanity import run_sanity

    verdict = run_sanity(materialize(manifest_path), Path(verdict_path), config, weights=weights, model=model,
                         store=store_uri)
    if not verdict.healthy:
        raise UserError(f"sanity gate: {verdict.verdict}: " + " ".join(verdict.reasons))
    last = verdict.epochs[-1] if verdict.epochs else {}
    return {"steps": float(verdict.steps), "wall_seconds": verdict.wall_seconds,
            **{f"last_epoch_{key}": value for key, value in last.items()}}


def train_step(manifest_path: str, out_dir: str, config: TrainConfig, num_gpus: str, store_uri: str, run_id: str,
               kfp_run_id: str) -> dict[str, float]:
    """Train; a failure no retry can fix (no CUDA, a bad parameter, a dead run) ends KFP's retries within the
    same pipeline run (`kfp_run_id`) at once (components/training/refusals.py)."""
    show_logs()
    handle_sigterm()
    from components.runtime.devices import training_device
    from components.storage import open_store
    from components.training.refusals import refusals_recorded
    from components.training.train import train_model

    with refusals_recorded(open_store(store_uri), run_id, kfp_run_id):
        device = training_device(config.device, num_gpus)
        return train_model(materialize(manifest_path), Path(out_dir), replace(config, device=device),
                           store=store_uri, run_id=run_id).metrics


def analyze_step(manifest_path: str, trained_dir: str, verdict_path: str, analysis_dir: str, store_uri: str,
                 model_name: str, export_formats: str,
                 promotion: PromotionConfig = PromotionConfig()) -> dict[str, float]:
    """Evaluate per modality, export, and write the report (judged against the run's promotion floors; saying
    what changed in the dataset since the champion's snapshot)."""
    show_logs()
    handle_sigterm()
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
    return evaluation.overall.values()


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
    handle_sigterm()
    from components.publishing.attempts import record_attempt
    from components.publishing.publish import publish_run
    from components.storage import open_store

    result = publish_run(run_dir, store_uri, run_id, model_name, promotion)
    record_attempt(open_store(store_uri), model_name, attempt, run_id, result.promoted, result.reason)
    return result.promoted, ("promoted" if result.promoted else "not promoted") + f": {result.reason}"
