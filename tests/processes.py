"""Real `pogona` processes for tests that stop them part-way: started with this worktree's code, and waited on
until they reach a moment the test chose (a file they write), never for a guessed time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
POGONA = "import sys; from pipelines.cli import main; sys.exit(main(sys.argv[1:]))"


def start_pogona(*argv: str) -> subprocess.Popen:
    """`pogona argv...` in a new process, with the tests' environment (the AWS variables of the S3 fixtures)."""
    python_path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-c", POGONA, *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": python_path})


def wait_until(reached: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    """Block until `reached()` holds, checking often; fail at once if the process ended first."""
    deadline = time.monotonic() + timeout
    while not reached():
        if process.poll() is not None:
            raise AssertionError(f"the process ended (exit {process.returncode}) before {what}: "
                                 f"{process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.02)


def lines_of(path: Path) -> int:
    """Lines in a file that may not exist yet."""
    return len(path.read_text().splitlines()) if path.is_file() else 0
