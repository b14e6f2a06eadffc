"""Print the mutation score of each rule module after `mutmut run` (`make mutation`), and fail below the bar.

Arguments: the mutant-name globs `mutmut run` was given (the Makefile's MUTATION_RULES); only mutants matching
one count, all of a module's when none is given. The score counts the mutants that change behaviour: a survivor
the "Mutation" section of docs/benchmarks.md lists as equivalent (its name in the first column, the reason beside
it) is left out; every other survivor, a mutant no test reaches included, counts against its module. A module
scoring below 90% fails the run, and so does one with mutants not run yet.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
import tomllib
from pathlib import Path

from mutmut.stats import status_by_exit_code

REPO = Path(__file__).resolve().parents[1]
BAR = 0.90
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}  # a timeout: the mutant made a test hang
EQUIVALENT_ROW = re.compile(r"^\| `(?P<name>[\w.]+__mutmut_\d+)` \|")


def equivalent_mutants(benchmarks: Path) -> set[str]:
    """Mutant names in the table rows of the Mutation section of docs/benchmarks.md."""
    section = benchmarks.read_text().split("\n## Mutation\n", 1)
    lines = section[1].split("\n## ", 1)[0].splitlines() if len(section) == 2 else []
    return {match["name"] for line in lines if (match := EQUIVALENT_ROW.match(line))}


def module_statuses(repo: Path, source: str, rules: list[str]) -> dict[str, str]:
    """mutmut's verdict on each mutant of one source file that a rule glob matches, by mutant name."""
    meta = repo / "mutants" / f"{source}.meta"
    if not meta.is_file():
        raise SystemExit(f"{meta}: no mutmut results for {source}; run `mutmut run` first")
    exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in exit_codes.items()
            if not rules or any(fnmatch.fnmatch(name, rule) for rule in rules)}


def main(rules: list[str], repo: Path = REPO) -> int:
    sources = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["mutmut"]["source_paths"]
    equivalent = equivalent_mutants(repo / "docs" / "benchmarks.md")
    failed = False
    print(f"{'module':36} {'mutants':>7} {'unrun':>6} {'equiv.':>6} {'killed':>6} {'score':>6}  survivors")
    for source in sources:
        statuses = module_statuses(repo, source, rules)
        unrun = sum(status == "not checked" for status in statuses.values())
        counted = {name: status for name, status in statuses.items()
                   if name not in equivalent and status != "not checked"}
        killed = sum(status in DETECTED for status in counted.values())
        survivors = sorted(name for name, status in counted.items() if status not in DETECTED)
        score = killed / len(counted) if counted else 1.0
        failed |= score < BAR or unrun > 0
        listed = ", ".join(f"{name.rsplit('.', 1)[1]} ({counted[name]})" for name in survivors) or "-"
        print(f"{source:36} {len(statuses):>7} {unrun:>6} {len(statuses) - len(counted) - unrun:>6} {killed:>6} "
              f"{score:>6.1%}  {listed}")
    if failed:
        print(f"a module scores below {BAR:.0%} or has mutants not run yet: run `mutmut run` to the end, kill the "
              "survivors or list the equivalent ones in docs/benchmarks.md", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
