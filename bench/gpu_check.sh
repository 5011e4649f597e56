#!/usr/bin/env bash
# The one GPU check: both engines on Qwen2.5-VL-3B's architecture with random
# weights, 640x480 and 1280x960, 128 output tokens forced; batch 1 and the best
# batch. One JSON line per case (bench/bench_gpu.py documents the fields).
#
#   bash bench/gpu_check.sh                 # from the repository root
#   PYTHON=/opt/venv/bin/python bash bench/gpu_check.sh
#
# Needs nothing from outside the machine: torch and transformers (and vLLM for
# its cases; without it they print a "skipped" line) in $PYTHON, no weights,
# no network. Order: an environment line, then a self-check on a tiny config
# (both engines, seconds: a broken install stops here), then the cases by
# priority, each skipped once the time budget would be passed.
#
# Environment:
#   PYTHON            interpreter (default: python3)
#   GPU_CHECK_BUDGET  seconds for the whole check (default 450: under 8 minutes
#                     with the self-check and start-up)
#   GPU_CHECK_DEVICE  torch device for every case (default cuda; cpu only to
#                     try the script itself without a GPU)
#   OUT               if set, the JSON lines go to $OUT/gpu_check.jsonl and the
#                     full log to $OUT/gpu_check.log as well
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-450}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
SMOKE_TIMEOUT=150
START=$(date +%s)
DEADLINE=$((START + BUDGET))
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1

RESULTS=$(mktemp)
LOG=/dev/null
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    RESULTS="$OUT/gpu_check.jsonl"
    LOG="$OUT/gpu_check.log"
    : >"$RESULTS"
    : >"$LOG"
fi

note() { # a JSON line of the check itself
    echo "$1" | tee -a "$RESULTS"
}

left() { echo $((DEADLINE - $(date +%s))); }

bench() { # bench_gpu.py ARGS, bounded by what is left of the budget
    local seconds
    seconds=$(left)
    if [ "$seconds" -le 10 ]; then
        note "{\"bench\": \"gpu\", \"skipped\": \"time budget\", \"args\": \"$*\"}"
        return 0
    fi
    timeout --signal=TERM --kill-after=10 "$seconds" \
        "$PYTHON" bench/bench_gpu.py --device "$DEVICE" --deadline "$DEADLINE" \
        --out "$RESULTS.part" "$@" \
        2>>"$LOG" | grep --line-buffered '^{'
    local status=${PIPESTATUS[0]}
    if [ -f "$RESULTS.part" ]; then
        cat "$RESULTS.part" >>"$RESULTS"
        rm -f "$RESULTS.part"
    fi
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        note "{\"bench\": \"gpu\", \"killed\": \"time budget\", \"args\": \"$*\"}"
    elif [ "$status" -ne 0 ]; then
        note "{\"bench\": \"gpu\", \"failed\": $status, \"args\": \"$*\"}"
        tail -n 20 "$LOG" >&2
    fi
}

"$PYTHON" - <<'EOF' | tee -a "$RESULTS"
import importlib.util, json, platform, sys
info = {"bench": "gpu", "case": "environment", "python": platform.python_version()}
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
except Exception as exc:  # reported, then the self-check fails on it
    info["torch_error"] = repr(exc)
for name in ("transformers", "vllm", "flash_attn"):
    if importlib.util.find_spec(name):
        from importlib.metadata import version, PackageNotFoundError
        try:
            info[name] = version(name if name != "vllm" else "vllm")
        except PackageNotFoundError:
            info[name] = "installed"
    else:
        info[name] = None
print(json.dumps(info))
EOF

# Self-check: every code path on a tiny config, on the GPU, in seconds.
for engine in transformers vllm; do
    if ! timeout --kill-after=10 "$SMOKE_TIMEOUT" "$PYTHON" bench/bench_gpu.py \
        --smoke --device "$DEVICE" --engine "$engine" --out "$RESULTS" \
        >/dev/null 2>>"$LOG.smoke"; then
        note "{\"bench\": \"gpu\", \"case\": \"self-check\", \"engine\": \"$engine\", \"ok\": false}"
        tail -n 40 "$LOG.smoke" >&2
        cat "$LOG.smoke" >>"$LOG" 2>/dev/null
        exit 1
    fi
done
cat "$LOG.smoke" >>"$LOG" 2>/dev/null
rm -f "$LOG.smoke"
grep '"smoke": true' "$RESULTS" || true
note "{\"bench\": \"gpu\", \"case\": \"self-check\", \"ok\": true, \"seconds\": $(($(date +%s) - START))}"

# The cases, most wanted first.
bench --engine vllm --sizes 640x480,1280x960 --batches 32,64,128,256
bench --engine transformers --variants eager --sizes 640x480,1280x960 \
    --batches 16,32,64 --latency-requests 4
bench --engine transformers --variants static,static-cap --sizes 640x480 \
    --batches 32 --latency-requests 4

note "{\"bench\": \"gpu\", \"case\": \"done\", \"seconds\": $(($(date +%s) - START))}"
