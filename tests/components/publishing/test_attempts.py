"""The nightly skip rule: a run trains unless an earlier run already trained exactly its attempt."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta

from components.config import TrainConfig
from components.publishing.attempts import Attempt, decide_training, record_attempt, training_attempt
from components.storage import open_store


def test_a_nightly_run_skips_only_what_an_earlier_run_already_trained(tmp_path):
    store = str(tmp_path)
    code = "ghcr.io/pogona-lab/pogona-cuda:0.1.0-06b51dbe004e"
    attempt = training_attempt("fp-abc", code, TrainConfig(), "1")
    assert decide_training(store, "pogona-head", attempt, skip_if_unchanged=True).train
    # a run that trained it and was not promoted: the next night has nothing new to learn
    record_attempt(open_store(store), "pogona-head", attempt, "night-1", promoted=False,
                   reason="mAP50 0.912 is below the floor 0.95")
    again = decide_training(store, "pogona-head", training_attempt("fp-abc", code, TrainConfig(), "1"), True)
    assert not again.train
    assert again.note.startswith("run night-1 (not promoted: mAP50 0.912 is below the floor 0.95; ")
    assert "training skipped" in again.note
    assert f"its snapshot {open_store(store).url('runs/night-1/manifest.json')}" in again.note
    for changed in (training_attempt("fp-new", code, TrainConfig(), "1"),  # new labels
                    training_attempt("fp-abc", code.replace("06b5", "9f2e"), TrainConfig(), "1"),  # new code
                    training_attempt("fp-abc", code, TrainConfig(epochs=60), "1"),
                    training_attempt("fp-abc", code, TrainConfig(), "2")):
        assert decide_training(store, "pogona-head", changed, skip_if_unchanged=True).train
    # weights staged in the store since: a run without given weights starts from them, so it trains again
    open_store(store).put_bytes("weights/yolo11s.pt", b"newly staged weights")
    staged = training_attempt("fp-abc", code, TrainConfig(), "1", store)
    assert decide_training(store, "pogona-head", staged, skip_if_unchanged=True).train
    record_attempt(open_store(store), "pogona-head", staged, "night-2", promoted=False, reason="below the floor")
    assert not decide_training(store, "pogona-head", training_attempt("fp-abc", code, TrainConfig(), "1", store),
                               skip_if_unchanged=True).train
    given = TrainConfig(weights="s3://bucket/weights/other.pt")  # given weights are a parameter of their own
    assert training_attempt("fp-abc", code, given, "1", store).key == training_attempt("fp-abc", code, given, "1").key
    forced = decide_training(store, "pogona-head", attempt, skip_if_unchanged=False)
    assert forced.train and "skip_if_unchanged is off" in forced.note


def test_an_attempt_is_recorded_under_its_key_with_its_outcome_and_described_in_the_skip_note(tmp_path):
    store, fingerprint = str(tmp_path), "0123456789abcdef0123"
    attempt = training_attempt(fingerprint, "code-1", TrainConfig(), "2")
    assert attempt.training["num_gpus"] == "2" and "staged_weights" not in attempt.training
    assert Attempt.from_json(attempt.to_json()) == attempt
    reordered = Attempt(fingerprint, "code-1", dict(reversed(list(attempt.training.items()))))
    assert reordered.key == attempt.key  # the key hashes the canonical JSON, whatever the order of the parameters

    first = decide_training(store, "pogona-head", attempt, skip_if_unchanged=True)
    assert first.note == ("no run of pogona-head has trained dataset 0123456789abcdef with code code-1 and these "
                          "training parameters yet: training")
    assert decide_training(store, "pogona-head", attempt, False).note == "skip_if_unchanged is off: training"
    record_attempt(open_store(store), "pogona-head", attempt, "night-1", promoted=True, reason="beats the champion")
    record = open_store(store).get_json(f"models/pogona-head/attempts/{attempt.key}.json")
    finished = datetime.fromisoformat(record["finished_at"])
    assert finished.utcoffset() == timedelta(0) and finished.microsecond == 0
    assert record == {**asdict(attempt), "run_id": "night-1", "promoted": True, "reason": "beats the champion",
                      "finished_at": record["finished_at"]}
    skipped = decide_training(store, "pogona-head", attempt, skip_if_unchanged=True)
    assert skipped.train is False
    assert skipped.note == (f"run night-1 (promoted: beats the champion; {record['finished_at']}) already trained "
                            "dataset 0123456789abcdef with code code-1 and these training parameters (its snapshot "
                            f"{open_store(store).url('runs/night-1/manifest.json')}): training skipped "
                            "(skip_if_unchanged=false trains anyway)")
    staged_store = str(tmp_path / "staged")
    open_store(staged_store).put_bytes("weights/yolo11s.pt", b"staged weights")
    staged = training_attempt(fingerprint, "code-1", TrainConfig(), "2", staged_store).training
    assert staged == {**attempt.training, "staged_weights": staged["staged_weights"]} and staged["staged_weights"]
