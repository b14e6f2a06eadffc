"""SIGTERM as Kubernetes sends it, to real processes: an exception in the main thread, cleanup runs, safe points."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from processes import REPO, wait_until


def wait_for_file(path: Path, process: subprocess.Popen) -> None:
    wait_until(path.exists, process, f"writing {path}")


def _start(script: str, folder: Path) -> subprocess.Popen:
    program = textwrap.dedent("""
        import sys, threading
        from pathlib import Path
        from components.runtime.eviction import EVICTED_EXIT_CODE, Evicted, deferred, handle_sigterm, raise_if_evicted
        folder = Path(sys.argv[1])
        handle_sigterm()
        try:
        {body}
        except Evicted as eviction:
            print(eviction)
            sys.exit(EVICTED_EXIT_CODE)
    """).format(body=textwrap.indent(textwrap.dedent(script), "    "))
    return subprocess.Popen([sys.executable, "-c", program, str(folder)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigterm_raises_in_the_main_thread_so_cleanup_runs(tmp_path: Path):
    process = _start("""
        staging = folder / "staging"
        staging.mkdir()
        try:
            (folder / "ready").touch()
            threading.Event().wait()
        finally:
            (staging / "cleaning").touch()
            while not (folder / "go-on").exists():  # a second SIGTERM here must not interrupt the cleanup
                pass
            for path in staging.iterdir():
                path.unlink()
            staging.rmdir()
    """, tmp_path)
    wait_for_file(tmp_path / "ready", process)
    process.send_signal(signal.SIGTERM)
    wait_for_file(tmp_path / "staging" / "cleaning", process)
    process.send_signal(signal.SIGTERM)
    (tmp_path / "go-on").touch()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143 and out.strip() == "the pod was evicted (SIGTERM)", err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["go-on", "ready"]


def test_within_deferred_work_stops_at_its_next_safe_point(tmp_path: Path):
    process = _start("""
        log = folder / "steps"
        with deferred():
            for step in range(10**9):
                log.write_text(log.read_text() + f"begin {step}\\n" if log.exists() else f"begin {step}\\n")
                if step == 3:
                    (folder / "ready").touch()
                    while not (folder / "sent").exists():  # SIGTERM arrives in the middle of step 3
                        pass
                log.write_text(log.read_text() + f"end {step}\\n")
                raise_if_evicted()
    """, tmp_path)
    wait_for_file(tmp_path / "ready", process)
    process.send_signal(signal.SIGTERM)
    (tmp_path / "sent").touch()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert (tmp_path / "steps").read_text().splitlines()[-2:] == ["begin 3", "end 3"]


def test_a_sigterm_within_deferred_work_that_ends_is_raised_at_its_end(tmp_path: Path):
    process = _start("""
        with deferred():
            (folder / "ready").touch()
            while not (folder / "sent").exists():
                pass
        (folder / "after").touch()
    """, tmp_path)
    wait_for_file(tmp_path / "ready", process)
    process.send_signal(signal.SIGTERM)
    (tmp_path / "sent").touch()
    process.communicate(timeout=60)
    assert process.returncode == 143 and not (tmp_path / "after").exists()
