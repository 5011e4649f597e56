"""bench/gpu_check.sh, the one script to run when a GPU is lent, tried on this
CPU: its self-check runs bench/bench_gpu.py --smoke through both engines (the
transformers engine and vLLM, from .venv-vllm), and its time budget skips the
3B cases, which only a GPU can run."""

import json
import os
import subprocess

import pytest

from tests.worker.vllm_env import REPO_ROOT, VLLM_PYTHON, needs_vllm_venv, vllm_env

BUDGET_S = 20
"""Spent by the self-check alone: every 3B case is skipped, none started."""
TIMEOUT_S = 600


@pytest.mark.slow
@needs_vllm_venv
def test_gpu_check_self_checks_both_engines_and_keeps_its_budget(tmp_path):
    env = vllm_env(
        PYTHON=str(VLLM_PYTHON),
        GPU_CHECK_DEVICE="cpu",
        GPU_CHECK_BUDGET=str(BUDGET_S),
        OUT=str(tmp_path),
    )
    env.pop("PYTHONPATH", None)  # the script sets its own
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "bench" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # the script finds the repository itself
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    saved = (tmp_path / "gpu_check.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in saved] == lines
    assert lines[0]["case"] == "environment" and lines[0]["torch"]
    smoke = [r for r in lines if r.get("smoke") and "batch" in r]
    for engine in ("transformers", "vllm"):
        rows = [r for r in smoke if r["engine"] == engine]
        assert {r["batch"] for r in rows} == {1, 2}, engine
        for row in rows:  # static-cap ends its 8 forced tokens with <|im_end|>
            assert row["output_tokens"] == 8 + (row["variant"] == "static-cap")
            assert row["images_per_s"] > 0
    assert {r["variant"] for r in smoke if r["engine"] == "transformers"} == {
        "eager",
        "static",
        "static-cap",
    }
    assert any(r.get("case") == "self-check" and r["ok"] for r in lines)
    skipped = [r for r in lines if r.get("skipped") == "time budget"]
    assert len(skipped) == 3  # vllm, transformers eager, transformers static
    assert lines[-1]["case"] == "done"
    assert os.path.getsize(tmp_path / "gpu_check.log") > 0
