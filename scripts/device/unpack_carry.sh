# Sourced by the lease scripts: unpack .devcarry (scripts/device/make_carry.sh) where the lease
# image lacks our training dependencies and ../shared; sets PYTHONPATH and CMB_SHARED_DATA.
# A machine with the project's venv (no .devcarry, or CARRY naming no folder: a dry run here)
# is left as it is.
CARRY=${CARRY:-.devcarry}
if [ -d "$CARRY" ]; then
    SITE=/tmp/cmb-site
    SHARED=/tmp/cmb-shared/synthseg/data/training_label_maps
    mkdir -p "$SITE" "$SHARED"
    tar -xJf "$CARRY/site.tar.xz" -C "$SITE" || exit 1
    tar -xJf "$CARRY/labels.tar.xz" -C "$SHARED" || exit 1
    ls "$SHARED"/*.nii | xargs -P 16 -n 1 gzip -1 || exit 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" CMB_SHARED_DATA=/tmp/cmb-shared
fi
