"""The `pogona` command: thin doors onto the step functions in `components/` and the pipeline.

Each command group lives in its own module with a `register(subparsers)` function; errors a
user can act on (bad input, storage failures) end as one line on stderr and exit code 2, which no
retry can fix. An eviction (SIGTERM) ends as one line and exit code 143, after the command's cleanup.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from components.errors import UserError
from components.log import show_logs
from components.runtime.eviction import Evicted, handle_sigterm
from components.storage import StorageError
from pipelines.cli import dataset, kfp_commands, pipeline_commands, reporting, training, weights
from pipelines.exits import ending

COMMAND_GROUPS = (dataset, weights, training, reporting, pipeline_commands, kfp_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pogona", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show_logs()
    handle_sigterm()
    try:
        return int(args.handler(args) or 0)
    except (UserError, StorageError, Evicted) as exc:
        line, code = ending(args.command, exc)
        print(line, file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"pogona {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
