#!/usr/bin/env bash
# Create .venv-ls in the repository root with a real Label Studio for the e2e tests.
#
# Label Studio gets its own virtual environment: its many pins (Django, numpy,
# label-studio-sdk, ...) must not mix with the project's .venv. Idempotent: an
# existing .venv-ls that already has the wanted version is left alone.
#
# It also migrates an empty Label Studio database once into
# .venv-ls/e2e-data-template (tests/e2e/conftest.py copies it into each test
# session's temporary data dir): the migrations are most of Label Studio's
# cold start (40 s to minutes on 2 cores); a migrated copy starts in seconds.
#
# Usage: scripts/setup-labelstudio-venv.sh  (about 2 min and 1 GB on a fresh run)
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

TEMPLATE="${VENV}/e2e-data-template"
TEMPLATE_STAMP="${TEMPLATE}/.migrated-${LABEL_STUDIO_VERSION}"

migrate_template() {
    # Same environment as the test fixture: no internet, and keep Label
    # Studio's `git` version probe out of this checkout.
    local start
    start=$(date +%s)
    rm -rf "${TEMPLATE}"
    env -u HOST -u PORT -u USERNAME -u PASSWORD \
        LABEL_STUDIO_BASE_DATA_DIR="${TEMPLATE}" \
        SENTRY_DSN= FRONTEND_SENTRY_DSN= LATEST_VERSION_CHECK=false \
        COLLECT_ANALYTICS=false GIT_CEILING_DIRECTORIES="${REPO_ROOT}" \
        "${VENV}/bin/python" -W ignore -c '
from label_studio.server import _apply_database_migrations, _setup_env
_setup_env()
_apply_database_migrations()
' >"${VENV}/e2e-data-template.log" 2>&1 || {
        cat "${VENV}/e2e-data-template.log" >&2
        exit 1
    }
    touch "${TEMPLATE_STAMP}"
    echo "migrated data dir template ${TEMPLATE} in $(( $(date +%s) - start )) s"
}

if [[ -x "${VENV}/bin/label-studio" && "$(installed_version)" == "${LABEL_STUDIO_VERSION}" ]]; then
    echo "label-studio ${LABEL_STUDIO_VERSION} already in ${VENV}"
    [[ -f "${TEMPLATE_STAMP}" ]] || migrate_template
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
migrate_template
