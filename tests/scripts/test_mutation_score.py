"""scripts/mutation_score.py, the verdict of `make mutation`, read over mutmut results written in a tmp tree."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("mutation_score", REPO / "scripts" / "mutation_score.py")
mutation_score = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mutation_score)

KILLED, SURVIVED, NO_TESTS, NOT_RUN = 1, 0, 33, None  # mutmut's exit codes for its verdicts


def _tree(tmp_path: Path, exit_codes: dict[int, int | None], equivalent: tuple[int, ...] = ()) -> Path:
    """A project with one rule module, `rules/promote.py`, mutmut's results for it and the benchmarks' table."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["rules/promote.py"]\n')
    meta = tmp_path / "mutants" / "rules" / "promote.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": {f"rules.promote.x_decide__mutmut_{number}": code
                                                     for number, code in exit_codes.items()}}))
    rows = "".join(f"| `rules.promote.x_decide__mutmut_{number}` | the same bytes |\n" for number in equivalent)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks.md").write_text(
        f"# Benchmarks\n\n## Mutation\n\n| mutant | why |\n|---|---|\n{rows}\n## Next\n")
    return tmp_path


def _score(tree: Path, capsys: pytest.CaptureFixture, rules: tuple[str, ...] = ()) -> tuple[int, str]:
    status = mutation_score.main(list(rules), tree)
    return status, capsys.readouterr().out.splitlines()[1]


def test_nine_killed_of_ten_pass_and_eight_fail(tmp_path: Path, capsys: pytest.CaptureFixture):
    nine = _tree(tmp_path / "nine", {**{n: KILLED for n in range(1, 10)}, 10: SURVIVED})
    assert _score(nine, capsys) == (0, f"{'rules/promote.py':36} {10:>7} {0:>6} {0:>6} {9:>6} {'90.0%':>6}  "
                                       "x_decide__mutmut_10 (survived)")
    eight = _tree(tmp_path / "eight", {**{n: KILLED for n in range(1, 9)}, 9: SURVIVED, 10: NO_TESTS})
    status, line = _score(eight, capsys)
    assert status == 1 and "80.0%" in line and "x_decide__mutmut_10 (no tests)" in line


def test_a_survivor_listed_as_equivalent_leaves_the_score(tmp_path: Path, capsys: pytest.CaptureFixture):
    tree = _tree(tmp_path, {**{n: KILLED for n in range(1, 9)}, 9: SURVIVED, 10: SURVIVED}, equivalent=(9, 10))
    status, line = _score(tree, capsys)
    assert status == 0 and line.split()[1:6] == ["10", "0", "2", "8", "100.0%"]


def test_a_mutant_not_run_yet_fails_the_run(tmp_path: Path, capsys: pytest.CaptureFixture):
    status, line = _score(_tree(tmp_path, {1: KILLED, 2: KILLED, 3: NOT_RUN}), capsys)
    assert status == 1 and line.split()[1:6] == ["3", "1", "0", "2", "100.0%"]


def test_only_the_mutants_of_the_rules_count(tmp_path: Path, capsys: pytest.CaptureFixture):
    """A module's functions outside the rules are mutated too, but neither run nor scored."""
    tree = _tree(tmp_path, {1: KILLED, 2: KILLED, 3: NOT_RUN})
    status, line = _score(tree, capsys, rules=("rules.promote.x_decide__mutmut_[12]",))
    assert status == 0 and line.split()[1:6] == ["2", "0", "0", "2", "100.0%"]
