"""Build the example shown in docs/dicom-outputs.md (not a test; run by hand).

    .venv/bin/python -m tests.model.dicom_out.make_docs_example docs/dicom-outputs

A SWI-like axial series is simulated from SynthSeg's training label map 01
(shared data; intensities per structure, dark iron-rich pallidum and veins,
bright CSF), written as a Siemens-flavoured classic MR series with
model.series_writer, with four dark "microbleeds" painted in; the Result is
built by hand (three kept CMBs, one rejected as a vessel, rated definite/possible
with the U-Net band as the location filter rates them).  All four outputs
are written; the script saves a key image, the PDF pages as PNG and the SR tree
(dsrdump) next to the document.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from scipy.ndimage import gaussian_filter, map_coordinates

from model.dicom_out import write_outputs
from model.location.rating import DEFINITE_UNET
from model.paths import shared_data_dir
from model.series_writer import StudyMeta, write_series
from model.types import (
    Detection,
    MarsCategory,
    ModelInfo,
    Result,
    SequenceKind,
    SeriesInfo,
    SeriesSelection,
    SliceRef,
    Volume,
)

# FreeSurfer label -> SWI-like magnitude (arbitrary units)
INTENSITY = {
    2: 560,
    41: 560,
    3: 470,
    42: 470,
    4: 900,
    43: 900,
    5: 900,
    44: 900,
    14: 900,
    15: 900,
    24: 880,
    7: 520,
    46: 520,
    8: 450,
    47: 450,
    10: 430,
    49: 430,
    11: 440,
    50: 440,
    12: 390,
    51: 390,
    13: 230,
    52: 230,
    16: 500,
    17: 480,
    53: 480,
    18: 480,
    54: 480,
    26: 450,
    58: 450,
    28: 420,
    60: 420,
    30: 120,
    62: 120,
    31: 600,
    63: 600,
}
SHAPE = (24, 160, 160)  # slices, rows, columns
SPACING = (2.5, 1.4, 1.4)


def simulate() -> tuple[np.ndarray, np.ndarray]:
    img: Any = nib.load(
        shared_data_dir() / "synthseg/data/training_label_maps/training_seg_01.nii.gz"
    )
    labels = np.asarray(img.dataobj).astype(np.int32)
    affine = np.eye(4)
    affine[:3, 0] = [0, 0, SPACING[0]]  # slices towards the head
    affine[:3, 1] = [0, SPACING[1], 0]  # rows towards posterior
    affine[:3, 2] = [SPACING[2], 0, 0]  # columns towards patient left
    affine[:3, 3] = [-112.0, -125.0, -10.0]
    kji = np.indices(SHAPE).reshape(3, -1).T.astype(float)
    lps = kji @ affine[:3, :3].T + affine[:3, 3]
    ras = lps * np.array([-1.0, -1.0, 1.0])
    vox = np.linalg.inv(img.affine)[:3, :3] @ ras.T + np.linalg.inv(img.affine)[:3, 3:4]
    lab = map_coordinates(labels, vox, order=0, mode="constant").reshape(SHAPE)
    out = np.zeros(SHAPE, np.float32)
    for label, value in INTENSITY.items():
        out[lab == label] = value
    out[(lab >= 500) | (lab == 72) | (lab == 85)] = 300
    rng = np.random.default_rng(1)
    out = gaussian_filter(out, (0.4, 0.8, 0.8)) + rng.normal(0, 18, SHAPE)
    return np.clip(out, 0, 4000).astype(np.float32), affine


CMBS = [  # id, (k, j, i), mars, lobe, hemisphere, region, reject
    (1, (16, 60, 112), MarsCategory.LOBAR, "frontal", "left", "ctx-lh-superiorfrontal", None),
    (2, (11, 82, 66), MarsCategory.DEEP, None, "right", "Right-Thalamus", None),
    (3, (5, 118, 95), MarsCategory.INFRATENTORIAL, None, "left", "Left-Cerebellum-Cortex", None),
    (
        4,
        (14, 40, 80),
        MarsCategory.LOBAR,
        "frontal",
        "right",
        "ctx-rh-superiorfrontal",
        "vessel: tubular, follows a sulcus",
    ),
]


def main(dest: Path) -> None:
    image, affine = simulate()
    labels = np.zeros(SHAPE, np.float32)
    kk, jj, ii = np.indices(SHAPE)
    detections = []
    for det_id, (k, j, i), mars, lobe, hemi, region, reject in CMBS:
        d2 = (
            ((kk - k) * SPACING[0]) ** 2
            + ((jj - j) * SPACING[1]) ** 2
            + ((ii - i) * SPACING[2]) ** 2
        )
        mask = d2 <= 2.6**2
        image[mask] = 80.0
        labels[mask] = det_id
        det = Detection(
            id=det_id,
            center_lps_mm=tuple(affine[:3, :3] @ [k, j, i] + affine[:3, 3]),
            diameter_mm=5.2,
            volume_mm3=float(mask.sum() * np.prod(SPACING)),
            probability=[0.93, 0.81, 0.67, 0.55][det_id - 1],
            n_voxels=int(mask.sum()),
            region=region,
            region_label=1000 + det_id,
            mars=mars,
            lobe=lobe,
            hemisphere=hemi,
        )
        if reject:
            det.reject(reject)
        detections.append(det)
    tmp = Path(tempfile.mkdtemp())
    study = StudyMeta.synthetic(3, patient_name="Example^Patient")
    files = write_series(
        Volume(array=image, affine=affine), tmp / "src", study=study, flavour="siemens_swi"
    )
    datasets = [pydicom.dcmread(f) for f in files]
    first = datasets[0]
    ident = dict(
        study_instance_uid=str(first.StudyInstanceUID),
        series_instance_uid=str(first.SeriesInstanceUID),
        slices=tuple(SliceRef(str(d.SOPInstanceUID), str(d.SOPClassUID)) for d in datasets),
    )
    info = SeriesInfo(
        study_instance_uid=str(first.StudyInstanceUID),
        series_instance_uid=str(first.SeriesInstanceUID),
        modality="MR",
        sequence_kind=SequenceKind.SWI,
        series_description=str(first.SeriesDescription),
        series_number=int(first.SeriesNumber),
        manufacturer="SIEMENS",
        field_strength_t=3.0,
        echo_time_ms=20.0,
        pixel_spacing_mm=SPACING[1:],
        slice_thickness_mm=SPACING[0],
        acquisition_type="3D",
        n_instances=len(datasets),
    )
    result = Result(
        study_instance_uid=info.study_instance_uid,
        series=info,
        selection=SeriesSelection(
            chosen=info.series_instance_uid,
            reason="SWI magnitude (ImageType M, SWI in sequence name)",
        ),
        detections=detections,
        probability=Volume(array=(labels > 0).astype(np.float32), affine=affine, **ident),  # type: ignore[arg-type]
        labels=Volume(array=labels, affine=affine, **ident),  # type: ignore[arg-type]
        model=ModelInfo(name="cmb-unet", version="1.0.0", sha256="0123456789abcdef" * 4),
        # rated as the location filter rates U-Net scores: definite from DEFINITE_UNET
        location={"mars_rating": {"definite_probability": DEFINITE_UNET}},
    )
    out = tmp / "out"
    written = write_outputs(result, datasets, out, ("seg", "sr", "pdf", "sc"), pdf_html=True)
    dest.mkdir(parents=True, exist_ok=True)
    from matplotlib.image import imsave

    sc = pydicom.dcmread(written["sc"][0])  # type: ignore[index]
    imsave(dest / "key-image-cmb1.png", sc.pixel_array)
    subprocess.run(
        [
            "gs",
            "-q",
            "-sDEVICE=png16m",
            "-r70",
            "-o",
            str(dest / "report-page%d.png"),
            str(out / "report.pdf"),
        ],
        check=True,
    )
    tree = subprocess.run(
        ["dsrdump", "-Ee", str(written["sr"])], capture_output=True, text=True, check=True
    ).stdout
    (dest / "sr-tree.txt").write_text(tree, encoding="utf-8")
    print("\n".join(f"{k}: {v}" for k, v in written.items()))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dicom-outputs"))
