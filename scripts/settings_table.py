#!/usr/bin/env python3
"""Write the configuration docs from ``common.settings.SETTINGS`` (the one registry).

    python scripts/settings_table.py                 # the Markdown table (README)
    python scripts/settings_table.py --env           # the .env.example settings block
    python scripts/settings_table.py --write FILE..  # refresh the blocks in FILEs
    python scripts/settings_table.py --check FILE..  # exit 1 if a block is stale

    # after adding a Setting:
    python scripts/settings_table.py --write README.md docs/configuration.md \
        .env.example docker/docker-compose.yml

A Markdown file holds the table between ``<!-- settings-table:start -->`` and
``<!-- settings-table:end -->``; ``.env.example`` and the compose file hold
their block between ``# >>> settings-table:start`` and ``# <<< settings-table:end``.
In the compose file the block is the environment every rexlabel service gets:
one line per setting, ``NAME:`` (passed through when set, else unset) or the
value the stack needs (``NAME: ${NAME:-value}``), which is kept on rewrite and
shown next to the default in the other files.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.settings import SETTINGS, Setting  # noqa: E402 - after the path fix

COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
MD_START, MD_END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
ENV_START, ENV_END = "# >>> settings-table:start", "# <<< settings-table:end"
ENV_WIDTH = 88
"""Comment lines in .env.example wrap here, like the code."""


def compose_values(text: str | None = None) -> dict[str, str]:
    """``NAME -> value`` for settings the compose file sets (``${NAME:-value}``),
    and ``NAME -> ${NAME}`` for those it requires from .env (``${NAME:?why}``)."""
    if text is None:
        text = COMPOSE_FILE.read_text() if COMPOSE_FILE.exists() else ""
    values = {
        name: f"${{{name}}}"
        for name in re.findall(
            r"^\s+([A-Z][A-Z0-9_]*): \$\{\1:\?.*\}\s*$", text, re.MULTILINE
        )
    }
    for name, value in re.findall(
        r"^\s+([A-Z][A-Z0-9_]*): \$\{\1:-(.*)\}\s*$", text, re.MULTILINE
    ):
        # a nested default (${A:-${B:-x}}) shows its innermost value
        while (nested := re.fullmatch(r"\$\{[A-Z0-9_]+:-(.*)\}", value)) is not None:
            value = nested.group(1)
        values[name] = value
    return values


def _default(setting: Setting) -> str:
    if setting.type is bool:
        return "true" if setting.default else "false"
    return str(setting.default)


def _meaning(setting: Setting) -> str:
    parts = [setting.reason]
    if setting.choices:
        parts.append(f"One of: {', '.join(setting.choices)}.")
    if setting.aliases:
        parts.append(f"Also read as {', '.join(setting.aliases)}.")
    if setting.secret:
        parts.append("Secret: masked in `rexlabel config` and logs.")
    return " ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(compose: dict[str, str] | None = None) -> str:
    """One row per setting: variable, default, Docker Compose value, meaning."""
    compose = compose_values() if compose is None else compose
    lines = [
        "| Variable | Default | Compose | Meaning |",
        "|---|---|---|---|",
    ]
    for setting in SETTINGS:
        default = _default(setting)
        in_compose = compose.get(setting.name)
        lines.append(
            "| `{}` | {} | {} | {} |".format(
                setting.name,
                f"`{default}`" if default else "(empty)",
                f"`{in_compose}`" if in_compose else "",
                _cell(_meaning(setting)),
            )
        )
    return "\n".join(lines)


def env_block(compose: dict[str, str] | None = None) -> str:
    """Every setting as a commented assignment of its default, with its meaning."""
    compose = compose_values() if compose is None else compose
    out = []
    for setting in SETTINGS:
        out.append("#")
        wrapped = textwrap.wrap(
            f"{setting.name}: {_meaning(setting).replace('`', '')}",
            width=ENV_WIDTH - 2,
        )
        out.extend(f"# {line}" for line in wrapped)
        if setting.name in compose:
            out.append(f"#   (docker-compose.yml uses {compose[setting.name]})")
        out.append(f"#{setting.name}={_default(setting)}")
    return "\n".join(out)


def compose_block(current: str) -> str:
    """The compose environment block: every setting, keeping the values given in
    ``current`` (the block now in the file) for the settings that have one."""
    indent = re.match(r"\s*", current).group(0) if current.strip() else "  "
    given = dict(re.findall(r"^\s*([A-Z][A-Z0-9_]*):[ \t]*(.*?)\s*$", current, re.M))
    lines = []
    for setting in SETTINGS:
        value = given.get(setting.name, "")
        lines.append(f"{indent}{setting.name}:{' ' + value if value else ''}")
    return "\n".join(lines)


def _markers(path: Path, text: str) -> tuple[str, str, str]:
    if path.suffix == ".md":
        return MD_START, MD_END, markdown_table()
    if path.suffix in (".yml", ".yaml"):
        found = current_block(text, ENV_START, ENV_END) or ""
        return ENV_START, ENV_END, compose_block(found)
    return ENV_START, ENV_END, env_block()


def current_block(text: str, start: str, end: str) -> str | None:
    """The text between the markers (without them), or None when absent."""
    if start not in text or end not in text:
        return None
    return text.split(start, 1)[1].split(end, 1)[0].lstrip("\n").rstrip()


def refresh(path: Path) -> bool:
    """Rewrite the block in ``path``; True when it changed."""
    text = path.read_text()
    start, end, block = _markers(path, text)
    if current_block(text, start, end) is None:
        raise SystemExit(f"{path}: no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    indent = head[len(head.rstrip(" ")) :]  # the end marker lines up with the start
    new = f"{head}{start}\n{block}\n{indent}{end}{tail}"
    path.write_text(new)
    return new != text


def stale(path: Path) -> str | None:
    """Why ``path``'s block differs from SETTINGS, or None when it is current."""
    text = path.read_text()
    start, end, block = _markers(path, text)
    found = current_block(text, start, end)
    if found is None:
        return f"{path}: no {start} ... {end} markers"
    if found != block:
        return f"{path}: settings block is stale; run scripts/settings_table.py --write"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", action="store_true", help="print the .env block")
    parser.add_argument("--write", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--check", nargs="+", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    if args.write:
        for path in args.write:
            print(f"{path}: {'updated' if refresh(path) else 'unchanged'}")
        return 0
    if args.check:
        problems = [p for p in map(stale, args.check) if p]
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    print(env_block() if args.env else markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
