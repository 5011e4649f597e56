"""``rexlabel config``: the effective configuration, secrets masked.

Usage::

    rexlabel config          # a table: variable, value, where it came from
    rexlabel config --json   # {"VARIABLE": value, ...}

Every variable in ``common.settings.SETTINGS`` is listed with the value the
backend and worker would use, and whether it came from the environment (or one
of its aliases) or is the default. Secrets show as ``***``. A value rexlabel
cannot use is reported with the variable's name and the command exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EXIT_BAD_SETTING = 2
"""Exit code for an unusable value: the same as a command-line usage error."""


@dataclass(frozen=True)
class EffectiveSetting:
    """One row of ``rexlabel config``: ``error`` is set when the value is bad."""

    name: str
    value: Any
    source: str
    error: str | None = None


def effective_settings(
    environ: Mapping[str, str] | None = None,
) -> list[EffectiveSetting]:
    """Every setting with its masked value and source (``env NAME`` or ``default``)."""
    from common import settings

    environ = os.environ if environ is None else environ
    rows: list[EffectiveSetting] = []
    for item in settings.SETTINGS:
        key = next((k for k in (item.name, *item.aliases) if k in environ), None)
        source = f"env {key}" if key else "default"
        try:
            value = item.read(environ)
        except settings.SettingsError as exc:
            error = str(exc)
            if item.secret:  # the message quotes the value: never print a secret
                error = f"{item.name} has a value rexlabel cannot use (hidden)"
            rows.append(EffectiveSetting(item.name, None, source, error))
            continue
        masked = settings.masked({item.name: value})[item.name]
        rows.append(EffectiveSetting(item.name, masked, source))
    return rows


def _shown(row: EffectiveSetting) -> str:
    if row.error:
        return "<invalid>"
    if row.value == "":
        return '""'
    return str(row.value)


def format_table(rows: list[EffectiveSetting]) -> str:
    """Aligned columns: VARIABLE, VALUE, SOURCE."""
    table = [("VARIABLE", "VALUE", "SOURCE")]
    table += [(row.name, _shown(row), row.source) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(2)]
    return "\n".join(
        f"{name:<{widths[0]}}  {value:<{widths[1]}}  {source}".rstrip()
        for name, value, source in table
    )


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config",
        help="Print the effective configuration (secrets masked).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json", action="store_true", help="Print a JSON object instead of a table."
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = effective_settings()
    if args.json:
        values = {row.name: row.value for row in rows if not row.error}
        print(json.dumps(values, indent=2))
    else:
        print(format_table(rows))
    errors = [row.error for row in rows if row.error]
    for error in errors:
        print(f"rexlabel config: {error}", file=sys.stderr)
    return EXIT_BAD_SETTING if errors else 0
