#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine and run it.
# This is the README's second command; .ci/run calls exactly this script.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: real DICOM peers and validators used by the tests.
APT_PACKAGES=(dcmtk dicom3tools orthanc orthanc-dicomweb chromium poppler-utils fonts-droid-fallback fonts-dejavu-core docker-compose)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python: a project venv; torch's CPU wheel first so that the `training` extra's
# `torch>=2.4` range is already satisfied and no multi-GB CUDA build is pulled.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[cpu,training,test]'

# Static checks, then the suite.  pytest exits 5 when it collected no test:
# that is a failure here, never a silent pass.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/mypy
set +e
.venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests; failing" >&2
    exit 1
fi
exit "$rc"
