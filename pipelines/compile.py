"""Compile the pipeline to YAML, and check the committed YAML has not drifted from the code."""

from __future__ import annotations

import difflib
import tempfile
from pathlib import Path

from kfp import compiler

from pipelines.kfp_backends import OLDEST, Backend
from pipelines.kfp_defaults import DEFAULT_PACKAGE as COMMITTED_PIPELINE
from pipelines.pipeline import Placement, build_pipeline


def compile_pipeline(output: Path, placement: Placement, backend: Backend = OLDEST) -> Path:
    """Compile for `placement`, loadable on KFP backend `backend` and newer (the committed YAML: the oldest)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(placement, backend), str(output))
    return output


def drift(committed: Path, placement: Placement, backend: Backend = OLDEST) -> list[str]:
    """Unified diff between the committed YAML and a fresh compile; empty when they agree."""
    with tempfile.TemporaryDirectory() as work:
        fresh = compile_pipeline(Path(work) / "pipeline.yaml", placement, backend).read_text().splitlines()
    current = committed.read_text().splitlines() if committed.exists() else []
    return list(difflib.unified_diff(current, fresh, str(committed), "compiled from code", lineterm=""))
