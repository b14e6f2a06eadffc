"""Command-line flags made from configuration dataclasses: a field's name, type and help become a flag."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any, Iterable, get_type_hints

from components.config import user_settings


def add_field_flags(parser: argparse.ArgumentParser, config: type, names: Iterable[str], unset_means: str = "") -> None:
    """One typed `--field-name` flag per named field of `config`, with the field's help. A flag defaults to the
    field's default; with `unset_means`, to None, and its help says what leaving it out means instead."""
    types = get_type_hints(config)
    by_name = {item.name: item for item in fields(config)}
    for name in names:
        item, kind = by_name[name], types[name]
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, metavar=kind.__name__.upper(),
                            default=None if unset_means else item.default,
                            help=f"{item.metadata['help'].replace('%', '%%')} (default: {unset_means or '%(default)s'})")


def config_from_flags(args: argparse.Namespace, config: type, **overrides: Any) -> Any:
    """`config` from the flags `add_field_flags` made for its user settings, then `overrides`."""
    return config(**{**{name: getattr(args, name) for name in user_settings(config)}, **overrides})
