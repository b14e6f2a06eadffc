"""An evicted step pod: the SIGTERM sent to the compiled component's command reaches Python, whose cleanup runs;
the preStop hook the manifests give KFP pods signals that Python alone and waits for it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from processes import REPO, wait_until

COMPILED = REPO / "pipelines" / "compiled" / "pogona-train.yaml"
WORKFLOW_DEFAULTS = REPO / "manifests" / "kfp" / "training-grace" / "workflow-controller-configmap.yaml"

# A component module as KFP ships one: a step that installs pogona's handler, as every step door does, and waits.
COMPONENT = textwrap.dedent("""
    from kfp import dsl

    def waits_for_eviction(folder: str):
        import os
        import threading
        import time
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
            (Path(folder) / "cleaning").touch()
            while (Path(folder) / "hold").exists() and not (Path(folder) / "release").exists():
                time.sleep(0.01)  # a cleanup that takes its time, until the test lets it end
""")


def compiled_command(executor: str) -> list[str]:
    spec = next(yaml.safe_load_all(COMPILED.read_text()))  # the pipeline; the platform spec follows
    return spec["deploymentSpec"]["executors"][executor]["container"]["command"]


def step_command(folder: Path) -> list[str]:
    """The compiled train task's command, running `COMPONENT` as KFP's launcher would start it."""
    shell, flags, script, _source = compiled_command("exec-train-detector")  # the body's source comes last
    executor_input = {"inputs": {"parameterValues": {"folder": str(folder)}},
                      "outputs": {"outputFile": str(folder / "output.json")}}
    return [shell, flags, script, COMPONENT, "--executor_input", json.dumps(executor_input),
            "--function_to_execute", "waits_for_eviction"]


def step_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(REPO)}


def test_sigterm_to_the_compiled_train_command_reaches_python_and_its_cleanup_runs(tmp_path: Path):
    step = subprocess.Popen(step_command(tmp_path), cwd=tmp_path, env=step_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
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


# Runs as the first process of a PID namespace of its own, as in a container, so that the hook sees this step
# and a bystander (standing for KFP's launcher, which must not be signalled) and no process of the machine.
POD = textwrap.dedent("""
    import json, subprocess, sys
    from pathlib import Path

    spec = json.loads(Path(sys.argv[1]).read_text())
    folder = Path(spec["folder"])
    step = subprocess.Popen(spec["step"], cwd=folder, env=spec["env"], stderr=subprocess.PIPE, text=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    while not (folder / "ready").exists() and step.poll() is None:
        subprocess.run(["sleep", "0.02"])
    hook = subprocess.Popen(spec["hook"])
    while not (folder / "cleaning").exists() and step.poll() is None:
        subprocess.run(["sleep", "0.02"])
    hook_waited_for_the_cleanup = hook.poll() is None
    (folder / "release").touch()
    _, stderr = step.communicate(timeout=60)  # reaps the step, as the launcher does
    result = {"hook": hook.wait(timeout=60), "step": step.returncode, "stderr": stderr,
              "hook_waited_for_the_cleanup": hook_waited_for_the_cleanup, "bystander_alive": bystander.poll() is None}
    bystander.kill()
    (folder / "result.json").write_text(json.dumps(result))
""")


def pre_stop_hook() -> list[str]:
    configmap = yaml.safe_load(WORKFLOW_DEFAULTS.read_text())
    patch = yaml.safe_load(yaml.safe_load(configmap["data"]["workflowDefaults"])["spec"]["podSpecPatch"])
    main = next(container for container in patch["containers"] if container["name"] == "main")
    return main["lifecycle"]["preStop"]["exec"]["command"]


def test_the_pre_stop_hook_signals_the_steps_python_alone_and_returns_once_it_cleaned_up(tmp_path: Path):
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rpf", "--mount-proc", "true"]).returncode != 0:
        pytest.skip("needs unshare and user namespaces, to give the hook a process table of its own")
    (tmp_path / "hold").touch()
    spec = tmp_path / "pod.json"
    spec.write_text(json.dumps({"folder": str(tmp_path), "step": step_command(tmp_path), "env": step_env(),
                                "hook": pre_stop_hook()}))
    subprocess.run([unshare, "-rpf", "--mount-proc", sys.executable, "-c", POD, str(spec)], timeout=120, check=True)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["hook"] == 0 and result["hook_waited_for_the_cleanup"] and result["bystander_alive"], result
    assert result["stderr"].rstrip().endswith("Evicted: the pod was evicted (SIGTERM)"), result["stderr"]
    assert not (tmp_path / "staging").exists()
