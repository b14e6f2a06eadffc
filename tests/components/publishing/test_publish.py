"""Publishing and champion/challenger promotion on both storage backends (folder and S3 via moto)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from components.config import PromotionConfig
from components.publishing.publish import MAX_DECISION_ATTEMPTS, Decision, decide, promote, publish_run, read_champion
from components.storage import FolderStore, ObjectStore, StorageError, open_store
from published_runs import FIXTURES, make_run
from results_table import SPLIT_PEAKS, write_results

@pytest.fixture(params=["folder", "s3"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "folder":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket") + "/pogona"


def history(store: ObjectStore) -> list[dict[str, Any]]:
    return [store.get_json(info.key) for info in store.list("models/pogona-head/history/")]


def test_first_run_is_published_whole_and_becomes_champion(tmp_path: Path, store_uri: str) -> None:
    run = make_run(tmp_path / "run", map50=0.97, map50_95=0.80)
    result = publish_run(run, store_uri, "run-1")
    store = open_store(store_uri)

    keys = {info.key for info in store.list("runs/run-1/")}
    assert {"runs/run-1/train/weights/best.pt", "runs/run-1/train/weights/last.pt", "runs/run-1/train/results.csv",
            "runs/run-1/train/args.yaml", "runs/run-1/report/report.md", "runs/run-1/manifest.json",
            "runs/run-1/sanity/verdict.json", "runs/run-1/evaluation/evaluation.json",
            "runs/run-1/evaluation/pr_curve.png", "runs/run-1/metrics.json"} == keys
    best_sha = hashlib.sha256((run / "train" / "weights" / "best.pt").read_bytes()).hexdigest()
    metrics = store.get_json("runs/run-1/metrics.json")
    assert metrics["dataset_fingerprint"] == "fp-1" and metrics["dataset_source"] == "s3://lab/datasets/p"
    assert metrics["hyperparameters"]["epochs"] == 40 and metrics["hyperparameters"]["optimizer"] == "AdamW"
    assert metrics["code_version"]["package"] and metrics["sha256"]["train/weights/best.pt"] == best_sha

    assert result.promoted
    champion = read_champion(store_uri, "pogona-head")
    assert champion["run_id"] == "run-1" and champion["sha256"] == best_sha
    assert champion["weights_uri"] == store.url("runs/run-1/train/weights/best.pt")
    assert champion["metrics"]["map50_95"] == 0.80 and champion["dataset_fingerprint"] == "fp-1"
    assert history(store) == [champion]


def test_worse_or_weak_challenger_never_replaces_the_champion(tmp_path: Path, store_uri: str) -> None:
    publish_run(make_run(tmp_path / "a", map50=0.97, map50_95=0.80), store_uri, "champ")
    challengers = [("worse", 0.99, 0.79, PromotionConfig(), "does not beat"),
                   ("equal", 0.99, 0.80, PromotionConfig(), "does not beat"),
                   ("below-floor", 0.90, 0.95, PromotionConfig(), "below the floor 0.9500"),
                   ("small-gain", 0.99, 0.805, PromotionConfig(min_margin_map50_95=0.01), "does not beat")]
    for run_id, map50, map50_95, promotion, reason in challengers:
        result = publish_run(make_run(tmp_path / run_id, map50, map50_95), store_uri, run_id, promotion=promotion)
        assert not result.promoted and reason in result.reason
        assert read_champion(store_uri, "pogona-head")["run_id"] == "champ"

    better = publish_run(make_run(tmp_path / "better", 0.99, 0.83), store_uri, "better")
    assert better.promoted
    store = open_store(store_uri)
    assert [(r["run_id"], r["previous_run_id"]) for r in history(store)] == [("champ", None), ("better", "champ")]
    assert store.exists("runs/worse/train/weights/best.pt"), "a rejected run is still published for inspection"


def run_together(count: int, action: Callable[[int], Any]) -> list[Any]:
    """Start `count` threads that pass a barrier at once and return what each returned (or raised)."""
    barrier = threading.Barrier(count)
    outcomes: list[Any] = [None] * count

    def worker(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = action(index)
        except Exception as exc:  # reported by the assertion below, not swallowed
            outcomes[index] = exc

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def candidate(run_id: str, map50_95: float) -> dict[str, Any]:
    return {"model_name": "pogona-head", "run_id": run_id, "metrics": {"map50": 0.97, "map50_95": map50_95},
            "weights_uri": f"runs/{run_id}/train/weights/best.pt", "sha256": run_id, "dataset_fingerprint": "fp"}


@pytest.mark.slow
@pytest.mark.rules
def test_equal_challengers_finishing_together_leave_exactly_one_winner(store_uri: str) -> None:
    outcomes = run_together(6, lambda i: promote(open_store(store_uri), "pogona-head", candidate(f"r{i}", 0.8),
                                                 PromotionConfig()))
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    winners = [record["run_id"] for decision, record in outcomes if decision.promote]
    assert len(winners) == 1
    store = open_store(store_uri)
    assert read_champion(store, "pogona-head")["run_id"] == winners[0]
    assert [record["run_id"] for record in history(store)] == winners


@pytest.mark.slow
def test_racing_challengers_end_with_the_best_and_a_consistent_history(store_uri: str) -> None:
    scores = [0.80, 0.84, 0.82, 0.86, 0.81, 0.83]
    outcomes = run_together(len(scores), lambda i: promote(open_store(store_uri), "pogona-head",
                                                           candidate(f"r{i}", scores[i]), PromotionConfig()))
    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    store = open_store(store_uri)
    champion = read_champion(store, "pogona-head")
    assert champion["run_id"] == "r3"
    records = sorted(history(store), key=lambda r: r["promoted_at"])
    assert records[-1] == champion
    assert [r["previous_run_id"] for r in records] == [None] + [r["run_id"] for r in records[:-1]]
    gains = [r["metrics"]["map50_95"] for r in records]
    assert gains == sorted(gains) and len(set(gains)) == len(gains), "each promotion strictly improved"
    assert sum(decision.promote for decision, _ in outcomes) == len(records)


class UploadFailsAfter(FolderStore):
    """A folder store whose uploads fail after `allowed` files (a network cut mid-publish)."""

    def __init__(self, root: Path, allowed: int):
        super().__init__(root)
        self.allowed = allowed

    def upload_file(self, src: Path, key: str, digests=()):
        if self.allowed == 0:
            raise StorageError(f"{self.url(key)}: connection reset")
        self.allowed -= 1
        return super().upload_file(src, key, digests)


def test_publish_failing_half_way_leaves_the_champion_as_it_was(tmp_path: Path) -> None:
    root = tmp_path / "store"
    publish_run(make_run(tmp_path / "a", 0.97, 0.80), str(root), "champ")
    pointer_before = (root / "models/pogona-head/production.json").read_bytes()

    with pytest.raises(StorageError, match="connection reset"):
        publish_run(make_run(tmp_path / "b", 0.99, 0.90), UploadFailsAfter(root, allowed=3), "better")
    assert (root / "models/pogona-head/production.json").read_bytes() == pointer_before
    assert [r["run_id"] for r in history(open_store(root))] == ["champ"]
    assert not (root / "runs/better/metrics.json").exists()


@pytest.mark.slow
def test_publish_cut_off_on_s3_leaves_the_champion_as_it_was(tmp_path: Path, s3_bucket: str, s3_faults) -> None:
    publish_run(make_run(tmp_path / "a", 0.97, 0.80), s3_bucket, "champ")
    pointer_before = open_store(s3_bucket).get_bytes("models/pogona-head/production.json")
    s3_faults.fail_after(4)  # a few objects of the challenger get through, then every request is refused
    with pytest.raises(StorageError):
        publish_run(make_run(tmp_path / "b", 0.99, 0.90), s3_bucket, "better")
    s3_faults.heal()
    assert open_store(s3_bucket).get_bytes("models/pogona-head/production.json") == pointer_before


@pytest.mark.slow
@pytest.mark.rules
def test_a_pointer_write_applied_before_a_reset_is_reported_as_promoted(tmp_path: Path, s3_bucket: str,
                                                                       s3_faults) -> None:
    # S3 applies each conditional PUT of the pointer, the reply is lost, and the retry fails its own condition
    for run_id, map50_95, previous in (("first", 0.80, None), ("better", 0.90, "first")):
        s3_faults.inject_on("PUT", "production.json", "applied-drop")
        result = publish_run(make_run(tmp_path / run_id, 0.97, map50_95), s3_bucket, run_id)
        assert not s3_faults.targeted, "the fault was not used"
        assert result.promoted and ("passes the floor" in result.reason or "beats champion" in result.reason)
        assert read_champion(s3_bucket, "pogona-head")["run_id"] == run_id
    assert [(r["run_id"], r["previous_run_id"]) for r in history(open_store(s3_bucket))] == [
        ("first", None), ("better", "first")]

    again = publish_run(tmp_path / "better", s3_bucket, "better")
    assert again.promoted and again.reason == "run better is already the champion"


def test_bad_names_and_missing_weights_are_refused(tmp_path: Path) -> None:
    from components.errors import UserError

    run = make_run(tmp_path / "run", 0.97, 0.8)
    with pytest.raises(UserError, match="--run-id"):
        publish_run(run, str(tmp_path / "store"), "a/b")
    with pytest.raises(UserError, match="--run-id '.hidden': .*does not start with '.'"):
        publish_run(run, str(tmp_path / "store"), ".hidden")
    (run / "train" / "weights" / "best.pt").unlink()
    with pytest.raises(UserError, match="no best weights"):
        publish_run(run, str(tmp_path / "store"), "run-1")
    assert read_champion(str(tmp_path / "store"), "pogona-head") is None


def test_an_evaluation_without_overall_figures_falls_back_to_the_best_epoch(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 0.97, 0.80)
    (run / "evaluation" / "evaluation.json").write_text(json.dumps({"by_modality": {}}))
    publish_run(run, str(tmp_path / "store"), "run-1")
    with open(FIXTURES / "converged_early" / "results.csv", newline="") as handle:
        best = max(float(row["metrics/mAP50-95(B)"]) for row in csv.DictReader(handle))
    metrics = open_store(str(tmp_path / "store")).get_json("runs/run-1/metrics.json")["metrics"]
    assert metrics["map50_95"] == best


def test_without_evaluation_the_decision_uses_the_metrics_of_the_published_model(tmp_path: Path) -> None:
    """best.pt is one epoch's weights: never a mix of each metric's best epoch; training's final validation wins."""
    run = make_run(tmp_path / "run", 0.97, 0.80)
    (run / "evaluation" / "evaluation.json").unlink()
    best = write_results(run / "train" / "results.csv", SPLIT_PEAKS)
    best_map50, best_map50_95 = best["metrics/mAP50(B)"], best["metrics/mAP50-95(B)"]
    highest_map50 = max(row["metrics/mAP50(B)"] for row in SPLIT_PEAKS)
    assert best_map50 < highest_map50  # the mix would pass a floor between the two
    promotion = PromotionConfig(min_map50=(best_map50 + highest_map50) / 2)
    store = open_store(str(tmp_path / "store"))

    result = publish_run(run, store, "run-1", promotion=promotion)
    assert not result.promoted and result.reason.startswith(f"mAP50 {best_map50:.4f} is below the floor")
    metrics = store.get_json("runs/run-1/metrics.json")["metrics"]
    assert (metrics["map50"], metrics["map50_95"]) == (best_map50, best_map50_95)

    final = {"precision": 0.9, "recall": 0.88, "map50": highest_map50, "map50_95": best_map50_95 + 0.01}
    (run / "train" / "metrics.json").write_text(json.dumps({"metrics": {**final, "fitness": 0.5}, "best_epoch": 3}))
    result = publish_run(run, store, "run-2", promotion=promotion)
    assert result.promoted and read_champion(store, "pogona-head")["metrics"] == final


def test_publish_loads_neither_the_report_nor_matplotlib() -> None:
    """Publishing (and the nightly skip decision beside it) pays only for what deciding needs."""
    probe = ("import sys, components.publishing.publish; "
             "print([name for name in ('matplotlib', 'components.reporting.report') if name in sys.modules])")
    result = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[3],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_broken_evaluation_is_named_and_nothing_is_uploaded(tmp_path: Path) -> None:
    from components.errors import UserError

    run = make_run(tmp_path / "run", 0.97, 0.80)
    (run / "evaluation" / "evaluation.json").write_text("{not json")
    with pytest.raises(UserError, match=r"evaluation\.json: the evaluation is not valid JSON"):
        publish_run(run, str(tmp_path / "store"), "run-1")
    assert not (tmp_path / "store").exists()


class CountingUploads(FolderStore):
    """A folder store that records the keys it uploads files to."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.uploaded: list[str] = []

    def upload_file(self, src: Path, key: str, digests=()):
        self.uploaded.append(key)
        return super().upload_file(src, key, digests)


def test_publishing_again_uploads_only_the_files_that_changed(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", 0.97, 0.80)
    publish_run(run, str(tmp_path / "store"), "run-1")
    (run / "report" / "report.md").write_text("# report, rewritten\n")
    store = CountingUploads(tmp_path / "store")
    result = publish_run(run, store, "run-1")
    assert store.uploaded == ["runs/run-1/report/report.md"]
    assert store.get_bytes("runs/run-1/report/report.md") == b"# report, rewritten\n"
    assert "runs/run-1/train/weights/best.pt" in {f"runs/run-1/{name}" for name in result.uploaded}


def test_a_challenger_exactly_at_the_floor_passes_it_and_one_just_below_does_not(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    floor = PromotionConfig(min_map50=0.95)
    below = publish_run(make_run(tmp_path / "below", map50=0.9499, map50_95=0.80), store, "below", promotion=floor)
    assert not below.promoted and "mAP50 0.9499 is below the floor 0.9500" in below.reason
    at_floor = publish_run(make_run(tmp_path / "at", map50=0.95, map50_95=0.80), store, "at", promotion=floor)
    assert at_floor.promoted and at_floor.reason == "no champion yet; mAP50 0.9500 passes the floor"
    assert read_champion(store, "pogona-head")["run_id"] == "at"


class RivalWritesFirst(FolderStore):
    """A store where another run swaps the production pointer just before each of this run's pointer writes,
    so every conditional write loses its condition."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.pointer_writes = 0

    def put_json(self, key: str, value: Any, **conditions: Any):
        if key.endswith("production.json") and conditions:
            self.pointer_writes += 1
            rival = {**candidate(f"rival-{self.pointer_writes}", 0.10), "promoted_at": "2026-12-01T02:00:00+00:00",
                     "previous_run_id": None}
            super().put_json(key, rival)
        return super().put_json(key, value, **conditions)


def test_a_pointer_that_keeps_changing_ends_the_decision_after_its_attempts(tmp_path: Path) -> None:
    store = RivalWritesFirst(tmp_path / "store")
    with pytest.raises(StorageError, match="production.json kept changing over 10 attempts; publish again"):
        promote(store, "pogona-head", candidate("late", 0.80), PromotionConfig())
    assert store.pointer_writes == MAX_DECISION_ATTEMPTS == 10
    assert read_champion(store, "pogona-head")["run_id"] == "rival-10"
    assert all(record["run_id"] != "late" for record in history(store))


def test_publish_reads_the_weights_once_to_upload_and_hash_them(tmp_path: Path, store_uri: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run", map50=0.97, map50_95=0.7)
    best = (run / "train" / "weights" / "best.pt").resolve()
    opened: list[str] = []
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if Path(str(file)).resolve() == best if isinstance(file, (str, Path)) else False:
            opened.append(args[0] if args else kwargs.get("mode", "r"))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr("builtins.open", counting_open)
    publish_run(run, store_uri, "r1")
    assert len(opened) == 1, f"best.pt opened {len(opened)} times"
    pointer = open_store(store_uri).get_json("models/pogona-head/production.json")
    assert pointer["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()


def test_each_decision_says_why_in_figures(tmp_path: Path) -> None:
    champion = {"run_id": "champ", "metrics": {"map50": 0.97, "map50_95": 0.80}}
    margin = PromotionConfig(min_map50=0.95, min_margin_map50_95=0.01)
    assert decide({}, None, margin) == Decision(False, "mAP50 0.0000 is below the floor 0.9500")
    assert decide({"map50": 0.96}, champion, margin) == Decision(
        False, "mAP50-95 0.0000 vs champion champ 0.8000: gain -0.8000 does not beat the margin 0.0100")
    assert decide({"map50": 0.96, "map50_95": 0.805}, champion, margin) == Decision(
        False, "mAP50-95 0.8050 vs champion champ 0.8000: gain +0.0050 does not beat the margin 0.0100")
    assert decide({"map50": 0.96, "map50_95": 0.81}, champion, margin) == Decision(
        True, "mAP50-95 0.8100 beats champion champ by +0.0100")
    exactly = {"run_id": "champ", "metrics": {"map50_95": 0.5}}  # a gain of exactly the margin, in binary too
    assert decide({"map50": 0.96, "map50_95": 0.75}, exactly, PromotionConfig(0.95, 0.25)).promote
    assert decide({"map50": 0.96, "map50_95": 0.80}, champion, PromotionConfig()).reason.endswith(
        "gain +0.0000 does not beat the margin 0.0000")  # a tie never replaces the champion


def test_a_lost_history_record_of_the_champion_is_restored_by_the_next_promotion(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "store")
    first, _ = promote(store, "pogona-head", candidate("champ", 0.80), PromotionConfig())
    assert first == Decision(True, "no champion yet; mAP50 0.9700 passes the floor")
    for info in store.list("models/pogona-head/history/"):
        store.delete(info.key)
    again, record = promote(store, "pogona-head", candidate("champ", 0.80), PromotionConfig())
    assert again == Decision(True, "run champ is already the champion") and record["run_id"] == "champ"
    assert [entry["run_id"] for entry in history(store)] == ["champ"]
    for info in store.list("models/pogona-head/history/"):
        store.delete(info.key)
    better, record = promote(store, "pogona-head", candidate("better", 0.85), PromotionConfig())
    assert better.promote and record["previous_run_id"] == "champ" and record["promoted_at"].endswith("+00:00")
    assert [(entry["run_id"], entry["previous_run_id"]) for entry in history(store)] == [("champ", None),
                                                                                          ("better", "champ")]
    assert read_champion(str(tmp_path / "store"), "pogona-head") == record
