"""Publish a run to the object store, then let it challenge the production champion.

Order matters: everything the run made is uploaded under `runs/<run-id>/` first, then the
champion/challenger decision, and only then the pointer `models/<name>/production.json` is
written, conditionally on the version that was read (S3 If-Match / If-None-Match, or the
folder backend's locked compare-and-swap). A failure before the pointer leaves the champion
untouched; two runs that finish together cannot both win: the loser of the conditional write
re-reads the champion and decides again. Each promotion is also kept under `history/`.
The outcome is exact under retries: a run is reported promoted if and only if the pointer names
it, including when its conditional write was applied but the reply was lost and the retry lost
to the write itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from components import layout
from components.config import MODEL_NAME, PromotionConfig
from components.errors import UserError
from components.metrics.artifacts import Evaluation, read_json
from components.metrics.run_metrics import best_model_metrics
from components.storage import ObjectStore, PreconditionFailed, StorageError, open_store, sha256_file
from components.training.outputs import TrainingMetrics
from components.version import code_version

# Parts of a pogona working dir that belong to the run, and whether their sub-folders do too
# (data/ is the synced dataset and never re-uploaded; sanity/ and evaluation/ keep scratch runs in sub-folders).
RUN_PARTS = {"manifest.json": False, "validation.md": False, "sanity": False, "evaluation": False,
             "train": True, "exports": True, "report": True}
HASHED_SUFFIXES = (".pt", ".onnx", ".engine")
MAX_DECISION_ATTEMPTS = 10


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


@dataclass(frozen=True)
class PublishResult:
    run_uri: str
    uploaded: tuple[str, ...]  # every file of the run, under runs/<run-id>/
    promoted: bool
    reason: str


def _history_key(model_name: str, record: dict[str, Any]) -> str:
    return layout.history(model_name, datetime.fromisoformat(record["promoted_at"]), record["run_id"])


def _files(root: Path, recursive: bool = True) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(path for path in (root.rglob("*") if recursive else root.glob("*")) if path.is_file())


def _run_layout(run_dir: Path) -> tuple[Path, dict[str, Path]]:
    """The training dir and the local files to publish, keyed by their path under runs/<run-id>/."""
    if not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir}: no such directory")
    if (run_dir / "train").is_dir():  # a pogona working dir
        train_dir = run_dir / "train"
        files = {path.relative_to(run_dir).as_posix(): path 
                 for part, recursive in RUN_PARTS.items() for path in _files(run_dir / part, recursive)}
    else:  # a bare ultralytics save dir: it becomes the train/ part
        train_dir = run_dir
        files = {"train/" + path.relative_to(run_dir).as_posix(): path for path in _files(run_dir)}
    if not (train_dir / "weights" / "best.pt").is_file():
        raise UserError(f"{train_dir / 'weights' / 'best.pt'}: the run has no best weights to publish")
    return train_dir, files


def _challenger_metrics(run_dir: Path, train_dir: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """Overall and per-modality metrics of best.pt, the model published (components.metrics.run_metrics),
    the per-modality ones as evaluation.json holds them."""
    path = run_dir / "evaluation" / "evaluation.json"
    evaluation = Evaluation.load(path) if path.is_file() else None
    results_csv = train_dir / "results.csv"
    overall = best_model_metrics(results_csv, evaluation, TrainingMetrics.beside(results_csv)).values
    by_modality = {name: scores.to_json() for name, scores in evaluation.by_modality.items()} if evaluation else {}
    return overall, by_modality


def decide(challenger: dict[str, float], champion: dict[str, Any] | None, promotion: PromotionConfig) -> Decision:
    """Promote only above the absolute mAP50 floor and strictly better than the champion by the margin."""
    map50, map50_95 = challenger.get("map50", 0.0), challenger.get("map50_95", 0.0)
    if map50 < promotion.min_map50:
        return Decision(False, f"mAP50 {map50:.4f} is below the floor {promotion.min_map50:.4f}")
    if champion is None:
        return Decision(True, f"no champion yet; mAP50 {map50:.4f} passes the floor")
    gain = map50_95 - float(champion["metrics"]["map50_95"])
    if gain <= 0 or gain < promotion.min_margin_map50_95:
        return Decision(False, f"mAP50-95 {map50_95:.4f} vs champion {champion['run_id']} "
                               f"{champion['metrics']['map50_95']:.4f}: gain {gain:+.4f} does not beat the margin "
                               f"{promotion.min_margin_map50_95:.4f}")
    return Decision(True, f"mAP50-95 {map50_95:.4f} beats champion {champion['run_id']} by {gain:+.4f}")


def read_champion(store: str | ObjectStore, model_name: str) -> dict[str, Any] | None:
    """The current production pointer of a model, or None when nothing was promoted yet."""
    store = open_store(store) if isinstance(store, str) else store
    return store.get_json(layout.production(model_name), missing_ok=True)


def _keep_history(store: ObjectStore, model_name: str, record: dict[str, Any]) -> None:
    """Write a promotion's history record unless it is already there."""
    if not store.exists(_history_key(model_name, record)):
        store.put_json(_history_key(model_name, record), record)


def promote(store: ObjectStore, model_name: str, candidate: dict[str, Any],
            promotion: PromotionConfig) -> tuple[Decision, dict[str, Any] | None]:
    """Decide against the champion and swap the pointer conditionally; on a lost race, re-read and decide again."""
    key = layout.production(model_name)
    attempted: tuple[Decision, dict[str, Any]] | None = None  # the last pointer write that lost its condition
    for _ in range(MAX_DECISION_ATTEMPTS):
        current = store.head(key)  # the ETag first: content read after it can only be newer, never older
        champion = store.get_json(key) if current else None
        if champion is not None and champion.get("run_id") == candidate["run_id"]:
            # This run is in production: by this call's write (applied, though its reply was lost and
            # the retry failed its own condition) or by an earlier publish of the same run.
            _keep_history(store, model_name, champion)
            if attempted is not None and attempted[1] == champion:
                return attempted
            return Decision(True, f"run {candidate['run_id']} is already the champion"), champion
        decision = decide(candidate["metrics"], champion, promotion)
        if not decision.promote:
            return decision, champion
        if champion is not None:
            _keep_history(store, model_name, champion)  # the champion's record, if it was lost
        record = {**candidate, "promoted_at": datetime.now(timezone.utc).isoformat(),
                  "previous_run_id": champion["run_id"] if champion else None}
        try:
            store.put_json(key, record, **({"if_match": current.etag} if current else {"if_none_match": True}))
        except PreconditionFailed:
            attempted = (decision, record)
            continue
        store.put_json(_history_key(model_name, record), record)
        return decision, record
    raise StorageError(f"{store.url(key)} kept changing over {MAX_DECISION_ATTEMPTS} attempts; publish again")


def publish_run(run_dir: Path, store: str | ObjectStore, run_id: str, model_name: str = MODEL_NAME,
                promotion: PromotionConfig = PromotionConfig()) -> PublishResult:
    """Upload everything the run made to runs/<run-id>/, then promote it if it beats the champion."""
    for label, value in (("--run-id", run_id), ("--model-name", model_name)):
        if not value or "/" in value or value.startswith("."):
            raise UserError(f"{label} {value!r}: give a non-empty name without '/' that does not start with '.'")
    store = open_store(store) if isinstance(store, str) else store
    run_dir = Path(run_dir)
    train_dir, files = _run_layout(run_dir)
    overall, by_modality = _challenger_metrics(run_dir, train_dir)  # a broken input fails before any upload
    manifest = read_json(run_dir / "manifest.json", "snapshot manifest") if (run_dir / "manifest.json").is_file() else {}
    prefix = layout.run(run_id)
    published = {info.key: info for info in store.list(f"{prefix}/")}  # a publish run again after a failure
    hashes = {}
    for relative, path in files.items():
        key = layout.run_file(run_id, relative)
        hashed = path.suffix in HASHED_SUFFIXES
        if store.holds(path, published.get(key)):  # published by an earlier try: read it once more to hash it
            if hashed:
                hashes[relative] = sha256_file(path)
            continue
        digest = hashlib.sha256()
        store.upload_file(path, key, digests=(digest,) if hashed else ())
        if hashed:
            hashes[relative] = digest.hexdigest()

    args_path = train_dir / "args.yaml"
    metrics = {
        "run_id": run_id, "metrics": overall, "by_modality": by_modality,
        "dataset_fingerprint": manifest.get("fingerprint"), "dataset_source": manifest.get("source"),
        "hyperparameters": yaml.safe_load(args_path.read_text()) if args_path.is_file() else {},
        "code_version": code_version(), "sha256": hashes,
    }
    store.put_json(layout.run_metrics(run_id), metrics)

    candidate = {"model_name": model_name, "run_id": run_id, "metrics": overall,
                 "weights_uri": store.url(layout.run_file(run_id, layout.BEST_WEIGHTS)),
                 "sha256": hashes[layout.BEST_WEIGHTS], "dataset_fingerprint": manifest.get("fingerprint")}
    decision, _ = promote(store, model_name, candidate, promotion)
    return PublishResult(store.url(prefix), tuple(files), decision.promote, decision.reason)
