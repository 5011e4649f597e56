"""The CPU vLLM venv (``.venv-vllm``, built by scripts/setup-vllm-venv.sh) for tests.

- :data:`VLLM_PYTHON` / :data:`needs_vllm_venv`: skip with a clear reason when
  the venv is absent.
- :func:`vllm_env`: the environment vLLM needs on this CPU machine.
- :class:`VLLMServer`: ``vllm.entrypoints.openai.api_server`` on 127.0.0.1,
  polled on ``/health`` with a deadline, killed (process group) on exit;
  :class:`TransformersServer`: ``transformers serve`` from the same venv.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import ClassVar

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_VENV = Path(os.environ.get("REXLABEL_VLLM_VENV", REPO_ROOT / ".venv-vllm"))
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
SERVER_START_TIMEOUT_S = 420.0
"""Ready after ~35 s on an idle 2-core machine; several times that under load."""
HEALTH_POLL_S = 1.0
"""Seconds between /health polls while the server starts."""
TINY_MAX_MODEL_LEN = 1024
"""The tiny model's prompts are ~70 tokens; a small KV cache starts faster."""
HELD_OUT = 3
"""Held-out synthetic images per slow test."""
MAX_NEW_TOKENS = 48
"""The trained model's answers are ~12 tokens; this bounds a wrong one."""
GRAMMAR_GROUP = (
    r"^<\|object_ref_start\|>[^<]+<\|object_ref_end\|><\|box_start\|>"
    r"(<\d{1,3}>){4}<\|box_end\|>$"
)
"""One phrase with one box: what the trained tiny model answers."""


VLLM_VENV_MISSING = (
    f"{VLLM_VENV} is absent: run scripts/setup-vllm-venv.sh to build the CPU vLLM "
    "venv (about 3 minutes, 3.5 GB)"
)
needs_vllm_venv = pytest.mark.skipif(not VLLM_PYTHON.exists(), reason=VLLM_VENV_MISSING)
"""Skip (before any fixture is built) when .venv-vllm is absent."""


def vllm_env(**extra: str) -> dict[str, str]:
    """Environment for vLLM on this CPU machine (serving-on-cpu.md)."""
    env = dict(os.environ)
    env.update(
        {
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    env.pop("VIRTUAL_ENV", None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """An OpenAI-compatible server on 127.0.0.1 for ``model_dir``, run from
    .venv-vllm. ``with Server(model_dir, log_path) as server:`` waits for
    ``/health`` (``startup_s`` records how long) and always kills the server's
    process group on exit."""

    env_extra: ClassVar[dict[str, str]] = {}

    def __init__(self, model_dir: Path, log_path: Path, name: str = "tiny") -> None:
        self.model_dir = Path(model_dir)
        self.log_path = Path(log_path)
        self.name = name
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.startup_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self) -> LocalServer:
        started = time.monotonic()
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=vllm_env(**self.env_extra),
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        health = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() - started < SERVER_START_TIMEOUT_S:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.command()[:3]} exited with {self.process.returncode}; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                if requests.get(health, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(HEALTH_POLL_S)
        raise RuntimeError(
            f"server not ready after {SERVER_START_TIMEOUT_S:.0f} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()


class VLLMServer(LocalServer):
    """``vllm serve`` as vllm-cpu allows it (its console script cannot find the
    ``vllm`` distribution): ``python -m vllm.entrypoints.openai.api_server``."""

    env_extra: ClassVar[dict[str, str]] = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}

    def command(self) -> list[str]:
        return [
            str(VLLM_PYTHON),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            "float32",
            "--max-model-len",
            str(TINY_MAX_MODEL_LEN),
            "--enforce-eager",
            "--tokenizer-mode",
            "auto",
            "--limit-mm-per-prompt",
            '{"image": 1}',
        ]


class TransformersServer(LocalServer):
    """``transformers serve MODEL_DIR``; it serves the model under its path."""

    def command(self) -> list[str]:
        return [
            str(VLLM_VENV / "bin" / "transformers"),
            "serve",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]


def held_out():
    """Synthetic single-shape images the trained tiny model never saw."""
    from worker.training.synthetic import held_out_samples

    return held_out_samples(HELD_OUT, seed=7)


def check_detection(result: dict, sample, *, logprobs: bool = True) -> None:
    """Assert ``result`` (a GenerationResult as a dict) is one well-formed
    group that parses to one box in ``sample``'s image.

    How well the box fits the shape is the trained model's business (its own
    tests measure it); engines are held to agreeing with the transformers
    engine instead.
    """
    from converters.grammar import IM_END
    from converters.parser import parse_output
    from converters.tasks import Task

    assert re.match(GRAMMAR_GROUP, result["text"]), result["text"]
    assert result["finish_reason"] == "stop"
    if logprobs:
        assert len(result["token_logprobs"]) == len(result["token_texts"])
        assert all(lp <= 0 for lp in result["token_logprobs"])
        assert "".join(result["token_texts"]) == result["text"] + IM_END
    if result.get("token_ids"):
        assert len(result["token_ids"]) == len(result["token_texts"])
    parsed = parse_output(result["text"], Task.DETECTION, *sample.image.size)
    (prediction,) = parsed.predictions
    assert prediction.type.value == "box"
