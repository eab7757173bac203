"""deploy/orthanc with Debian's Orthanc: which series it routes, loop protection, and the
whole path PACS -> cmb serve -> SEG + SR back in the PACS.

Orthanc runs with deploy/orthanc/orthanc.json and autoroute.lua, templated only in
ports, storage folder and plugin path (tests/deploy/orthanc.py).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from model.series_writer import StudyMeta, write_series
from tests.deploy.orthanc import (
    Orthanc,
    orthanc_binary,
    processed_study,
    start_orthanc,
    storescu,
)
from tests.helpers.onnx_factory import sphere_phantom
from tests.service.conftest import KEY, Proc, _listening, free_port, wait_for
from tests.service.study_factory import sr_cmb_count, write_phantom_study

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(orthanc_binary() is None, reason="Orthanc is not installed"),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


def decisions(orthanc: Orthanc) -> dict[str, str]:
    """SeriesInstanceUID -> the routing decision line autoroute.lua logged for it."""
    out = {}
    for m in re.finditer(r"cmb-autoroute: ((?:not )?routing) series ([0-9.]+)(.*)", orthanc.log()):
        out[m.group(2)] = m.group(1) + m.group(3)
    return out


def jobs_done(orthanc: Orthanc) -> bool:
    return all(j["State"] in ("Success", "Failure") for j in orthanc.get("/jobs?expand"))


def series_uid(folder: Path) -> str:
    return str(dcmread(next(folder.iterdir()), stop_before_pixels=True).SeriesInstanceUID)


def restamp(src: Path, dst: Path, **attrs: str) -> str:
    """Copy a series with new Series/SOP Instance UIDs and changed attributes."""
    dst.mkdir(parents=True)
    uid = generate_uid()
    for path in sorted(src.iterdir()):
        ds = dcmread(path)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        for key, value in attrs.items():
            setattr(ds, key, value)
        ds.save_as(dst / path.name)
    return uid


def test_routes_gre_swi_only_and_never_our_results(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    """SWI and T2*-GRE go to the CMB AE (a dcmtk storescp here); phase, T1, localizer,
    short-TE GRE and anything we produced (by AE title or Manufacturer) stay."""
    cmb_port = free_port()
    received = tmp_path / "cmb"
    received.mkdir()
    procs(
        ["storescp", "-aet", "CMB_AI", "-od", str(received), str(cmb_port)],
        tmp_path / "storescp.log",
    )
    wait_for(lambda: _listening(cmb_port), 10, "storescp to listen")
    orthanc = start_orthanc(procs, tmp_path, cmb_port)

    study = write_phantom_study(tmp_path / "study")  # SWI magnitude, SWI phase, T1 MPRAGE
    affine = np.diag([3.0, 1.0, 1.0, 1.0])
    small = sphere_phantom((6, 24, 24), affine, [[6.0, 12.0, 12.0]], [2.0], noise=1.0)
    meta = StudyMeta.synthetic(7)
    extra = tmp_path / "extra"
    write_series(small, extra / "swan", flavour="ge_swan", study=meta, series_number=3)
    write_series(
        small, extra / "swan_phase", flavour="ge_swan", kind="phase", study=meta, series_number=6
    )
    write_series(
        small,
        extra / "t2star",
        flavour="siemens_t2star",
        study=meta,
        series_number=4,
        echo_time_ms=20.0,
    )
    write_series(
        small,
        extra / "gre_t1",
        flavour="siemens_t2star",
        study=meta,
        series_number=5,
        echo_time_ms=4.0,
    )
    write_series(small, extra / "loc", flavour="localizer", study=meta, series_number=1)
    ours = tmp_path / "ours"
    restamp(extra / "swan", ours / "by_manufacturer", Manufacturer="cmb-detect")
    by_aet = restamp(extra / "t2star", tmp_path / "by_aet" / "series")

    storescu(study.root, orthanc.dicom_port, calling="MRI_SCANNER")
    storescu(extra, orthanc.dicom_port, calling="MRI_SCANNER")
    storescu(ours, orthanc.dicom_port, calling="MRI_SCANNER")
    storescu(tmp_path / "by_aet", orthanc.dicom_port, calling="CMB_AI")

    expected = {
        series_uid(study.root / "swi"): "routing",
        series_uid(extra / "swan"): "routing",
        series_uid(extra / "t2star"): "routing",
        series_uid(study.root / "phase"): "not routing",
        series_uid(study.root / "t1"): "not routing",
        series_uid(extra / "gre_t1"): "not routing",
        series_uid(extra / "swan_phase"): "not routing",
        series_uid(extra / "loc"): "not routing",
        series_uid(ours / "by_manufacturer"): "not routing",
        by_aet: "not routing",
    }
    seen = wait_for(
        lambda: (d := decisions(orthanc)).keys() >= expected.keys() and d,
        60,
        "a routing decision for every series",
    )
    assert {uid: seen[uid].split(" (")[0].split(":")[0] for uid in expected} == expected, seen
    assert "our own result" in seen[by_aet]
    assert "our own result" in seen[series_uid(ours / "by_manufacturer")]

    wait_for(lambda: jobs_done(orthanc), 60, "Orthanc's store jobs to finish")
    assert {j["State"] for j in orthanc.get("/jobs?expand")} == {"Success"}
    got = {str(dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in received.iterdir()}
    assert got == {uid for uid, d in expected.items() if d == "routing"}
    n_routed = len(list((study.root / "swi").iterdir())) + 2 * small.array.shape[0]
    assert len(list(received.iterdir())) == n_routed


@pytest.mark.timeout(600)
def test_study_stored_in_orthanc_comes_back_with_seg_and_sr(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    orthanc, api, study, _ = processed_study(procs, tmp_path)
    modalities = orthanc.series_modalities()
    assert sorted(modalities.values()) == ["MR", "MR", "MR", "SEG", "SR"]

    [seg_id] = [
        s["ID"]
        for s in orthanc.get("/series?expand")
        if s["MainDicomTags"].get("Modality") == "SEG"
    ]
    [sr_id] = [
        s["ID"] for s in orthanc.get("/series?expand") if s["MainDicomTags"].get("Modality") == "SR"
    ]
    seg = dcmread(_file(orthanc, seg_id))
    sr = dcmread(_file(orthanc, sr_id))
    assert seg.SOPClassUID == SEG
    assert seg.StudyInstanceUID == sr.StudyInstanceUID == study.study_instance_uid
    assert {s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence} == {study.swi_series_uid}
    assert sr_cmb_count(sr) == (study.n_cmbs, study.n_cmbs)

    # The viewer's path: the DICOMweb plugin lists the results in the study.
    qido = httpx.get(
        f"{orthanc.url}/dicom-web/studies/{study.study_instance_uid}/series", timeout=10
    ).json()
    assert {s["00080060"]["Value"][0] for s in qido} == {"MR", "SEG", "SR"}

    # Loop protection: Orthanc saw our SEG and SR become stable and did not route them.
    result_uids = {seg.SeriesInstanceUID, sr.SeriesInstanceUID}
    seen = wait_for(
        lambda: (d := decisions(orthanc)).keys() >= result_uids and d,
        30,
        "the routing decision on our results",
    )
    for uid in result_uids:
        assert seen[uid].startswith("not routing"), seen[uid]
    wait_for(lambda: jobs_done(orthanc), 30, "Orthanc's store jobs to finish")
    jobs = httpx.get(api + "/jobs", headers={"X-API-Key": KEY}, timeout=10).json()["jobs"]
    assert [j["n_instances"] for j in jobs] == [len(list((study.root / "swi").iterdir()))]
    assert jobs[0]["state"] == "delivered"


def _file(orthanc: Orthanc, series_id: str) -> Path:
    [instance] = orthanc.get(f"/series/{series_id}")["Instances"]
    data = httpx.get(f"{orthanc.url}/instances/{instance}/file", timeout=10).content
    path = Path(orthanc.proc.log).parent / f"{instance}.dcm"
    path.write_bytes(data)
    return path
