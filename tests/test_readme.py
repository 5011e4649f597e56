"""The README opens with the two commands a newcomer pastes, and CI runs the second."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_code_block(text: str) -> list[str]:
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_install_and_test_commands():
    commands = _first_code_block((ROOT / "README.md").read_text())
    assert len(commands) == 2, commands
    install, test = commands
    assert "pip install" in install and "rexlabel serve" in install
    assert test == "bash scripts/test.sh"


def test_ci_runs_the_readme_test_command():
    test_command = _first_code_block((ROOT / "README.md").read_text())[1]
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert test_command in ci_lines


def test_readme_pictures_exist():
    """Every picture the README shows is in the repository."""
    text = (ROOT / "README.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", text)
    assert len(pictures) >= 4, pictures  # draw, the evaluate report, Label Studio x3
    missing = [p for p in pictures if not (ROOT / p).is_file()]
    assert missing == [], missing
