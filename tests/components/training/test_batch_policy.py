"""The batch policy: AutoBatch's answer is a ceiling, the batch gives enough optimizer steps per epoch, and the plan's
numbers are those ultralytics' trainer then runs with."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from components.training.batch_policy import BatchPolicy, choose_batch, plan_batch
from components.errors import UserError

POLICY = BatchPolicy()


def _steps(batch: int, images: int, epochs: int = 100, world_size: int = 1) -> float:
    return plan_batch(batch, images, epochs, world_size).optimizer_steps_per_epoch


def test_a_large_autobatch_answer_is_cut_to_the_largest_batch_with_enough_optimizer_steps():
    images, memory = 2379, 311  # the demo train split and AutoBatch's answer for yolo11s at 640 px on an H100
    assert _steps(memory, images) < POLICY.min_optimizer_steps_per_epoch
    plan = choose_batch(memory, images, epochs=100)
    assert plan.batch < memory and plan.batch % POLICY.multiple == 0
    assert plan.optimizer_steps_per_epoch >= POLICY.min_optimizer_steps_per_epoch
    larger = range(plan.batch + POLICY.multiple, memory + 1, POLICY.multiple)
    assert all(_steps(batch, images) < POLICY.min_optimizer_steps_per_epoch for batch in larger)
    assert "AutoBatch fits 311" in plan.reason and f"{plan.batch} is the largest" in plan.reason


def test_a_large_dataset_keeps_autobatch_answer_rounded_down_to_a_multiple_of_8():
    plan = choose_batch(311, 50_000, epochs=100)
    assert plan.batch == 311 // 8 * 8 and plan.optimizer_steps_per_epoch == math.ceil(50_000 / plan.batch)


def test_without_enough_images_for_the_target_the_batch_with_most_optimizer_steps_is_chosen():
    images = 160  # below 64 images per step, ultralytics accumulates: no batch reaches the target
    plan = choose_batch(311, images, epochs=30)
    candidates = range(POLICY.multiple, 311, POLICY.multiple)
    assert plan.optimizer_steps_per_epoch == max(_steps(batch, images, 30) for batch in candidates)
    assert _steps(images // 2, images, 30) < plan.optimizer_steps_per_epoch  # a two-step batch does worse
    assert "no batch gives" in plan.reason


def test_gpu_memory_always_wins():
    assert choose_batch(16, 2379, epochs=100).batch == 16
    assert choose_batch(5, 2379, epochs=100).batch == 5  # below the multiple of 8: still what fits


def test_accumulation_and_warmup_follow_ultralytics_nominal_batch():
    plan = plan_batch(16, 1000, epochs=10)
    assert plan.accumulate == 4 and plan.batches_per_epoch == math.ceil(1000 / 16)
    assert plan.optimizer_steps_per_epoch == pytest.approx(plan.batches_per_epoch / 4, abs=0.01)
    assert plan.warmup_iterations == 3 * plan.batches_per_epoch and plan.warmup_epochs == 3
    assert plan.warmup_share == pytest.approx(0.3)
    assert plan_batch(16, 1000, epochs=2).warmup_epochs == 1  # the last epoch always trains without warm-up
    assert plan_batch(16, 1000, epochs=1).warmup_iterations == 0


def test_ddp_divides_the_batch_and_the_split_between_gpus():
    plan = plan_batch(64, 1000, epochs=10, world_size=4)  # 16 images per GPU, 250 images per GPU
    assert plan.batches_per_epoch == math.ceil(250 / 16) and plan.accumulate == 1
    chosen = choose_batch(311, 2379, epochs=100, world_size=3)
    assert chosen.batch % 24 == 0 and chosen.optimizer_steps_per_epoch >= POLICY.min_optimizer_steps_per_epoch
    with pytest.raises(UserError, match="batch 2 is smaller than the GPU count 4"):
        plan_batch(2, 1000, epochs=10, world_size=4)


@pytest.mark.parametrize("batch", [8, 24, 40, 0.95])
def test_the_plan_is_what_the_trainer_runs_with(batch: float, demo_dataset_dir: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture):
    """The trainer's own loader, accumulation and warm-up agree with the plan it logs (0.95: AutoBatch, which
    answers 16 on CPU, then the policy)."""
    from components.data.dataset import load_dataset
    from components.training.trainer import GuardedDetectionTrainer

    data = load_dataset(demo_dataset_dir).write_yaml(tmp_path / "data.yaml")
    trainer = GuardedDetectionTrainer(overrides={
        "model": "yolo11n.yaml", "data": str(data), "epochs": 5, "imgsz": 64, "batch": batch, "device": "cpu",
        "workers": 0, "plots": False, "save_dir": str(tmp_path / "train")})
    caplog.set_level(logging.INFO, logger="pogona")
    trainer._setup_train()
    plan = trainer.batch_plan
    batches = len(trainer.train_loader)
    assert (plan.batch, plan.batches_per_epoch, plan.accumulate, plan.warmup_iterations) == (
        trainer.batch_size, batches, trainer.accumulate, trainer._get_warmup_iterations(batches))
    assert plan.reason.startswith("AutoBatch fits 16" if batch < 1 else "a fixed batch")
    assert [message for message in caplog.messages if message.startswith("batch plan:")] == [
        f"batch plan: {plan.summary()}"]
