"""The dead-run detector's judgement, fed the loss items ultralytics hands it batch by batch; the verdict words."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from components.training.deadrun import DEAD_WINDOW_STEPS, DeadRunDetector, DeadRunError, Verdict

REPO = Path(__file__).resolve().parents[3]


def _batch(box: float, cls: float, dfl: float) -> SimpleNamespace:
    """What the detector reads from a trainer after one batch."""
    return SimpleNamespace(loss_items={"box_loss": torch.tensor(box), "cls_loss": torch.tensor(cls),
                                       "dfl_loss": torch.tensor(dfl)})


def _run(detector: DeadRunDetector, batches: list[SimpleNamespace]) -> None:
    for trainer in batches:
        detector.count_optimizer_step()
        detector.on_train_batch_end(trainer)


def test_background_only_batches_are_not_a_dead_run_when_later_batches_have_boxes():
    detector = DeadRunDetector(window_steps=5)
    _run(detector, [_batch(0.0, 0.8, 0.0), _batch(0.0, 0.7, 0.0)] + [_batch(1.2, 0.6, 1.1)] * 10)
    assert detector.judged and detector.steps == 12


def test_box_and_dfl_at_zero_over_the_window_abort_at_the_window_with_the_causes():
    detector = DeadRunDetector(window_steps=5)
    with pytest.raises(DeadRunError, match="labels not loaded") as raised:
        _run(detector, [_batch(0.0, 0.4, 0.0)] * 50)
    assert raised.value.steps == 5


def test_a_first_epoch_shorter_than_the_window_ends_the_window():
    detector = DeadRunDetector(window_steps=20)
    _run(detector, [_batch(0.0, 0.4, 0.0)] * 3)
    with pytest.raises(DeadRunError, match="box and DFL loss stayed exactly 0"):
        detector.on_train_epoch_end(_batch(0.0, 0.4, 0.0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_aborts_at_once(bad: float):
    detector = DeadRunDetector(window_steps=20)
    with pytest.raises(DeadRunError, match="NaN or infinite") as raised:
        _run(detector, [_batch(1.0, 0.5, 1.0), _batch(1.0, bad, 1.0), _batch(1.0, 0.5, 1.0)])
    assert raised.value.steps == 2


def test_every_loss_at_zero_is_the_broken_backend_signature():
    with pytest.raises(DeadRunError, match="every loss is exactly 0.*MPS"):
        _run(DeadRunDetector(), [_batch(0.0, 0.0, 0.0)])


def _tensor_batch(box: float, cls: float, dfl: float) -> SimpleNamespace:
    """What the detector reads after one batch from older ultralytics releases: one tensor, named by loss_names."""
    return SimpleNamespace(loss_names=("box_loss", "cls_loss", "dfl_loss"), loss_items=torch.tensor([box, cls, dfl]))


def test_loss_items_as_a_tensor_in_the_order_of_loss_names_are_judged_alike():
    with pytest.raises(DeadRunError, match=r"box and DFL loss stayed exactly 0.*cls_loss=0\.4") as raised:
        _run(DeadRunDetector(window_steps=5), [_tensor_batch(0.0, 0.4, 0.0)] * 50)
    assert raised.value.steps == 5
    healthy = DeadRunDetector(window_steps=5)
    _run(healthy, [_tensor_batch(1.2, 0.6, 1.1)] * 10)
    assert healthy.judged
    with pytest.raises(DeadRunError, match="NaN or infinite"):
        _run(DeadRunDetector(), [_tensor_batch(1.0, float("nan"), 1.0)])


def test_verdicts_keep_the_words_verdict_json_publishes():
    assert json.dumps(list(Verdict)) == '["healthy", "dead", "not_learning"]'
    assert f"sanity gate: {Verdict.NOT_LEARNING}" == "sanity gate: not_learning"  # messages show the word


def test_the_default_window_judges_zero_box_losses_after_twenty_optimizer_steps():
    detector = DeadRunDetector()
    _run(detector, [_batch(0.0, 0.4, 0.0)] * 19)
    assert not detector.judged
    with pytest.raises(DeadRunError, match="box and DFL loss stayed exactly 0") as raised:
        _run(detector, [_batch(0.0, 0.4, 0.0)] * 5)
    assert raised.value.steps == DEAD_WINDOW_STEPS == 20



# One rank of a two-process gloo group: feeds each scenario's batches of its rank to a fresh detector and prints
# how each ended. A figure judged on one rank alone would end the ranks differently (or leave one waiting).
RANK_WORKER = """
import datetime, json, sys
from types import SimpleNamespace
import torch
import torch.distributed as dist
from components.training import deadrun

rank, rendezvous, scenarios = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
signatures = {deadrun.NON_FINITE_CAUSES: "non-finite", deadrun.ALL_ZERO_CAUSES: "all zero",
              deadrun.ZERO_BOX_CAUSES: "zero box"}
outcomes = []
for per_rank in scenarios:
    detector = deadrun.DeadRunDetector(window_steps=3)
    try:
        for box, cls, dfl in per_rank[rank]:
            detector.count_optimizer_step()
            detector.on_train_batch_end(SimpleNamespace(loss_items={
                "box_loss": torch.tensor(box), "cls_loss": torch.tensor(cls), "dfl_loss": torch.tensor(dfl)}))
        outcomes.append(f"{'judged' if detector.judged else 'undecided'} after {detector.steps}")
    except deadrun.DeadRunError as error:
        signature = next(name for causes, name in signatures.items() if str(error).startswith(causes))
        outcomes.append(f"{signature} after {error.steps}")
dist.destroy_process_group()
print(json.dumps(outcomes))
"""


@pytest.mark.slow
@pytest.mark.rules
def test_ranks_of_a_ddp_run_reach_the_same_verdict_at_the_same_step(tmp_path):
    healthy, zero_box, nan, all_zero = (1.2, 0.6, 1.1), (0.0, 0.4, 0.0), (1.0, float("nan"), 1.0), (0.0, 0.0, 0.0)
    scenarios = {
        "judged after 4": [[zero_box] * 4, [healthy] * 4],  # boxes on one rank only: the window's sum is not 0
        "zero box after 3": [[zero_box] * 4, [zero_box] * 4],
        "non-finite after 2": [[healthy] * 3, [healthy, nan, healthy]],  # a NaN on one rank stops both ranks
        "undecided after 2": [[all_zero, healthy], [healthy, all_zero]],  # all 0 on one rank at a time: alive
        "all zero after 1": [[all_zero], [all_zero]],
    }
    worker = tmp_path / "rank.py"
    worker.write_text(RANK_WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    ranks = [subprocess.Popen([sys.executable, str(worker), str(rank), str(tmp_path / "rendezvous"),
                               json.dumps(list(scenarios.values()))], env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [rank.communicate(timeout=300) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], [err[-2000:] for _, err in outputs]
    assert [json.loads(out) for out, _ in outputs] == [list(scenarios)] * 2
