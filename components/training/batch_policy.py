"""How many images a training batch holds: GPU memory sets a ceiling, the optimizer schedule a target.

A fractional batch (0.95) asks AutoBatch for the largest batch that fits in that share of GPU
memory. Filling the GPU is not the goal, though: ultralytics steps the optimizer once per batch
of at least `nbs` (64) images, accumulating gradients over smaller batches, so a 2,379-image
train split at AutoBatch's batch 311 gets 8 optimizer steps an epoch where batch 64 gets 37.
The policy keeps the largest batch (a multiple of 8 and of the GPU count, within AutoBatch's)
that still gives `min_optimizer_steps_per_epoch`; when no batch can (a small dataset), the one
that gives the most.

The plan mirrors the arithmetic of ultralytics' BaseTrainer (8.4): batches per epoch are those of
one rank's loader (`DistributedSampler` pads the split to a multiple of the world size, the last
batch is kept), `accumulate = max(round(nbs / batch), 1)` capped at the run's batches, and warm-up
lasts `round(min(warmup_epochs, epochs - 1) * batches_per_epoch)` iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.errors import UserError

NOMINAL_BATCH = 64  # ultralytics' `nbs`: images per optimizer step when gradients accumulate
WARMUP_EPOCHS = 3.0  # ultralytics' `warmup_epochs` default


@dataclass(frozen=True)
class BatchPolicy:
    """At least `min_optimizer_steps_per_epoch` steps an epoch (ultralytics' own batch 16 gives a 2,379-image
    split 37), with batches in multiples of `multiple` images."""

    min_optimizer_steps_per_epoch: int = 32
    multiple: int = 8


@dataclass(frozen=True)
class BatchPlan:
    """What a batch size means for a run: its loader batches, optimizer steps and warm-up, and why it was chosen."""

    batch: int  # images per optimizer batch, over every GPU
    batches_per_epoch: int  # of one rank's loader
    accumulate: int  # batches per optimizer step after warm-up
    optimizer_steps_per_epoch: float  # after warm-up
    warmup_iterations: int
    warmup_epochs: float
    warmup_share: float  # of the run's iterations
    reason: str

    def summary(self) -> str:
        """One line for the training log."""
        return (f"batch {self.batch}: {self.batches_per_epoch} batches and {self.optimizer_steps_per_epoch:g} "
                f"optimizer steps per epoch (accumulate {self.accumulate}); warm-up {self.warmup_iterations} "
                f"iterations = {self.warmup_epochs:g} epochs = {self.warmup_share:.1%} of the run ({self.reason})")


def plan_batch(batch: int, train_images: int, epochs: int, world_size: int = 1, reason: str = "a fixed batch",
               nbs: int = NOMINAL_BATCH, warmup_epochs: float = WARMUP_EPOCHS) -> BatchPlan:
    """The plan of a given batch, as ultralytics will run it; `world_size` is the GPU count (0 or 1: one device)."""
    ranks = max(world_size, 1)
    if batch < ranks:
        raise UserError(f"batch {batch} is smaller than the GPU count {ranks}: each GPU needs at least one image")
    if train_images < 1 or epochs < 1:
        raise UserError(f"a batch needs train images and epochs (got {train_images} images, {epochs} epochs)")
    samples = math.ceil(train_images / ranks)  # per rank
    batches = math.ceil(samples / min(batch // ranks, samples))
    accumulate = min(max(round(nbs / batch), 1), batches * epochs)
    warmup = min(warmup_epochs, max(epochs - 1, 0))
    warmup_iterations = round(warmup * batches) if warmup > 0 else 0
    return BatchPlan(batch=batch, batches_per_epoch=batches, accumulate=accumulate,
                     optimizer_steps_per_epoch=round(batches / accumulate, 2), warmup_iterations=warmup_iterations,
                     warmup_epochs=round(warmup_iterations / batches, 2),
                     warmup_share=round(warmup_iterations / (batches * epochs), 4), reason=reason)


def choose_batch(memory_batch: int, train_images: int, epochs: int, world_size: int = 1,
                 policy: BatchPolicy = BatchPolicy(), nbs: int = NOMINAL_BATCH,
                 warmup_epochs: float = WARMUP_EPOCHS) -> BatchPlan:
    """The policy's batch within `memory_batch` (what AutoBatch found fits): the largest multiple of
    `policy.multiple` (and of the GPU count) with enough optimizer steps per epoch, else the one with the most."""
    step = math.lcm(policy.multiple, max(world_size, 1))
    wanted = policy.min_optimizer_steps_per_epoch
    top = min(memory_batch, max(train_images, step))  # a batch above the split's size only changes accumulate

    def plan(batch: int, reason: str) -> BatchPlan:
        return plan_batch(batch, train_images, epochs, world_size, reason, nbs, warmup_epochs)

    ceiling = f"AutoBatch fits {memory_batch}"
    if top < step:
        return plan(top, f"{ceiling}, less than {step}: GPU memory allows no more")
    candidates = range(top // step * step, 0, -step)
    for batch in candidates:
        if plan(batch, "").optimizer_steps_per_epoch >= wanted:
            return plan(batch, f"{ceiling}; {batch} is the largest multiple of {step} within it giving at least "
                               f"{wanted} optimizer steps per epoch on {train_images} train images")
    most = max(candidates, key=lambda batch: (plan(batch, "").optimizer_steps_per_epoch, batch))
    return plan(most, f"{ceiling}; no batch gives {wanted} optimizer steps per epoch on {train_images} train images "
                      f"(gradients accumulate to {nbs} images per step), {most} gives the most")
