"""`pogona --help` and every command that does not talk to KFP start without kfp, matplotlib or torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ["kfp", "matplotlib", "torch", "ultralytics"]
# A fresh interpreter builds the parser, shows the command's help, imports the component modules
# the command calls first, and prints which heavy packages got imported on the way.
PROBE = """
import contextlib, io, json, sys
from pipelines.cli import main
command, modules, heavy = json.loads(sys.argv[1])
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(command + ["--help"])
for module in modules:
    __import__(module)
print(json.dumps([name for name in heavy if name in sys.modules]))
"""


@pytest.mark.parametrize("command, modules", [
    ([], []), (["dataset", "validate"], ["components.data.validate"]), (["dataset", "sync"], ["components.data.sync"]),
    (["sanity"], []), (["train"], []), (["evaluate"], []), (["export"], []),
    (["report"], ["components.reporting.report"]), (["publish"], ["components.publishing.publish"]),
    (["weights", "stage"], ["components.training.weights"]),
], ids=lambda value: " ".join(value) or "-")
def test_commands_that_do_not_talk_to_kfp_start_without_heavy_imports(command, modules):
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps([command, modules, HEAVY])], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
