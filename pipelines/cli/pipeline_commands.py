"""`pogona` commands: placeholder module, filled in by its owner."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to the `pogona` parser."""
