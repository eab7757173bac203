# Sourced by the lease scripts after their own settings: the common start of a lease run.
# Sets DEVICE (default cuda), PY (from PYTHON, default python3), OUT (the tool sets it), t0 and
# stamp; unpacks CARRY (default .devcarry, scripts/device/make_carry.sh) where the lease image
# lacks our training dependencies and ../shared, setting PYTHONPATH and CMB_SHARED_DATA (a
# machine with the project's venv, or CARRY naming no folder for a dry run here, is left as
# it is); says which GPU and torch it found.
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
OUT=${OUT:-runs/device_out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*"; }

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
stamp "carry unpacked"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
