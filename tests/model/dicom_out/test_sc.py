from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from model.dicom_out import write_outputs
from model.dicom_out.findings import MARS_COLOURS
from tests.model.dicom_out.conftest import Case


def test_one_key_image_per_kept_cmb_with_overlay(axial_case: Case, tmp_path: Path) -> None:
    written = write_outputs(axial_case.result, axial_case.datasets, tmp_path, ("sc",))
    paths = written["sc"]
    assert isinstance(paths, list) and len(paths) == 2
    kept = [d for d in axial_case.result.detections if d.kept]
    for n, (path, det) in enumerate(zip(paths, kept, strict=True), start=1):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert ds.BurnedInAnnotation == "YES" and ds.PhotometricInterpretation == "RGB"
        assert int(ds.InstanceNumber) == n
        k = axial_case.centres_kji[det.id][0]
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == (
            axial_case.result.labels.slices[k].sop_instance_uid
        )
        rgb = ds.pixel_array
        colour = np.array(MARS_COLOURS[det.mars])
        close = np.all(np.abs(rgb.astype(int) - colour) < 30, axis=-1)
        assert close.sum() > 50, "the CMB's outline colour is burned into the image"
        # axial head-first source: right edge of the image is the patient's left
        assert list(ds.PatientOrientation) == ["L", "P"]
