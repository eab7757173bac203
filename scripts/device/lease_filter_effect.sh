#!/usr/bin/env bash
# One lease, one command: the product path measured on validation sets by the lease's 16 CPU
# cores (nothing here uses the GPU: ONNX Runtime's CPU build is the only one the image has).
# Each set is generated from its seeds (held-out subjects, `cmb synth --split val
# --negative-every 3 --draw-subject`, as generated here), then
# `training.parcellation.filter_effect` runs in SHARDS processes per set (`--shard K N`), all
# sets at once, stopped at FE_UNTIL (each shard appends whole cases, so what is there by then
# is a measurement of those cases); the shards' cases.jsonl are joined and summarised. What
# comes back, as $OUT/filter_effect.tar.xz: per set cases.jsonl (every candidate scoring at
# least MIN_SCORE with its score, its rules and the features a cmb.rescore model reads), the
# printed tables, and the shards' logs.
# Needs the carry with the held-out label maps and no training package:
#   HELD_OUT=1 PACKAGES="simpleitk pydicom connected-components-3d" bash scripts/device/make_carry.sh
# Run on the lease machine from the repo root:
#   UNET_SPACING="0.7 0.7 0.7" MIN_SCORE=0.02 bash scripts/device/lease_filter_effect.sh
# Environment: SETS (name:cases:seed ..., default "select90:90:210000 val:60:100000", the
# 90-scan selection set and the held-out set), UNET_SPACING (empty: the shipped classifier's
# grid), MIN_SCORE (0.5: lowest classifier score located and recorded), SHARDS (16 per set),
# WORKERS (16 generator processes), THRESHOLD (the classifier threshold of the printed rule
# table; default the shipped classifier's), FE_UNTIL (seconds after the start at which the
# shards are stopped, default 500, so that what they measured comes back inside the tool's
# 10-minute limit), PYTHON (python3), OUT (the tool sets it).
set -uo pipefail
export PYTHONUNBUFFERED=1
SETS=${SETS:-select90:90:210000 val:60:100000}
UNET_SPACING=${UNET_SPACING:-}
MIN_SCORE=${MIN_SCORE:-0.5}
SHARDS=${SHARDS:-16}
WORKERS=${WORKERS:-16}
THRESHOLD=${THRESHOLD:-}
FE_UNTIL=${FE_UNTIL:-500}
# shellcheck source=scripts/device/lease_start.sh
source scripts/device/lease_start.sh

# one thread per process: SHARDS processes per set share the cores
export ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 OMP_NUM_THREADS=1
data=runs/lease_data
fe=runs/lease_filter_effect
grid=()
[ -n "$UNET_SPACING" ] && grid=(--unet-spacing $UNET_SPACING)
table=()
[ -n "$THRESHOLD" ] && table=(--threshold "$THRESHOLD")
names=()
for spec in $SETS; do
    IFS=: read -r name cases seed <<<"$spec"
    names+=("$name")
    "$PY" -m cmb.cli synth "$data/$name" --cases "$cases" --seed "$seed" --split val \
        --negative-every 3 --draw-subject --workers "$WORKERS" --no-progress \
        >>"$OUT/synth.log" 2>&1 || { stamp "synth $name failed"; tail -20 "$OUT/synth.log"; exit 1; }
done
stamp "synthesised ${names[*]}"
mkdir -p "$fe/logs"
pids=()
for name in "${names[@]}"; do
    for k in $(seq 0 $((SHARDS - 1))); do
        "$PY" -m training.parcellation.filter_effect --data "$data/$name" \
            --out "$fe/$name/shard_$k" --shard "$k" "$SHARDS" --min-score "$MIN_SCORE" \
            "${grid[@]}" "${table[@]}" >"$fe/logs/${name}_$k.log" 2>&1 &
        pids+=($!)
    done
done
running() { for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
while running && [ $(($(date +%s) - t0)) -lt "$FE_UNTIL" ]; do sleep 2; done
if running; then
    stamp "shards stopped at the deadline"
    kill "${pids[@]}" 2>/dev/null
fi
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
stamp "filter_effect: ${#pids[@]} shards, $failed failed or stopped"
if [ "$failed" -gt 0 ]; then
    grep -l -i "error\|traceback" "$fe"/logs/*.log | head -3 | xargs -r tail -15
fi
for name in "${names[@]}"; do
    # joined from whole records only: a shard stopped at the deadline may have been writing one
    rm -f "$fe/$name/cases.jsonl"
    "$PY" -m training.parcellation.filter_effect --data "$data/$name" --out "$fe/$name" \
        --join "$fe/$name"/shard_* \
        --summarise --operating-point "${table[@]}" >"$fe/$name/summary.txt" 2>&1
    stamp "$name: $(wc -l <"$fe/$name/cases.jsonl") cases"
    tail -3 "$fe/$name/summary.txt"
done
tar -C "$fe" -cf - logs $(for n in "${names[@]}"; do
    echo "$n/cases.jsonl $n/summary.txt"
done) | xz -6 -T0 >"$OUT/filter_effect.tar.xz"
stamp done
exit 0  # a stopped or failed shard still returns what the others measured (the log says so)
