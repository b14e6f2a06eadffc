"""An evicted step pod: the SIGTERM sent to the compiled component's command reaches Python, whose cleanup runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from processes import REPO, wait_until

COMPILED = REPO / "pipelines" / "compiled" / "pogona-train.yaml"

# A component module as KFP ships one: a step that installs pogona's handler, as every step door does, and waits.
COMPONENT = textwrap.dedent("""
    from kfp import dsl

    def waits_for_eviction(folder: str):
        import os
        import threading
        from pathlib import Path

        from components.runtime.eviction import handle_sigterm

        handle_sigterm()
        staging = Path(folder) / "staging"
        staging.mkdir()
        try:
            (Path(folder) / "ready").write_text(str(os.getpid()))
            threading.Event().wait()
        finally:
            staging.rmdir()
""")


def compiled_command(executor: str) -> list[str]:
    spec = next(yaml.safe_load_all(COMPILED.read_text()))  # the pipeline; the platform spec follows
    return spec["deploymentSpec"]["executors"][executor]["container"]["command"]


def test_sigterm_to_the_compiled_train_command_reaches_python_and_its_cleanup_runs(tmp_path: Path):
    shell, flags, script, _source = compiled_command("exec-train-detector")  # the body's source comes last
    executor_input = {"inputs": {"parameterValues": {"folder": str(tmp_path)}},
                      "outputs": {"outputFile": str(tmp_path / "output.json")}}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    step = subprocess.Popen([shell, flags, script, COMPONENT, "--executor_input", json.dumps(executor_input),
                             "--function_to_execute", "waits_for_eviction"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = tmp_path / "ready"
    try:
        wait_until(ready.exists, step, "the step to start", timeout=120)
        python = int(ready.read_text())
        assert python == step.pid, "the shell KFP starts stays between the launcher and Python: it must exec"
        step.send_signal(signal.SIGTERM)  # as the launcher's process would receive it
        _, output = step.communicate(timeout=60)
    finally:
        if step.poll() is None:
            step.kill()
    assert not (tmp_path / "staging").exists(), output
    assert output.rstrip().splitlines()[-1].endswith("Evicted: the pod was evicted (SIGTERM)"), output
    assert step.returncode != 0
