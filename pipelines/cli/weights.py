"""`pogona weights stage`: put pretrained base weights where runs on a store find them by default.

For clusters without internet and images built without baked weights: runs with no
`--weights` / `base_weights_uri` start from `<store>/weights/<model>.pt` when it is there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from components.training.weights import stage_weights


def _stage(args: argparse.Namespace) -> int:
    print(f"staged {args.file} -> {stage_weights(args.file, args.store)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `pogona weights` and its sub-command."""
    group = subparsers.add_parser("weights", help="stage pretrained base weights in an object store")
    commands = group.add_subparsers(dest="weights_command", required=True, metavar="SUBCOMMAND")
    stage = commands.add_parser("stage", help="check that FILE is a YOLO checkpoint and upload it to "
                                              "<store>/weights/<file name>, the default base weights of runs there")
    stage.add_argument("file", type=Path, help="a YOLO checkpoint named <model>.pt, e.g. yolo11s.pt")
    stage.add_argument("--store", required=True, help="the runs' object store root, e.g. s3://pogona")
    stage.set_defaults(handler=_stage)
