#!/usr/bin/env bash
# Build .devcarry/: what a GPU lease machine (no package index, no ../shared) needs to run
# `cmb synth` and `cmb train` from this checkout, inside the device tool's 64 MiB limit
# (repository and carry together).
#   site.tar.xz    the training dependencies the lease image lacks (SimpleITK, MONAI, pydicom,
#                  TorchIO with nibabel and Deprecated, connected-components-3d, which the loss
#                  imports; cp312 wheels unpacked as pip would, their
#                  test folders dropped), xz-compressed: SimpleITK's wheel alone is 53 MB
#   labels.tar.xz  the 16 training-subject label maps as int16 NIfTI, cropped to the brain plus
#                  24 mm (the synthesiser crops to brain plus 20 mm, so it reads identical
#                  anatomy); the held-out subjects 17-20 travel only with HELD_OUT=1, for a
#                  lease that generates and measures the selection and held-out sets
#                  (scripts/device/lease_filter_effect.sh) and trains nothing
# Usage: CMB_SHARED_DATA=../shared/data bash scripts/device/make_carry.sh   (about 6 minutes with the small PACKAGES list, most of it the labels' xz -9e)
# PACKAGES (pip names) replaces that list; scripts/device/gpu_classifier.sh needs
#   PACKAGES="simpleitk pydicom connected-components-3d"   (synthesis, harvest, classifier)
# On the machine, scripts/device/gpu_train.sh unpacks it.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${CMB_SHARED_DATA:-../shared/data}
PY=${PYTHON:-.venv/bin/python}
OUT=.devcarry
rm -rf "$OUT" && mkdir -p "$OUT"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/wheels" "$tmp/site" "$tmp/labels"
for pkg in ${PACKAGES:-simpleitk monai pydicom torchio nibabel deprecated connected-components-3d}; do
    version=$("$PY" -c "import importlib.metadata as m; print(m.version('$pkg'))")
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$tmp/wheels" "$pkg==$version"
done
for wheel in "$tmp"/wheels/*.whl; do unzip -q -o "$wheel" -d "$tmp/site"; done
find "$tmp/site" -type d -name tests -prune -exec rm -rf {} +
tar -C "$tmp/site" -cf - . | xz -9 -T0 >"$OUT/site.tar.xz"
"$PY" - "$SHARED" "$tmp/labels" "${HELD_OUT:-0}" <<'PY'
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from training.synth.anatomy import TRAIN_SUBJECTS, VAL_SUBJECTS, brain_box

MARGIN = 24  # > the synthesiser's 20 mm, so its own crop of this crop is the same box
shared, out = Path(sys.argv[1]), Path(sys.argv[2])
subjects = TRAIN_SUBJECTS + (VAL_SUBJECTS if sys.argv[3] == "1" else ())
for n in subjects:
    src = shared / "synthseg/data/training_label_maps" / f"training_seg_{n:02d}.nii.gz"
    image = sitk.ReadImage(str(src))
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    if not np.array_equal(array, np.rint(array)) or np.abs(array).max() > 32767:
        raise SystemExit(f"{src}: labels are not int16 integers")
    lo, hi = brain_box(np.rint(array).astype(np.int16), MARGIN)
    size = [int(s) for s in (hi - lo)[::-1]]  # SimpleITK index order (x, y, z)
    crop = sitk.RegionOfInterest(image, size, [int(i) for i in lo[::-1]])
    sitk.WriteImage(sitk.Cast(crop, sitk.sitkInt16), str(out / f"training_seg_{n:02d}.nii"))
PY
tar -C "$tmp/labels" -cf - . | xz -9e -T2 >"$OUT/labels.tar.xz"  # -9e: 2 MB less than -6
du -ab "$OUT"
