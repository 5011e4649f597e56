"""Shared fixtures for the converters tests: the Rex-Omni conformance vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

VECTORS_FILE = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "vectors"
    / "rexomni_vectors.json"
)
"""The shared conformance vectors live beside the checkout, never inside it."""


def load_vectors() -> dict | None:
    """The vectors file as a dict, or None when ../shared is not beside the repo."""
    if not VECTORS_FILE.is_file():
        return None
    return json.loads(VECTORS_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def rex_vectors() -> dict:
    vectors = load_vectors()
    if vectors is None:
        pytest.skip(
            f"conformance vectors not found at {VECTORS_FILE} "
            "(the shared/ folder must sit beside the repository checkout)"
        )
    return vectors


def vector_params(section: str) -> list:
    """pytest params (one per vector, id = its id) for parametrised tests.

    Without the vectors file there is one param that skips with the reason.
    """
    vectors = load_vectors()
    if vectors is None:
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(
                    reason=f"conformance vectors not found at {VECTORS_FILE}"
                ),
                id=f"{section}-missing",
            )
        ]
    return [
        pytest.param(v, id=str(v.get("id", i))) for i, v in enumerate(vectors[section])
    ]
