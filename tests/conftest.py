"""Session fixtures shared by every test package.

- ``tiny_model_dir``: the tiny Qwen2.5-VL with random weights (plumbing tests).
- ``trained_model_dir``: the same model trained to find one coloured shape on
  112x112 synthetic images, and to answer ``None`` on an image without any
  shape (tests that assert on what the model found).
- ``readme_model_dir``: the tiny model trained on drawn stand-ins for the
  README configs' labels (``worker.training.readme_model``): prompts of one
  to three phrases and visual prompts, for the browser and end-to-end tests
  that run the README's configs as written (about 18 minutes to build on 2
  cores, so while it is not cached the tests using it get
  ``README_MODEL_TIMEOUT_S``).
- ``tiny_engine`` / ``trained_engine``: a ``TransformersEngine`` on each.
- from :mod:`tests.e2e.fixtures`: ``label_studio``, ``rexlabel_backend``,
  ``rexlabel_backend_queue`` and ``readme_backend`` (a real Label Studio and
  backends, for tests/e2e and tests/ui).

Model directories are built once and cached by a hash of the source files that
make them, in ``$REXLABEL_TEST_CACHE`` or ``<repo>/.cache/test-models``
(gitignored), so a CI run trains once and later runs reuse the result. Builds
are safe with several pytest processes: one builds under a file lock, into a
temporary directory that is renamed into place when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ("tests.e2e.fixtures",)
"""A real Label Studio and rexlabel backends, one of each per session, for
tests/e2e and tests/ui alike (a fixture in a package's conftest would start
one per package)."""

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
"""The spec/vectors folder beside the checkout (never copied into the repo)."""

TRAINED_MODEL_STEPS = 1300
"""Training steps of ``trained_model_dir`` (seed 0, batch 32). A quarter of the
questions are about an image without a shape (answer ``None``, worker.training.synthetic
ABSENT_FRACTION), so 1300 steps give the localisation about the 1000 steps of
present shapes it had before (600 gave mean IoU 0.70 / AP50 0.84, under the bar
of tests/worker/training/test_trainer.py; 1000 gave 0.82 / 0.94). Measured: mean IoU
0.85 / AP50 1.0 / phrase accuracy 1.0, None on 100% of 100 shapeless images,
in 5 minutes on 2 cores (the old 1000 steps: 4)."""

_TINY_SOURCES = (
    "worker/training/tiny_model.py",
    "converters/keypoint_sets.py",
    "converters/grammar.py",
)
_TRAINED_SOURCES = (
    *_TINY_SOURCES,
    "worker/training/trainer.py",
    "worker/training/synthetic.py",
    "converters/answer.py",
    "converters/prompts.py",
    "converters/geometry.py",
    "converters/tasks.py",
    "converters/prediction.py",
    "converters/parser",
)
"""What the models are built from: files, or folders of ``.py`` files (the
answers' grammar, prompts and parser, the drawings, the trainer)."""
_README_SOURCES = (
    *_TRAINED_SOURCES,
    "worker/training/readme_model.py",
    "worker/training/readme_tasks.py",
    "worker/training/objects.py",
)

README_MODEL_TIMEOUT_S = 3600
"""pytest-timeout for a test that uses ``readme_model_dir`` while it is not
cached: the first one builds it (about 18 minutes on 2 cores, past the
suite's 1200 s per test)."""


def test_cache_dir() -> Path:
    path = os.environ.get("REXLABEL_TEST_CACHE") or REPO_ROOT / ".cache" / "test-models"
    return Path(path)


test_cache_dir.__test__ = False  # a helper, not a test


def _source_hash(sources: tuple[str, ...], extra: str) -> str:
    import PIL
    import torch
    import transformers

    versions = f"transformers={transformers.__version__}|torch={torch.__version__}"
    digest = hashlib.sha256(f"{extra}|{versions}|pillow={PIL.__version__}".encode())
    for name in sources:
        path = REPO_ROOT / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(REPO_ROOT)).encode())
            digest.update(file.read_bytes() if file.exists() else b"<missing>")
    return digest.hexdigest()[:16]


def cached_model_dir(
    name: str, sources: tuple[str, ...], build: Callable[[Path], None]
):
    """The directory ``build`` writes, built once per source hash (locked)."""
    cache = test_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{name}-{_source_hash(sources, name)}"
    if (target / "config.json").exists():
        return target
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (target / "config.json").exists():
                return target
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
            try:
                build(tmp)
                os.rename(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A tiny Qwen2.5-VL (Rex-Omni vocabulary) with random weights."""
    from worker.training.tiny_model import make_test_model

    return cached_model_dir(
        "tiny-random", _TINY_SOURCES, lambda out: make_test_model(out, seed=0)
    )


@pytest.fixture(scope="session")
def trained_model_dir() -> Path:
    """The tiny model trained on synthetic single-shape detection images (a
    quarter of the questions about an image without a shape, answered
    ``None``)."""
    from worker.training.tiny_model import make_test_model

    return cached_model_dir(
        f"tiny-detection-{TRAINED_MODEL_STEPS}",
        _TRAINED_SOURCES,
        lambda out: make_test_model(
            out, train_steps=TRAINED_MODEL_STEPS, task="detection", seed=0
        ),
    )


@pytest.fixture(scope="session")
def readme_model_dir() -> Path:
    """The README model (``worker.training.readme_model``, its recipe)."""
    from worker.training.readme_model import make_readme_model

    return cached_model_dir("readme-model", _README_SOURCES, make_readme_model)


def _readme_model_cached() -> bool:
    name = f"readme-model-{_source_hash(_README_SOURCES, 'readme-model')}"
    return (test_cache_dir() / name / "config.json").exists()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """While the README model is not cached, the tests that use it (directly
    or through a fixture) get README_MODEL_TIMEOUT_S: the first of them
    builds it. Once cached, they keep the suite's timeout."""
    users = [i for i in items if "readme_model_dir" in getattr(i, "fixturenames", ())]
    if users and not _readme_model_cached():
        for item in users:
            item.add_marker(pytest.mark.timeout(README_MODEL_TIMEOUT_S))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    """A TransformersEngine on the random tiny model, on the CPU."""
    from worker.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(tiny_model_dir), device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def trained_engine(trained_model_dir):
    """A TransformersEngine on the trained tiny model, on the CPU."""
    from worker.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(trained_model_dir), device="cpu")
    yield engine
    engine.close()
