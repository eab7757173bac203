#!/usr/bin/env bash
# Try a lease script here before spending device time on it: on this machine's CPU, in this
# checkout's venv, with no carry to unpack (CARRY=none) and with what the lease image lacks
# refused at import (scripts/device/dry_run/sitecustomize.py), so that a missing package shows
# here and not on the lease. The image has torch, numpy, scipy, scikit-learn and ONNX Runtime
# (/work/.library/device/KINDS.md); the carry adds PACKAGES (scripts/device/make_carry.sh).
# Usage, with the script's own small settings:
#   SETS="tiny:2:210000" SHARDS=2 WORKERS=1 UNET_SPACING="0.7 0.7 0.7" \
#       bash scripts/device/dry_run.sh scripts/device/lease_filter_effect.sh
#   CASES=3 VAL_CASES=2 WORKERS=2 EPOCHS=2 STEPS=3 bash scripts/device/dry_run.sh \
#       scripts/device/gpu_classifier.sh
# CMB_BLOCK (comma separated) replaces the default list, which suits the small carry
# (PACKAGES="simpleitk pydicom connected-components-3d"); for scripts/device/gpu_train.sh,
# whose carry holds MONAI, TorchIO and nibabel, leave those three out of it. A package this
# venv has and neither the image nor the carry holds passes here unless it is listed: when
# training imports a new one, add it to make_carry.sh's PACKAGES (cc3d was found so, on a
# lease, 2026-11-28).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: bash scripts/device/dry_run.sh SCRIPT" >&2; exit 2; }
export PYTHONPATH="$PWD/scripts/device/dry_run${PYTHONPATH:+:$PYTHONPATH}"
export CMB_BLOCK=${CMB_BLOCK:-monai,torchio,nibabel,highdicom,pynetdicom,fastapi,pydantic,sqlalchemy,celery,redis,pylibjpeg,starlette,uvicorn}
export CARRY=none PYTHON=${PYTHON:-.venv/bin/python} DEVICE=${DEVICE:-cpu} OUT=${OUT:-runs/dry_out}
export CMB_SHARED_DATA=${CMB_SHARED_DATA:-../shared/data}
exec bash "$@"
