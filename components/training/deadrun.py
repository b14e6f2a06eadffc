"""Abort a training run whose losses show it cannot learn, within its first optimizer steps.

Seed 004: an MPS run trained 43 minutes with every loss at 0 and "completed". The detector
reads the loss items of every batch and stops such a run at the latest `window_steps`
optimizer steps in. A single batch of background-only images legitimately has box = DFL = 0,
so the zero-box signature is judged over the whole window, never one batch.

`Verdict` is the one word for what a run's losses say, here, in the sanity gate and in the report.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

DEAD_WINDOW_STEPS = 20


class Verdict(StrEnum):
    """Whether a run learned. The values are what `verdict.json` publishes, so they never change."""

    HEALTHY = "healthy"
    DEAD = "dead"  # a loss NaN, infinite or 0 where no real batch gives 0: nothing can be learned
    NOT_LEARNING = "not_learning"  # finite losses that do not fall enough, or no useful mAP50

NON_FINITE_CAUSES = (
    "This is a dead run: a loss became NaN or infinite. Usual causes: a learning rate far too high, "
    "fp16 overflow on a broken mixed-precision backend (MPS), corrupt images or labels with NaN or "
    "out-of-range coordinates, or a bad base checkpoint."
)
ALL_ZERO_CAUSES = (
    "This is a dead run: every loss is exactly 0, which no real batch produces. Usual cause: a broken "
    "accelerator backend (PyTorch MPS on Apple silicon did exactly this for 43 minutes in seed 004); "
    "run the CPU sanity gate (pogona sanity) on the same data to tell a backend fault from a data fault."
)
ZERO_BOX_CAUSES = (
    "This is a dead run: box and DFL loss stayed exactly 0, so no anchor was ever assigned to an object. "
    "Usual causes: labels not loaded (label files empty, missing, or not under a /labels/ folder "
    "mirroring /images/), class ids outside data.yaml's names, or a broken accelerator backend (MPS)."
)


class DeadRunError(RuntimeError):
    """Training stopped because its losses show a dead run; the message names the signature and causes."""

    def __init__(self, message: str, steps: int):
        super().__init__(message)
        self.steps = steps


class DeadRunDetector:
    """Watches loss items batch by batch and raises DeadRunError on a dead-run signature.

    The owner calls `count_optimizer_step` whenever the optimizer steps (ultralytics steps it
    every `accumulate` batches), `on_train_batch_end` after every batch and `on_train_epoch_end`
    after every epoch. Under DDP the per-batch figures are summed over ranks, so every rank
    reaches the same decision at the same batch.
    """

    def __init__(self, window_steps: int = DEAD_WINDOW_STEPS):
        self.window_steps = window_steps
        self.steps = 0
        self.batches = 0
        self.box_dfl_total = 0.0
        self.judged = False

    def count_optimizer_step(self) -> None:
        self.steps += 1

    def on_train_batch_end(self, trainer: object) -> None:
        if self.judged:  # the window is over: no more copies of the losses off the device
            return
        items = _loss_items(trainer)
        if not items:
            return
        non_finite, all_zero, box_dfl = _reduce_over_ranks(
            not all(math.isfinite(value) for value in items.values()),
            all(value == 0.0 for value in items.values()),
            items.get("box_loss", 0.0) + items.get("dfl_loss", 0.0),
        )
        self.batches += 1
        if non_finite:
            self._abort(NON_FINITE_CAUSES, items)
        if all_zero:
            self._abort(ALL_ZERO_CAUSES, items)
        self.box_dfl_total += box_dfl
        if self.steps >= self.window_steps:
            self._judge_window(items)

    def on_train_epoch_end(self, trainer: object) -> None:
        """A first epoch shorter than the window ends the window early."""
        if not self.judged and self.batches:
            self._judge_window(_loss_items(trainer))

    def _judge_window(self, items: dict[str, float]) -> None:
        if self.box_dfl_total == 0.0:
            self._abort(ZERO_BOX_CAUSES, items)
        self.judged = True

    def _abort(self, causes: str, items: dict[str, float]) -> None:
        losses = ", ".join(f"{name}={value:.4g}" for name, value in items.items())
        raise DeadRunError(f"{causes} Seen after {self.steps} optimizer steps ({self.batches} batches); "
                           f"last batch: {losses}.", self.steps)


def _loss_items(trainer: Any) -> dict[str, float]:
    """The last batch's losses by name; empty before the first batch.

    Newer ultralytics releases hand a dict; older ones (8.4.103, the oldest admitted, among them) a tensor in
    the order of `trainer.loss_names`.
    """
    items = getattr(trainer, "loss_items", None)
    if items is None:
        return {}
    if isinstance(items, dict):
        return {name: float(value) for name, value in items.items()}
    return {name: float(value) for name, value in zip(trainer.loss_names, items)}


def reduction_device(backend: str) -> str:
    """Where the figures are reduced: NCCL (ultralytics' DDP backend on GPUs) reduces only tensors on the rank's
    GPU, a CPU tensor fails its all-reduce; gloo reduces them on the CPU."""
    return "cuda" if backend == "nccl" else "cpu"


def _reduce_over_ranks(non_finite: bool, all_zero: bool, box_dfl: float) -> tuple[bool, bool, float]:
    """Combine one batch's figures over DDP ranks (a no-op in a single process)."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return non_finite, all_zero, box_dfl
    figures = torch.tensor([float(non_finite), float(all_zero), box_dfl], dtype=torch.float64,
                           device=reduction_device(torch.distributed.get_backend()))
    torch.distributed.all_reduce(figures)
    world = torch.distributed.get_world_size()
    return bool(figures[0] > 0), bool(figures[1] == world), float(figures[2])
