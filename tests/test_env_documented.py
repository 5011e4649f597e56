"""Every environment variable the code reads is a registered, documented setting.

The source (converters/, common/, worker/, backend/) is scanned for environment reads:
``os.environ[...]``, ``os.environ.get``, ``os.getenv``, ``"X" in os.environ``,
``environ.get``, ``settings.get("X")``, ``setting("X")`` and ``Setting("X"``.
Each name must be in ``common.settings.SETTINGS`` (or be an alias there), and
every setting must be documented in .env.example, docs/configuration.md and the
README's table (between ``<!-- settings-table:start -->`` and ``-end -->``).
The reverse holds too: whatever .env.example documents is a setting, or a
variable docker/docker-compose.yml itself reads.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from common.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("converters", "common", "worker", "backend")
NAME = r"([A-Z][A-Z0-9_]*)"
Q = r"[\"']"
READ_PATTERNS = (
    # os.environ["X"] that is not an assignment target
    rf"\benviron\[\s*{Q}{NAME}{Q}\s*\](?!\s*=[^=])",
    rf"\benviron\.get\(\s*{Q}{NAME}{Q}",
    rf"\bos\.getenv\(\s*{Q}{NAME}{Q}",
    rf"{Q}{NAME}{Q}\s+(?:not\s+)?in\s+(?:os\.)?environ\b",
    rf"\bsettings\.get\(\s*{Q}{NAME}{Q}",
    rf"\bsetting\(\s*{Q}{NAME}{Q}",
    rf"\bSetting\(\s*{Q}{NAME}{Q}",
)
COMPOSE_CLI_VARIABLES = {"COMPOSE_PROFILES"}
"""Read by Docker Compose itself, not by the compose file."""

SETTING_NAMES = {s.name for s in SETTINGS}
ALIASES = {alias for s in SETTINGS for alias in s.aliases}


def _table_module():
    spec = importlib.util.spec_from_file_location(
        "settings_table", ROOT / "scripts" / "settings_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sources() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


def environment_reads() -> dict[str, set[str]]:
    """Variable name -> files reading it."""
    reads: dict[str, set[str]] = {}
    for path in _sources():
        text = path.read_text()
        for pattern in READ_PATTERNS:
            for name in re.findall(pattern, text):
                reads.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return reads


def env_example_variables() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(rf"^#?{NAME}=", text, re.MULTILINE))


def test_the_scanner_finds_reads_of_every_kind():
    sample = (
        'os.environ["A_ONE"]\nos.environ["NOT_READ"] = "x"\n'
        'os.environ.get("B_TWO")\nos.getenv("C_THREE", "")\n'
        '"D_FOUR" in os.environ\nsettings.get("E_FIVE")\nsetting("F_SIX")\n'
        'Setting(\n    "G_SEVEN",\n    str,\n'
    )
    found = {name for p in READ_PATTERNS for name in re.findall(p, sample)}
    assert found == {
        "A_ONE",
        "B_TWO",
        "C_THREE",
        "D_FOUR",
        "E_FIVE",
        "F_SIX",
        "G_SEVEN",
    }


def test_every_variable_the_code_reads_is_a_setting():
    reads = environment_reads()
    assert SETTING_NAMES <= set(reads), "the scan must see the registry itself"
    unregistered = {
        name: sorted(files)
        for name, files in reads.items()
        if name not in SETTING_NAMES | ALIASES
    }
    assert not unregistered, (
        f"environment variables read outside common/settings.py: {unregistered}; "
        "add a Setting for each and read it with common.settings.get()"
    )


def test_every_setting_is_used_somewhere_besides_the_registry():
    registry = ROOT / "common" / "settings.py"
    text = "\n".join(p.read_text() for p in _sources() if p != registry)
    unused = sorted(n for n in SETTING_NAMES if f'"{n}"' not in text)
    assert not unused, f"settings nothing reads: {unused}"


def test_env_example_documents_every_setting_and_alias():
    documented = env_example_variables()
    missing = sorted(SETTING_NAMES - documented)
    assert not missing, f"missing from .env.example: {missing}"
    text = (ROOT / ".env.example").read_text()
    for alias in ALIASES:
        assert re.search(rf"\b{alias}\b", text), f"alias {alias} not mentioned"


def test_env_example_documents_nothing_that_is_not_read():
    compose = (ROOT / "docker" / "docker-compose.yml").read_text()
    extra = env_example_variables() - SETTING_NAMES
    not_in_compose = sorted(
        name
        for name in extra
        if name not in COMPOSE_CLI_VARIABLES and not re.search(rf"\b{name}\b", compose)
    )
    assert not not_in_compose, (
        f".env.example documents variables neither rexlabel nor the compose file "
        f"reads: {not_in_compose}"
    )


def test_generated_blocks_are_current():
    table = _table_module()
    for name in (".env.example", "docs/configuration.md", "docker/docker-compose.yml"):
        assert table.stale(ROOT / name) is None


def test_readme_configuration_table_matches_the_settings():
    table = _table_module()
    readme = (ROOT / "README.md").read_text()
    block = table.current_block(readme, table.MD_START, table.MD_END)
    if block is None:
        pytest.skip(
            "README.md has no <!-- settings-table:start/end --> markers yet: paste "
            "the output of `python scripts/settings_table.py` between them"
        )
    rows = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", block, re.MULTILINE))
    assert rows == SETTING_NAMES, (
        f"README table: missing {sorted(SETTING_NAMES - rows)}, "
        f"unknown {sorted(rows - SETTING_NAMES)}"
    )
    assert block == table.markdown_table(), (
        "README table is stale: python scripts/settings_table.py --write README.md"
    )
