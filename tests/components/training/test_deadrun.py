"""The dead-run detector's judgement, fed the loss items ultralytics hands it batch by batch; the verdict words."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import deadrun_rank
from components.training.deadrun import DEAD_WINDOW_STEPS, DeadRunDetector, DeadRunError, Verdict, reduction_device

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



def test_ranks_on_gpus_reduce_their_figures_on_the_gpu_and_ranks_on_cpus_on_the_cpu():
    """NCCL, ultralytics' backend for DDP on GPUs, refuses a CPU tensor: every multi-GPU run would fail at its first
    batch. The reduction itself runs on gloo in the next test; a GPU pair is needed to run it on NCCL."""
    assert [reduction_device(backend) for backend in ("nccl", "gloo")] == ["cuda", "cpu"]


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
    rendezvous, plan = str(tmp_path / "rendezvous"), json.dumps(list(scenarios.values()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    other = subprocess.Popen([sys.executable, str(Path(deadrun_rank.__file__)), "1", rendezvous, plan], env=env,
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        here = deadrun_rank.run_rank(0, rendezvous, plan)  # rank 0 in this process, rank 1 beside it
        out, err = other.communicate(timeout=300)
    finally:
        other.kill()
    assert other.returncode == 0, err[-2000:]
    assert [here, json.loads(out)] == [list(scenarios)] * 2


def test_box_or_dfl_loss_alone_keeps_a_run_alive_and_the_window_sums_every_batch():
    for alive in ([_batch(0.7, 0.4, 0.0)] * 5, [_batch(0.0, 0.4, 0.7)] * 5, [_batch(0.5, 0.4, 0.5)] * 5,
                  [_batch(1.2, 0.6, 1.1)] * 2 + [_batch(0.0, 0.4, 0.0)] * 3):
        detector = DeadRunDetector(window_steps=5)
        _run(detector, alive)
        assert detector.judged


def test_the_abort_names_steps_batches_and_every_loss_of_the_last_batch():
    detector = DeadRunDetector(window_steps=5)
    detector.on_train_batch_end(SimpleNamespace())  # before the first batch ultralytics has no loss items
    detector.on_train_epoch_end(SimpleNamespace())  # nor an epoch that saw no batch: nothing to judge
    assert (detector.batches, detector.judged) == (0, False)
    with pytest.raises(DeadRunError, match=r"Seen after 3 optimizer steps \(3 batches\); last batch: box_loss=0, "
                                           r"cls_loss=0\.4, dfl_loss=0\.$"):
        _run(detector, [_batch(0.0, 0.4, 0.0)] * 3)
        detector.on_train_epoch_end(_batch(0.0, 0.4, 0.0))
