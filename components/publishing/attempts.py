"""Training attempts: what a run trained on, kept so a nightly run does not train it again.

An attempt is the dataset snapshot (its fingerprint), the code (the images the pipeline was
compiled with) and the parameters that shape the trained model. A run that reaches publish,
promoted or not, records its attempt under `models/<name>/attempts/<key>.json`; a later run
with the same attempt has nothing new to learn and skips training unless forced. A run that
failed earlier records nothing, so the next night tries again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from components import layout
from components.config import TrainConfig
from components.storage import ObjectStore, open_store


@dataclass(frozen=True)
class Attempt:
    dataset_fingerprint: str
    code_version: str
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """sha256 of the attempt's canonical JSON: equal attempts, equal keys."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Attempt:
        return cls(**json.loads(text))


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


def _attempt_key(model_name: str, attempt: Attempt) -> str:
    return layout.attempt(model_name, attempt.key)


def find_attempt(store: ObjectStore, model_name: str, attempt: Attempt) -> dict[str, Any] | None:
    """The record of an earlier run with exactly this attempt, or None."""
    return store.get_json(_attempt_key(model_name, attempt), missing_ok=True)


def record_attempt(store: ObjectStore, model_name: str, attempt: Attempt, run_id: str, promoted: bool,
                   reason: str) -> None:
    """Remember that `run_id` trained this attempt and how its promotion went."""
    store.put_json(_attempt_key(model_name, attempt), {
        **asdict(attempt), "run_id": run_id, "promoted": promoted, "reason": reason,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def describe(record: dict[str, Any]) -> str:
    """`run night-3 (not promoted: ..., 2026-11-20T02:41:07+00:00)` for a skip note."""
    outcome = "promoted" if record.get("promoted") else "not promoted"
    return f"run {record.get('run_id')} ({outcome}: {record.get('reason')}; {record.get('finished_at')})"
