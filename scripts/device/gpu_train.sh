#!/usr/bin/env bash
# One GPU lease, one command: grow a synthetic pool on the CPUs while the U-Net trains on
# the GPU (data.rescan), then hand back a slim checkpoint (weights + config) for `cmb export`.
# Run on the lease machine from the repo root, with .devcarry (scripts/device/make_carry.sh):
#   CONFIG=training/configs/gpu_finetune_0.6.json SEED=30000 bash scripts/device/gpu_train.sh
# Environment: CONFIG, SEED (first synth seed), GEN_WORKERS (default 4), MIN_CASES (cases the
# pool holds before training starts, default 24), SYNTH_OPTS (more `cmb synth` options for the
# pool, e.g. "--random-contrast 0.5"), INIT (default the shipped U-Net; "none" trains from
# scratch, as a network of other widths must, e.g. training/configs/gpu_wide_0.10.json),
# DEVICE (default cuda), PYTHON (default python3), OUT (where results go; the tool sets it).
set -uo pipefail
export PYTHONUNBUFFERED=1
CONFIG=${CONFIG:?set CONFIG}
SEED=${SEED:?set SEED}
GEN_WORKERS=${GEN_WORKERS:-4}
MIN_CASES=${MIN_CASES:-24}
SYNTH_OPTS=${SYNTH_OPTS:-}
INIT=${INIT:-model/weights/cmb_unet.onnx}
# shellcheck source=scripts/device/lease_start.sh
source scripts/device/lease_start.sh

pool=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['data']['train'][0])" "$CONFIG")
run=runs/gpu_$(basename "$CONFIG" .json)
init=(--init "$INIT")
[ "$INIT" = none ] && init=()
"$PY" -m cmb.cli synth "$pool" --cases 5000 --seed "$SEED" --split train --n-cmbs 10 \
    --workers "$GEN_WORKERS" --no-progress $SYNTH_OPTS >"$OUT/synth.log" 2>&1 &
gen=$!
count() { [ -f "$pool/cases.jsonl" ] && wc -l <"$pool/cases.jsonl" || echo 0; }
until [ "$(count)" -ge "$MIN_CASES" ]; do
    kill -0 $gen 2>/dev/null || { stamp "generator died"; cat "$OUT/synth.log"; exit 1; }
    sleep 2
done
stamp "pool holds $(count) cases; training"
"$PY" -m cmb.cli train --config "$CONFIG" "${init[@]}" --out "$run" --device "$DEVICE" \
    --no-progress 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
kill $gen 2>/dev/null
stamp "training rc=$rc; pool $(count) cases"
cp "$run/metrics.csv" "$run/config.json" "$OUT/" 2>/dev/null
"$PY" - "$run/checkpoints/last.pt" "$OUT/last_slim.pt" <<'PY'
import sys

import torch

state = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
keep = ("model", "config", "epoch", "training_data_hash", "trained_on", "provenance", "wall_seconds")
torch.save({k: v for k, v in state.items() if k in keep}, sys.argv[2])
print("slim checkpoint keys:", sorted(k for k in state if k in keep))
PY
# the pool's case ids (its records are ~50 kB each; the cases stay on the machine)
"$PY" -c "import json,sys; [print(json.loads(l)['case_id']) for l in open(sys.argv[1]) if l.strip()]" \
    "$pool/cases.jsonl" >"$OUT/pool_case_ids.txt"
stamp done
exit $rc
