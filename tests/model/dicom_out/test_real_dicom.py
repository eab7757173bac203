"""Real scanner headers (shared data): classic multi-echo Siemens and Philips Enhanced MR
with magnitude and field-map frames in one file, read by the project's own reader."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from model.dicom_in import load_studies
from model.dicom_out import write_outputs
from tests.model.dicom_out.conftest import result_for_volume

CASES = [
    ("Siemens/2_gre_field_magph", "echo1"),
    ("Siemens/2_gre_field_magph", "echo2"),
    ("Philips/fmap", "magnitude"),
    ("Philips/fmap", "fieldmap"),
]


@pytest.mark.parametrize(("folder", "stack"), CASES)
def test_real_source_outputs(shared_data: Path, tmp_path: Path, folder: str, stack: str) -> None:
    studies = load_studies([shared_data / "real_dicom" / "In" / folder])
    series = next(s for st in studies for s in st.series if s.stack_id.endswith(stack))
    volume = series.load_volume()
    nk, nj, ni = volume.shape
    centres = {1: (nk // 2, nj // 3, ni // 3), 2: (nk // 3, 2 * nj // 3, ni // 2)}
    result = result_for_volume(volume, series.info, centres, radius_mm=3.0)
    written = write_outputs(result, series.source_datasets(), tmp_path, ("seg", "sr", "pdf", "sc"))

    seg = pydicom.dcmread(written["seg"])  # type: ignore[arg-type]
    for number, kji in enumerate(centres.values(), start=1):
        expected = volume.slices[kji[0]]
        refs = []
        for item in seg.PerFrameFunctionalGroupsSequence:
            if item.SegmentIdentificationSequence[0].ReferencedSegmentNumber != number:
                continue
            src = item.DerivationImageSequence[0].SourceImageSequence[0]
            refs.append((src.ReferencedSOPInstanceUID, src.get("ReferencedFrameNumber")))
        key = (expected.sop_instance_uid, expected.frame_number)
        assert key in [(u, int(f) if f is not None else None) for u, f in refs]
        if expected.frame_number is not None:  # only frames of the analysed stack
            frames = {int(f) for _, f in refs}
            wanted = {s.frame_number for s in volume.slices}
            assert frames <= wanted
    for path in [written["seg"], written["sr"], written["pdf"], *written["sc"]]:  # type: ignore[misc]
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, f"{Path(path).name}: {errors}"
    np.testing.assert_equal(len(written["sc"]), 2)  # type: ignore[arg-type]
