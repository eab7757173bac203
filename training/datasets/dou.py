"""The CUHK SWI microbleed set of Dou et al. (IEEE TMI 2016; 20 scans, 74 CMBs).

Layout of the public release::

    nii/01.nii ... nii/20.nii                 SWI volumes
    ground_truth/01.mat ... ground_truth/20.mat
        'cen': N x 3 microbleed centres, MATLAB (1-based) voxel indices (i, j, k) of the NIfTI array

The release has centres, not masks.  Mask rule (the same as the synthetic
truth: what a rater would outline): around each centre, take the darkest voxel
within one voxel, and grow the 26-connected region of voxels darker than 60 %
of the local background (median of a 5 mm box, i.e. >= 40 % signal loss),
limited to a 5 mm radius; if nothing qualifies the centre voxel alone is the
lesion.  Acquisition metadata are those the paper reports for the whole set
(3 T Philips, SWI, TE 24 ms, 0.45 x 0.45 mm, 2 mm slices), flagged as such.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from scipy.io import loadmat

from model.errors import InputError
from model.types import Volume
from model.volume import read_nifti
from training.datasets.common import ImportedCase, make_record

PUBLISHED_ACQUISITION = {
    "sequence": "swi",
    "field_strength_t": 3.0,
    "echo_time_ms": 24.0,
    "manufacturer": "Philips",
    "acquisition_type": "3D",
    "metadata_from": "publication (Dou et al. 2016), not the files",
}


def grow_lesion(
    image: Volume, centre_kji: npt.NDArray[np.int64], loss: float = 0.4, radius_mm: float = 5.0
) -> npt.NDArray[np.bool_]:
    """The rater-like mask of one lesion around a centre voxel (see module docstring)."""
    img = np.nan_to_num(image.array.astype(np.float64))
    spacing = np.array(image.spacing)
    half = np.ceil(radius_mm / spacing).astype(int)
    lo = np.maximum(centre_kji - half, 0)
    hi = np.minimum(centre_kji + half + 1, img.shape)
    box = img[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    c = centre_kji - lo
    near = box[
        max(c[0] - 1, 0) : c[0] + 2, max(c[1] - 1, 0) : c[1] + 2, max(c[2] - 1, 0) : c[2] + 2
    ]
    off = np.array(np.unravel_index(int(np.argmin(near)), near.shape))
    seed = np.maximum(c - 1, 0) + off
    background = float(np.median(box))
    g = np.indices(box.shape).transpose(1, 2, 3, 0) - c
    ball = np.sqrt(np.sum((g * spacing) ** 2, axis=-1)) <= radius_mm
    dark = (box <= (1.0 - loss) * background) & ball
    out = np.zeros(img.shape, dtype=bool)
    if dark[tuple(seed)]:
        lab, _ = ndi.label(dark, structure=np.ones((3, 3, 3)))
        region = lab == lab[tuple(seed)]
    else:
        region = np.zeros(box.shape, dtype=bool)
        region[tuple(seed)] = True
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = region
    return out


def import_dou(src: str | Path, split: str = "train") -> list[ImportedCase]:
    src = Path(src)
    images = sorted((src / "nii").glob("*.nii")) + sorted((src / "nii").glob("*.nii.gz"))
    if not images:
        raise InputError(f"{src}: no nii/*.nii (expected the Dou/CUHK layout)")
    cases = []
    for path in images:
        stem = path.name.split(".")[0]
        mat = src / "ground_truth" / f"{stem}.mat"
        if not mat.is_file():
            raise InputError(f"{mat}: missing (ground truth of {path.name})")
        try:
            cen = np.atleast_2d(np.asarray(loadmat(str(mat))["cen"], dtype=np.float64))
        except NotImplementedError as e:  # MATLAB v7.3 files are HDF5
            raise InputError(f"{mat}: MATLAB v7.3 (HDF5) file; save it as v7 or older") from e
        except (KeyError, ValueError, OSError) as e:
            raise InputError(f"{mat}: no readable 'cen' array ({e})") from e
        image = read_nifti(path)
        labels = np.zeros(image.shape, dtype=np.int16)
        rows = [r for r in cen if r.size == 3] if cen.size else []
        for n, ijk in enumerate(rows, 1):
            kji = np.rint(np.asarray(ijk)[::-1] - 1.0).astype(np.int64)
            if np.any(kji < 0) or np.any(kji >= image.shape):
                raise InputError(f"{mat}: centre {list(ijk)} lies outside the image")
            labels[grow_lesion(image, kji) & (labels == 0)] = n
        case_id = f"dou-{stem}"
        record = make_record(
            case_id,
            image,
            labels,
            source="dou",
            split=split,
            acquisition=dict(PUBLISHED_ACQUISITION),
            extra={"source_id": stem},
        )
        cases.append(ImportedCase(case_id, image, image.with_array(labels), record))
    return cases
