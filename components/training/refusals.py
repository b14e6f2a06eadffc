"""Refusals: a training failure no retry can fix is recorded under the run, so KFP's retries end at once.

KFP retries a failed step whatever the cause; lost nodes and evicted pods are what the retries are
for. No CUDA, a bad parameter or a dead run fail the same way every time, so the attempt that meets
one records it, and a retry within the same pipeline run (`kfp_run_id`) refuses at once, naming
that first cause, instead of training again.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from components import layout
from components.errors import UserError
from components.log import LOG
from components.storage import ObjectStore, StorageError
from components.training.deadrun import DeadRunError


@contextlib.contextmanager
def refusals_recorded(store: ObjectStore, run_id: str, kfp_run_id: str) -> Iterator[None]:
    """Refuse when an earlier attempt of this pipeline run recorded a refusal; else run the block and record
    the UserError or DeadRunError it raises as the refusal the attempts after it meet."""
    refusal = layout.run_refusal(run_id, kfp_run_id)
    if (refused := store.get_json(refusal, missing_ok=True)) is not None:
        raise UserError(f"not trained again: an earlier attempt failed for a reason a retry cannot fix: "
                        f"{refused['reason']}")
    try:
        yield
    except (UserError, DeadRunError) as exc:
        try:
            store.put_json(refusal, {"reason": str(exc)})
        except StorageError as unrecorded:  # the failure that ends the step stays the one that explains it
            LOG.error(f"could not record that a retry cannot fix this ({unrecorded})")
        raise
