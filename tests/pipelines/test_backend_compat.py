"""The compiled pipeline loads on every supported KFP backend, checked as each release's API server and
driver parse it: strictly, against that release's own protos (backend_protos.py, kfp_protos/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipelines.compile import COMMITTED_PIPELINE, compile_pipeline
from pipelines.kfp_backends import NEWEST, OLDEST, Backend, package_needs
from pipelines.pipeline import Placement
from backend_protos import RELEASES, rejections

README = Path(__file__).resolve().parents[2] / "README.md"
TARGETS = (OLDEST, Backend(2, 15), NEWEST)  # the --kfp-version values that change what is compiled


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[Backend, Path]:
    folder = tmp_path_factory.mktemp("targets")
    return {target: compile_pipeline(folder / f"{target}.yaml", Placement.for_profile("gpu"), target)
            for target in TARGETS}


def test_the_vendored_protos_span_the_supported_backends():
    assert RELEASES[0] == OLDEST and RELEASES[-1] == NEWEST


@pytest.mark.parametrize("backend", RELEASES, ids=str)
def test_the_committed_pipeline_loads_on_every_supported_backend(backend):
    assert rejections(COMMITTED_PIPELINE, backend) == []


@pytest.mark.parametrize("target", TARGETS, ids=str)
def test_a_pipeline_compiled_for_a_backend_loads_there_and_after_and_says_what_it_needs(compiled, target):
    loads = [backend for backend in RELEASES if not rejections(compiled[target], backend)]
    assert loads == [backend for backend in RELEASES if backend >= target]
    _, platform = yaml.safe_load_all(compiled[target].read_text())
    assert package_needs(platform) == target  # what `pogona upload --package` checks against the server


def _cell(errors: list[str]) -> str:
    return "loads" if not errors else "rejected: " + ", ".join(
        "`{}.{}`".format(*re.fullmatch(r"(\w+) has no field named (\w+)", error).groups()) for error in errors)


def _readme_table() -> dict[str, list[str]]:
    """README's compatibility table: {backend release: cells, one per --kfp-version column}."""
    text = README.read_text()
    table = text[text.index("<!-- measured by tests/pipelines/test_backend_compat.py -->"):].split("\n\n")[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[1:]]
    header, body = rows[0], rows[2:]
    assert header[2:] == [f"`--kfp-version {target}`" for target in TARGETS]
    return {row[0]: row[2:] for row in body}


def test_the_readme_compatibility_table_is_what_the_backends_do(compiled):
    measured = {f"{backend}.0": [_cell(rejections(compiled[target], backend)) for target in TARGETS]
                for backend in RELEASES}
    assert _readme_table() == measured
