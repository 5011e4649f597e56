#!/usr/bin/env bash
# Create .venv-ls in the repository root with a real Label Studio for the e2e tests.
#
# Label Studio gets its own virtual environment: its many pins (Django, numpy,
# label-studio-sdk, ...) must not mix with the project's .venv. Idempotent: an
# existing .venv-ls that already has the wanted version is left alone.
#
# Usage: scripts/setup-labelstudio-venv.sh          (about 90 s and 1 GB on a fresh run)
# Env:   LABEL_STUDIO_VERSION  version to install (default 1.23.2: the one the specs describe)
#        PYTHON                interpreter for the venv (default python3.11, else python3)
set -euo pipefail

LABEL_STUDIO_VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv-ls"

if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi

installed_version() {
    # `label-studio --version` would start a server on 0.0.0.0:8080: ask pip instead.
    "${VENV}/bin/python" -m pip show label-studio 2>/dev/null \
        | awk '/^Version:/ {print $2}'
}

if [[ -x "${VENV}/bin/label-studio" && "$(installed_version)" == "${LABEL_STUDIO_VERSION}" ]]; then
    echo "label-studio ${LABEL_STUDIO_VERSION} already in ${VENV}"
    exit 0
fi

start=$(date +%s)
if [[ ! -x "${VENV}/bin/python" ]]; then
    "${PYTHON}" -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --quiet --upgrade pip
"${VENV}/bin/python" -m pip install --quiet "label-studio==${LABEL_STUDIO_VERSION}"

got="$(installed_version)"
if [[ "${got}" != "${LABEL_STUDIO_VERSION}" ]]; then
    echo "expected label-studio ${LABEL_STUDIO_VERSION} in ${VENV}, found '${got}'" >&2
    exit 1
fi
echo "label-studio ${got} installed in ${VENV} in $(( $(date +%s) - start )) s"
