#!/usr/bin/env bash
# One GPU lease, one command: a candidate classifier from scratch. The lease's 16 CPU cores
# generate training cases and, at the same time, harvest the U-Net's candidates of the cases
# generated so far, in rounds (the U-Net runs on ONNX Runtime's CPU build, the only one the
# image has); the GPU trains the classifier; a tar of its
# checkpoints (every KEEP_EVERY epochs, best, last), log and config comes back for
# `cmb classifier choose` on the selection set here.
# Run on the lease machine from the repo root, with .devcarry (scripts/device/make_carry.sh with
# its PACKAGES for this script):
#   UNET_SPACING="0.7 0.7 0.7" CUBE_SPACING="1 1 1" bash scripts/device/gpu_classifier.sh
# Environment: CASES (training cases, default 240) from SEED (3100); VAL_CASES (24) from
# VAL_SEED (3600), training subjects too (the held-out subjects do not travel: this set only
# picks best.pt; the choice is made here); WORKERS (15: processes in all); GEN_WORKERS (4: of
# those, the generator's while it runs; the harvest has the others, then all: about WORKERS x
# the share of a case's cost that is generation, ~7 of ~36 core-seconds on the 0.7 mm grid);
# HARVEST_UNTIL
# (seconds after the
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
GEN_WORKERS=${GEN_WORKERS:-4}
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
generate=(--split train --n-cmbs 10 --no-progress)
"$PY" -m cmb.cli synth "$data/val" --cases "$VAL_CASES" --seed "$VAL_SEED" --workers "$WORKERS" \
    "${generate[@]}" >"$OUT/synth.log" 2>&1 || {
    stamp "synth (val) failed"; tail -20 "$OUT/synth.log"; exit 1; }
stamp "synthesised $VAL_CASES validation cases"
# the training cases in a session of their own (setsid execs the generator, so its pid is the
# process group of it and its workers), each case's record appended as it is written
mkdir -p "$data/train"
setsid "$PY" -m cmb.cli synth "$data/train" --cases "$CASES" --seed "$SEED" \
    --workers "$GEN_WORKERS" "${generate[@]}" >>"$OUT/synth.log" 2>&1 &
generator=$!
generating() { kill -0 "$generator" 2>/dev/null; }
before_deadline() { [ $(($(date +%s) - t0)) -lt "$HARVEST_UNTIL" ]; }
harvest_workers() { if generating; then echo $((WORKERS - GEN_WORKERS)); else echo "$WORKERS"; fi; }
"$PY" -m cmb.cli classifier harvest --data "$data/val" --out "$harvest/val" \
    --workers "$(harvest_workers)" "${harvest_opts[@]}" >"$OUT/harvest.log" 2>&1 || {
    stamp "harvest (val) failed"; tail -20 "$OUT/harvest.log"; exit 1; }
# the training harvest in rounds over the cases generated so far (a harvest skips the cases
# already harvested), each round in a session of its own so that the deadline stops it with
# its workers: each case's file is written whole or not at all, so what is there is a pool
rounds=0
while before_deadline; do
    last_round=1
    generating && last_round=0  # a round begun after the generator ended sees every case
    [ -s "$data/train/cases.jsonl" ] || { sleep 5; continue; }
    setsid "$PY" -m cmb.cli classifier harvest --data "$data/train" --out "$harvest/train" \
        --workers "$(harvest_workers)" "${harvest_opts[@]}" >>"$OUT/harvest.log" 2>&1 &
    group=$!
    while kill -0 "$group" 2>/dev/null && before_deadline; do sleep 2; done
    if kill -0 "$group" 2>/dev/null; then
        stamp "harvest stopped at the deadline"
        kill -- -"$group" 2>/dev/null  # the harvest and its workers
    fi
    wait "$group" 2>/dev/null
    rounds=$((rounds + 1))
    [ "$last_round" -eq 1 ] && break
    sleep 2
done
stopped=0
if generating; then stamp "generator stopped at the deadline"; kill -- -"$generator"; stopped=1; fi
wait "$generator" 2>/dev/null
gen_rc=$?
[ "$stopped" -eq 0 ] && [ "$gen_rc" -ne 0 ] && { stamp "synth (train) failed"; tail -20 "$OUT/synth.log"; }
stamp "generated $(grep -c . "$data/train/cases.jsonl" 2>/dev/null || echo 0) training cases"
n=$(ls "$harvest/train" | grep -c '^[^.]*\.npz$' || true)
stamp "harvested $n training cases in $rounds rounds"
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
