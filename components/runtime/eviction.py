"""Evictions: Kubernetes asks a pod to stop with SIGTERM and kills it with SIGKILL when the grace period ends.

Python's default for SIGTERM ends the process at once, skipping every `finally`: temporary files,
staging folders and a checkpoint upload in flight are left as they are. `handle_sigterm`, called by
the entry points (the `pogona` CLI and the pipeline's step doors), makes SIGTERM raise `Evicted` in
the main thread instead, so the cleanup that an error already runs runs on an eviction too.

Code that must not be interrupted half-way (the training loop, between two batches) runs inside
`deferred()`: there a SIGTERM only marks the process evicted, and the code stops at its next safe
point with `raise_if_evicted()`. Worker threads, which never receive the exception, ask
`raise_if_evicted()` before they start more work.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

# What a shell reports for a process ended by SIGTERM (128 + 15): an eviction, which a retry may fix.
EVICTED_EXIT_CODE = 128 + signal.SIGTERM

_evicted = threading.Event()
_deferring = threading.local()


class Evicted(BaseException):
    """The pod is being evicted. A BaseException, like KeyboardInterrupt: retry loops that catch Exception let it
    pass, and cleanup in `finally` or `except BaseException` runs."""

    def __init__(self) -> None:
        super().__init__("the pod was evicted (SIGTERM)")


def handle_sigterm() -> None:
    """From now on, SIGTERM raises `Evicted` in the main thread (or marks the process evicted, see `deferred`).
    Only the main thread may set a signal handler: called from another (a test's), this does nothing."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    already = _evicted.is_set()
    _evicted.set()
    if not already and not getattr(_deferring, "active", False):  # a second SIGTERM never interrupts the cleanup
        raise Evicted()


def evicted() -> bool:
    """Whether this process received SIGTERM."""
    return _evicted.is_set()


def raise_if_evicted() -> None:
    """Stop here when the process received SIGTERM: a safe point of the caller's work."""
    if _evicted.is_set():
        raise Evicted()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within, SIGTERM interrupts nothing: the work inside stops at its next `raise_if_evicted()`, or at the end of
    the block."""
    _deferring.active = True
    try:
        yield
    finally:
        _deferring.active = False
    raise_if_evicted()
