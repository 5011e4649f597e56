"""``rexlabel`` with a tiny random SAM installed, for the e2e tests.

Usage (what ``tests/e2e/conftest.py`` runs)::

    python -m tests.e2e.tiny_sam_rexlabel worker
    python -m tests.e2e.tiny_sam_rexlabel serve --port 9090

Real SAM checkpoints cannot be downloaded here, and a full-size SAM with random
weights takes about 13 s and 3.6 GB per image on a CPU. This runs the unchanged
``rexlabel`` command line after installing a worker runtime made of the engine
``REXLABEL_MODEL`` names (the normal loader) and ``worker.sam.build_test_sam()``
under the normal ``SamMasker``: every code path of the box/point -> mask ->
polygon/brush conversion runs, only the weights are random, so the masks'
shapes mean nothing and the tests assert only on their format and size.
"""

from __future__ import annotations

import sys


def install_tiny_sam_runtime() -> None:
    from worker.engines.registry import create_engine
    from worker.jobs import WorkerRuntime, install_runtime
    from worker.sam import SamMasker, build_test_sam

    install_runtime(
        WorkerRuntime(engine=create_engine(), masker=SamMasker(build_test_sam()))
    )


def main(argv: list[str]) -> int:
    install_tiny_sam_runtime()
    from backend.cli import main as rexlabel

    return rexlabel(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
