"""Checkpoint uploads in the background, so that a slow store never stalls the training loop.

A checkpoint is copied to a staging folder when it is handed over (ultralytics rewrites
last.pt in place the next epoch) and uploaded by one worker thread, one checkpoint at a time.
A checkpoint that arrives while another uploads waits; a waiting one that a newer checkpoint
reaches first is superseded, file by file, so the store always ends with the newest of each.
Only a transient failure (a 5xx, throttling, a dropped connection) is tried again: a refusal such
as AccessDenied or a full disk cannot succeed later, so it is reported at once.

The files of one checkpoint land one after the other, so a pod that dies between two of them
leaves a results.csv newer than last.pt: `trim_results` cuts it back to last.pt's epochs before
a run resumes, or the resumed run would write the lost epochs' rows a second time.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

from components.log import LOG
from components.storage import ObjectStore, StorageError, is_transient

# Files in the order they are uploaded: a restarted run reads last.pt first, and must never find
# one newer than the best.pt and results.csv beside it.
UPLOAD_ORDER = ("best.pt", "results.csv", "last.pt")


class CheckpointUploadError(StorageError):
    """A checkpoint file that could not be stored after every attempt."""


class CheckpointUploads:
    """At most one upload in flight and at most one checkpoint waiting; `wait` returns when all are stored."""

    def __init__(self, store: ObjectStore, staging_parent: Path, attempts: int = 4, first_delay: float = 1.0):
        self.store = store
        self.staging_parent = staging_parent
        self.attempts = attempts
        self.first_delay = first_delay
        self._staging: Path | None = None
        self._pending: dict[str, Path] = {}
        self._uploading: list[str] = []  # the keys of the checkpoint in flight not stored yet
        self._busy = False
        self._failure: CheckpointUploadError | None = None
        self._done = threading.Condition()

    def submit(self, files: dict[str, Path]) -> None:
        """Snapshot `files` (object key -> local file) and queue them; raises an earlier upload's failure."""
        self._raise_failure()
        snapshot = self._snapshot(files)
        with self._done:
            superseded = self._pending.keys() & snapshot.keys()
            for key in superseded:
                self._pending[key].unlink(missing_ok=True)
            self._pending.update(snapshot)
            if superseded:
                LOG.info(f"a checkpoint waiting for upload was superseded by a newer one "
                         f"({', '.join(sorted(superseded))})")
            if not self._busy:
                self._busy = True
                threading.Thread(target=self._work, name="checkpoint-uploads", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued checkpoint is stored (or has failed), then raise the first failure.

        With a `timeout` (an eviction's grace period), give up when it runs out and return False: what is
        still queued or uploading (`unstored`) is abandoned with the staging folder, as the pod is about to die.
        """
        started = time.monotonic()
        finished = True
        with self._done:
            if self._busy:
                finished = self._done.wait_for(lambda: not self._busy, timeout)
                LOG.info(f"waited {time.monotonic() - started:.1f} s for checkpoint uploads"
                         + ("" if finished else f", then stopped waiting: {', '.join(self.unstored())} not stored"))
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if finished:
            self._raise_failure()
        return finished

    def unstored(self) -> list[str]:
        """The object keys queued or uploading and not stored yet, in upload order."""
        with self._done:
            return sorted({*self._uploading, *self._pending}, key=UPLOAD_ORDER.index)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _snapshot(self, files: dict[str, Path]) -> dict[str, Path]:
        if self._staging is None:
            self.staging_parent.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix="checkpoint-uploads-", dir=self.staging_parent))
        copies = {}
        for key, path in files.items():
            copy = Path(tempfile.mkstemp(prefix=f"{key}.", dir=self._staging)[1])
            shutil.copyfile(path, copy)
            copies[key] = copy
        return copies

    def _work(self) -> None:
        """The worker: upload what is pending, checkpoint after checkpoint, until nothing is left."""
        while True:
            with self._done:
                checkpoint, self._pending = self._pending, {}
                self._uploading = list(checkpoint)
                if not checkpoint:
                    self._busy = False
                    self._done.notify_all()
                    return
            try:
                for key in sorted(checkpoint, key=UPLOAD_ORDER.index):
                    self._upload(checkpoint[key], key)
                    with self._done:
                        self._uploading.remove(key)
            except CheckpointUploadError as failure:
                LOG.warning(str(failure))  # now; it is raised at the next checkpoint or wait
                with self._done:
                    self._failure = self._failure or failure
            finally:
                for copy in checkpoint.values():
                    copy.unlink(missing_ok=True)

    def _upload(self, path: Path, key: str) -> None:
        """Upload one file, trying a transient failure again with doubling pauses; the last failure is raised
        with the key."""
        for attempt in range(1, self.attempts + 1):
            try:
                self.store.upload_file(path, key)
                return
            except Exception as exc:
                transient = _is_transient(exc)
                if attempt == self.attempts or not transient:
                    kind = "" if transient else " (not retried: the error is not transient)"
                    raise CheckpointUploadError(f"checkpoint upload of {self.store.url(key)} failed after {attempt} "
                                                f"attempt{'s' if attempt > 1 else ''}{kind}: {exc}") from exc
                delay = self.first_delay * 2 ** (attempt - 1)
                LOG.warning(f"checkpoint upload of {self.store.url(key)} failed ({exc}); "
                            f"attempt {attempt + 1} of {self.attempts} in {delay:.0f} s")
                time.sleep(delay)


def _is_transient(error: BaseException) -> bool:
    """A failure worth another try: transient itself, or a store error whose cause was (the S3 store has already
    retried it a few times within seconds; an outage can outlast that)."""
    return is_transient(error) or (isinstance(error, StorageError) and error.__cause__ is not None
                                   and is_transient(error.__cause__))


def trim_results(results_csv: Path, epochs: int) -> None:
    """Keep the header and the rows of the first `epochs` epochs in ultralytics' results.csv (its `epoch` column
    counts from 1): the rows a checkpoint of that many epochs goes on from. Kept lines stay as they were."""
    if not results_csv.is_file():
        return
    header, *rows = results_csv.read_text().splitlines(keepends=True)
    epoch_column = [name.strip() for name in header.split(",")].index("epoch")
    kept = [row for row in rows if row.strip() and int(float(row.split(",")[epoch_column])) <= epochs]
    if len(kept) < len(rows):
        LOG.info(f"{results_csv}: dropped the rows of {len(rows) - len(kept)} epochs that the checkpoint of epoch "
                 f"{epochs} does not hold (stored after it by an attempt that died before storing its last.pt)")
        results_csv.write_text("".join([header, *kept]))
