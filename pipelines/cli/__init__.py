"""The `pogona` command: thin doors onto the step functions in `components/` and the pipeline.

Each command group lives in its own module with a `register(subparsers)` function; errors a
user can act on (bad input, storage failures) end as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from components.errors import UserError
from components.storage import StorageError
from pipelines.cli import dataset, kfp_commands, pipeline_commands, reporting, training

COMMAND_GROUPS = (dataset, training, reporting, pipeline_commands, kfp_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pogona", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def _show_pogona_log() -> None:
    """pogona's own INFO lines (the batch plan, the image cache decision) on stderr, beside ultralytics' output."""
    log = logging.getLogger("pogona")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("pogona: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_pogona_log()
    try:
        return int(args.handler(args) or 0)
    except (UserError, StorageError) as exc:
        print(f"pogona {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pogona {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
