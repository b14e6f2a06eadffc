"""The one logger of pogona: `logging.getLogger("pogona")`.

Step code logs progress, retries and warnings to `LOG` and never prints diagnostics. Entry
points (the `pogona` command, the step functions a KFP pod runs) call `show_logs()` once, so
the lines reach stderr, where a terminal, `kubectl logs` and the KFP UI show them.
"""

from __future__ import annotations

import logging
import sys

LOG = logging.getLogger("pogona")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record arrives (a test's capture, a redirected stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # not setStream: that flushes the previous stream, which may be closed
        super().emit(record)


def show_logs(level: int = logging.INFO) -> None:
    """Send pogona's records at `level` and above to stderr as "pogona: message"; calling it again changes nothing."""
    LOG.setLevel(level)
    if not any(isinstance(handler, _StderrHandler) for handler in LOG.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("pogona: %(message)s"))
        LOG.addHandler(handler)
