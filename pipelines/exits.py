"""How a pogona process ends on a failure a user can act on: one line and an exit code, never a traceback.

The `pogona` command and the KFP component bodies end the same way, so a bad setting reads the same
in a terminal, in `kubectl logs` and in the KFP UI: `pogona <step>: error: <what and where>`, exit 2;
an eviction (SIGTERM) says that it stopped and cleaned up, exit 143, and a retry goes on from what
was stored. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from components.errors import UserError
from components.runtime.eviction import EVICTED_EXIT_CODE, Evicted
from components.storage import StorageError

USER_ERROR_EXIT_CODE = 2


def ending(command: str, error: BaseException) -> tuple[str, int] | None:
    """The line and exit code a failure of `command` ends with; None for an error that is not the user's to act on."""
    if isinstance(error, (UserError, StorageError)):
        return f"pogona {command}: error: {error}", USER_ERROR_EXIT_CODE
    if isinstance(error, Evicted):
        return (f"pogona {command}: {error}: stopped and cleaned up; a retry goes on from what was stored",
                EVICTED_EXIT_CODE)
    return None


@contextlib.contextmanager
def one_line_failures(command: str) -> Iterator[None]:
    """Around a component body: its failure ends the pod with `ending`'s line and code instead of a traceback."""
    try:
        yield
    except (UserError, StorageError, Evicted) as error:
        line, code = ending(command, error)
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(code) from None
