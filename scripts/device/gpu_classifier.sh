#!/usr/bin/env bash
# One GPU lease, one command: a candidate classifier from scratch. The lease's 16 CPU cores
# generate training cases and harvest the U-Net's candidates (the U-Net runs on ONNX Runtime's
# CPU build, the only one the image has); the GPU trains the classifier; a tar of its
# checkpoints (every KEEP_EVERY epochs, best, last), log and config comes back for
# `cmb classifier choose` on the selection set here.
# Run on the lease machine from the repo root, with .devcarry (scripts/device/make_carry.sh with
# its PACKAGES for this script):
#   UNET_SPACING="0.7 0.7 0.7" CUBE_SPACING="1 1 1" bash scripts/device/gpu_classifier.sh
# Environment: CASES (training cases, default 240) from SEED (3100); VAL_CASES (24) from
# VAL_SEED (3600), training subjects too (the held-out subjects do not travel: this set only
# picks best.pt; the choice is made here); WORKERS (15); HARVEST_UNTIL (seconds after the
# start at which the harvest stops, default 400: the cases harvested by then are the pool);
# TRAIN_UNTIL (seconds after the start at which training stops, default 540, so that what it
# kept by then comes back inside the tool's 10-minute limit);
# UNET_SPACING, CUBE_SPACING (empty: the U-Net's own grid); CUBE_SIZE (harvested cube edge,
# empty: 32), PATCH and SHIFT (the input and its random shift, empty: 24 and 3; PATCH + 2 SHIFT
# must fit CUBE_SIZE); EPOCHS (40), STEPS (100), FEATURES ("8 16 32"), KEEP_EVERY (5),
# DEVICE (cuda), PYTHON (python3), OUT (the tool sets it).
set -uo pipefail
export PYTHONUNBUFFERED=1
CASES=${CASES:-240}
SEED=${SEED:-3100}
VAL_CASES=${VAL_CASES:-24}
VAL_SEED=${VAL_SEED:-3600}
WORKERS=${WORKERS:-15}
HARVEST_UNTIL=${HARVEST_UNTIL:-400}
TRAIN_UNTIL=${TRAIN_UNTIL:-540}
UNET_SPACING=${UNET_SPACING:-}
CUBE_SPACING=${CUBE_SPACING:-}
EPOCHS=${EPOCHS:-40}
STEPS=${STEPS:-100}
FEATURES=${FEATURES:-8 16 32}
KEEP_EVERY=${KEEP_EVERY:-5}
CUBE_SIZE=${CUBE_SIZE:-}
PATCH=${PATCH:-}
SHIFT=${SHIFT:-}
# shellcheck source=scripts/device/lease_start.sh
source scripts/device/lease_start.sh

# one thread per generator and harvest process (16 SimpleITK threads each would oversubscribe)
export ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 OMP_NUM_THREADS=1
data=runs/lease_data
harvest=runs/lease_harvest
run=runs/lease_classifier
harvest_opts=()
[ -n "$UNET_SPACING" ] && harvest_opts+=(--unet-spacing $UNET_SPACING)
[ -n "$CUBE_SPACING" ] && harvest_opts+=(--cube-spacing $CUBE_SPACING)
[ -n "$CUBE_SIZE" ] && harvest_opts+=(--cube-size "$CUBE_SIZE")
input=()
[ -n "$PATCH" ] && input+=(--patch "$PATCH")
[ -n "$SHIFT" ] && input+=(--shift "$SHIFT")
synth() {  # folder cases seed workers
    "$PY" -m cmb.cli synth "$1" --cases "$2" --seed "$3" --split train --n-cmbs 10 \
        --workers "$4" --no-progress
}
synth "$data/val" "$VAL_CASES" "$VAL_SEED" "$WORKERS" >"$OUT/synth.log" 2>&1 || {
    stamp "synth (val) failed"; tail -20 "$OUT/synth.log"; exit 1; }
synth "$data/train" "$CASES" "$SEED" "$WORKERS" >>"$OUT/synth.log" 2>&1 || {
    stamp "synth (train) failed"; tail -20 "$OUT/synth.log"; exit 1; }
stamp "synthesised $VAL_CASES + $CASES cases"
harvest_into() {  # data_folder out_folder
    "$PY" -m cmb.cli classifier harvest --data "$1" --out "$2" --workers "$WORKERS" "${harvest_opts[@]}"
}
harvest_into "$data/val" "$harvest/val" >"$OUT/harvest.log" 2>&1 || {
    stamp "harvest (val) failed"; tail -20 "$OUT/harvest.log"; exit 1; }
# the training harvest in a session of its own (setsid execs it, so its pid is the process
# group of it and its workers), stopped at the deadline: each case's file is written whole
# or not at all, so what is there is a pool
setsid "$PY" -m cmb.cli classifier harvest --data "$data/train" --out "$harvest/train" \
    --workers "$WORKERS" "${harvest_opts[@]}" >>"$OUT/harvest.log" 2>&1 &
group=$!
while kill -0 "$group" 2>/dev/null && [ $(($(date +%s) - t0)) -lt "$HARVEST_UNTIL" ]; do sleep 2; done
if kill -0 "$group" 2>/dev/null; then stamp "harvest stopped at the deadline"; fi
kill -- -"$group" 2>/dev/null  # the harvest and any worker left behind
wait "$group" 2>/dev/null
n=$(ls "$harvest/train" | grep -c '^[^.]*\.npz$' || true)
stamp "harvested $n training cases"
[ "$n" -gt 0 ] || { tail -20 "$OUT/harvest.log"; exit 1; }
unset ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS OMP_NUM_THREADS
nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader -l 10 >"$OUT/gpu_util.log" 2>&1 &
smi=$!
"$PY" -m cmb.cli classifier train --train "$harvest/train" --val "$harvest/val" --out "$run" \
    --epochs "$EPOCHS" --steps "$STEPS" --features $FEATURES --threads 4 \
    --keep-every "$KEEP_EVERY" --device "$DEVICE" "${input[@]}" >"$OUT/train.log" 2>&1 &
trainer=$!
# stopped at TRAIN_UNTIL so that the checkpoints kept by then still come back
while kill -0 "$trainer" 2>/dev/null && [ $(($(date +%s) - t0)) -lt "$TRAIN_UNTIL" ]; do sleep 2; done
if kill -0 "$trainer" 2>/dev/null; then stamp "training stopped at the deadline"; kill "$trainer"; fi
wait "$trainer"
rc=$?
kill "$smi" 2>/dev/null
tail -5 "$OUT/train.log"
stamp "training rc=$rc"
# whole cases only (a case cut off at the deadline left <case>.tmp.npz)
ls "$harvest/train" | sed -n 's/^\([^.]*\)\.npz$/\1/p' >"$run/harvested_case_ids.txt"
tar -C "$run" -cf "$OUT/classifier_run.tar" .
stamp done
exit $rc
