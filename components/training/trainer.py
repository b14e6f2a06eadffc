"""The ultralytics trainer that training and the sanity gate run: guarded by the dead-run detector, checkpointing.

`GuardedDetectionTrainer` carries the dead-run detector and the checkpoint upload in the
trainer class itself, because ultralytics runs DDP by re-creating the trainer from its class
in fresh worker processes, where callbacks added to a `YOLO` object do not follow. Checkpoints
upload in the background (`components.training.checkpoints`) and are all stored before the final
validation, or before an error leaves the trainer.

This is the one pogona module that prepares ultralytics when it is imported: the class
subclasses ultralytics' `DetectionTrainer`, and a DDP worker re-creates it by importing this
module by name in a fresh interpreter, where no step function ran before. So it is imported
nowhere at module level: `train_model` and `run_sanity` import it inside, after they prepared
ultralytics themselves.
"""

from __future__ import annotations

import os
import time
from typing import Any

from components.training.batch_policy import BatchPlan, choose_batch, plan_batch
from components.training.checkpoints import CheckpointUploads
from components.training.deadrun import DeadRunDetector
from components.log import LOG
from components.storage import open_store
from components.runtime.eviction import Evicted, deferred, raise_if_evicted
from components.runtime.yolo_env import offline_ultralytics

offline_ultralytics()

from ultralytics.cfg import DEFAULT_CFG  # noqa: E402  (after offline_ultralytics, which must run first)
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.utils import RANK  # noqa: E402

CHECKPOINT_URI_ENV = "POGONA_CHECKPOINT_URI"
# How long an evicted training waits for its checkpoint uploads: inside the pod's grace period (Kubernetes'
# default is 30 s), leaving time to reach the safe point before and to exit after. The pipeline sets it to fit
# the grace period the manifests give training pods.
GRACE_SECONDS_ENV, DEFAULT_GRACE_SECONDS = "POGONA_GRACE_SECONDS", 25.0


def _watch_batch(trainer: GuardedDetectionTrainer) -> None:
    trainer.dead_run_detector.on_train_batch_end(trainer)


def _watch_epoch(trainer: GuardedDetectionTrainer) -> None:
    trainer.dead_run_detector.on_train_epoch_end(trainer)


def _upload_checkpoint(trainer: GuardedDetectionTrainer) -> None:
    """After every saved epoch, queue last.pt, results.csv and a new best.pt for where a restarted run finds them."""
    if trainer.checkpoint_uploads is None or RANK not in {-1, 0}:
        return
    files = {"results.csv": trainer.csv, "last.pt": trainer.last}
    if trainer.best_fitness == trainer.fitness and trainer.best.is_file():  # ultralytics just wrote a new best.pt
        files["best.pt"] = trainer.best
    trainer.checkpoint_uploads.submit(files)
    trainer.checkpoint_epochs = trainer.epoch + 1


def _stop_if_evicted(trainer_or_validator: Any) -> None:
    """A safe point to stop at on SIGTERM: between two batches (training or validation), or after an epoch's
    checkpoint was queued."""
    raise_if_evicted()


class GuardedDetectionTrainer(DetectionTrainer):
    """DetectionTrainer with the dead-run detector and, when asked, per-epoch checkpoint upload.

    The checkpoint destination travels in the environment (`POGONA_CHECKPOINT_URI`), the one
    channel ultralytics' DDP launcher carries into its workers besides the trainer arguments.
    """

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict | None = None, _callbacks: dict | None = None):
        super().__init__(cfg, overrides, _callbacks)
        self.batch_plan: BatchPlan | None = None
        self.train_images = 0
        self.dead_run_detector = DeadRunDetector()
        checkpoint_uri = os.environ.get(CHECKPOINT_URI_ENV, "")
        # staged beside the save dir, not in it: ultralytics empties the save dir before it launches DDP workers
        self.checkpoint_uploads = (CheckpointUploads(open_store(checkpoint_uri), self.save_dir.parent)
                                   if checkpoint_uri else None)
        self.checkpoint_epochs = 0  # epochs in the newest checkpoint queued for upload
        hooks = [("on_train_batch_end", _watch_batch), ("on_train_epoch_end", _watch_epoch),
                 ("on_model_save", _upload_checkpoint), ("on_train_batch_end", _stop_if_evicted),
                 ("on_val_batch_end", _stop_if_evicted), ("on_fit_epoch_end", _stop_if_evicted)]
        for event, hook in hooks:
            if hook not in self.callbacks[event]:  # DDP workers receive the parent's callbacks pickled
                self.add_callback(event, hook)

    def optimizer_step(self) -> None:
        super().optimizer_step()
        self.dead_run_detector.count_optimizer_step()

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        """ultralytics' dataset; the train split's size is kept for the batch policy."""
        dataset = super().build_dataset(img_path, mode, batch)
        if mode == "train":
            self.train_images = len(dataset)
        return dataset

    def auto_batch(self) -> int:
        """AutoBatch's answer is a ceiling on GPU memory, not the batch: the policy picks within it
        (components.training.batch_policy), so that each epoch has enough optimizer steps."""
        memory_batch = super().auto_batch()  # builds the train dataset, so train_images is known
        self.batch_plan = choose_batch(memory_batch, self.train_images, self.epochs, self.world_size,
                                       nbs=self.args.nbs, warmup_epochs=self.args.warmup_epochs)
        return self.batch_plan.batch

    def _build_train_pipeline(self) -> None:
        """Build the loaders, then log what the batch means for this run (a given batch gets its plan too)."""
        super()._build_train_pipeline()
        chosen = self.batch_plan
        if chosen is None or chosen.batch != self.batch_size:
            reason = ("a fixed batch" if chosen is None else
                      f"ultralytics halved batch {chosen.batch} after running out of GPU memory")
            self.batch_plan = plan_batch(self.batch_size, len(self.train_loader.dataset), self.epochs,
                                         self.world_size, reason, self.args.nbs, self.args.warmup_epochs)
        if RANK in {-1, 0}:
            LOG.info(f"batch plan: {self.batch_plan.summary()}")

    def final_eval(self) -> None:
        """Store the last checkpoint before the final validation rewrites last.pt and best.pt without their
        training state; an upload that failed for good fails the step here."""
        if self.checkpoint_uploads is not None:
            self.checkpoint_uploads.wait()
        super().final_eval()

    def train(self) -> None:
        """Train; on an error, still store the checkpoints already queued, so a retry resumes from the newest.

        An eviction (SIGTERM) stops training at the next batch or epoch end: the epoch under way is lost either
        way, since a checkpoint holds whole epochs, and the grace period is for storing the newest one."""
        try:
            with deferred():
                super().train()
        except Evicted as eviction:
            self._store_on_eviction(eviction)
            raise
        except BaseException as error:
            if self.checkpoint_uploads is not None:
                _wait_beside(self.checkpoint_uploads, error)
            raise

    def _store_on_eviction(self, eviction: Evicted) -> None:
        """Wait, within the grace period, for the upload in flight and the newest checkpoint, and say in one line
        what a retry resumes from."""
        if self.checkpoint_uploads is None:
            LOG.warning("evicted (SIGTERM): training stopped; this run stores no checkpoints, so a retry starts over")
            return
        waited_from = time.monotonic()
        grace = float(os.environ.get(GRACE_SECONDS_ENV, DEFAULT_GRACE_SECONDS))
        stored = _wait_beside(self.checkpoint_uploads, eviction, timeout=grace)
        unstored = self.checkpoint_uploads.unstored() if stored is None else []
        if not self.checkpoint_epochs:
            LOG.warning("evicted (SIGTERM): training stopped before its first epoch ended; no checkpoint to store, "
                        "a retry starts over")
        elif stored or not unstored and stored is None:  # None: the last upload ended as the wait gave up
            LOG.warning(f"evicted (SIGTERM): training stopped; stored the newest checkpoint (epoch "
                        f"{self.checkpoint_epochs}) at {self.checkpoint_uploads.store.url('last.pt')} in "
                        f"{time.monotonic() - waited_from:.1f} s; a retry resumes from it")
        elif unstored:
            LOG.warning(f"evicted (SIGTERM): training stopped; {GRACE_SECONDS_ENV}={grace:g} s ran out before the "
                        f"checkpoint of epoch {self.checkpoint_epochs} was stored: not stored {', '.join(unstored)}; "
                        f"a retry resumes from the last.pt at {self.checkpoint_uploads.store.url('last.pt')} "
                        "(an earlier epoch's), if any")
        else:
            LOG.warning(f"evicted (SIGTERM): training stopped; the checkpoint of epoch {self.checkpoint_epochs} "
                        "could not be stored (see above); a retry resumes from an older one, if any")


def _wait_beside(uploads: CheckpointUploads, error: BaseException, timeout: float | None = None) -> bool | None:
    """Wait for the queued uploads while `error` is on its way out; an upload failure is logged, never raised
    in its place. Whether every upload succeeded; None when `timeout` ran out first."""
    try:
        if not uploads.wait(timeout):
            return None
    except Exception as failure:
        if failure is not error:
            LOG.error(str(failure))
        return False
    return True
