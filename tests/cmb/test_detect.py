"""`cmb detect` end to end: generated DICOM study + test ONNX model -> schema-valid results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import SimpleITK as sitk

from model.series_writer import StudyMeta, write_series
from model.types import Volume
from model.volume import read_nifti, write_nifti
from tests.helpers.onnx_factory import make_test_model, sphere_phantom

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "detections.schema.json").read_text())

# An oblique, anisotropic SWI-like grid: 24 slices of 2 mm, 64 x 64 at 0.9 mm.
THETA = np.deg2rad(12.0)
ROW = np.array([np.cos(THETA), np.sin(THETA), 0.0])
COL = np.array([-np.sin(THETA), np.cos(THETA), 0.0])
NORMAL = np.cross(ROW, COL)
AFFINE = np.eye(4)
AFFINE[:3, 0] = NORMAL * 2.0
AFFINE[:3, 1] = COL * 0.9
AFFINE[:3, 2] = ROW * 0.9
AFFINE[:3, 3] = [-30.0, -25.0, -20.0]
SHAPE = (24, 64, 64)
CENTRES = [
    AFFINE[:3, :3] @ np.array(ijk) + AFFINE[:3, 3]
    for ijk in ([8.3, 20.2, 18.7], [12.0, 40.5, 44.1], [16.6, 22.0, 47.3])
]


#: The phantom is no brain: the location filter (tested on it below, and on anatomy
#: in tests/model/location) is off where a test checks the rest of the path.
PHANTOM = ("--location", "off")


def _cmb(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cmb.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=check,
    )


def _detect(source: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cmb("detect", source, "--out", out, "--model", model, *extra)


@pytest.fixture(scope="module")
def phantom() -> Volume:
    return sphere_phantom(SHAPE, AFFINE, CENTRES, [2.5, 2.0, 3.0], noise=2.0, seed=3)


@pytest.fixture(scope="module")
def test_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("model") / "dark_blob.onnx")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory, phantom: Volume) -> Path:
    root = tmp_path_factory.mktemp("study")
    meta = StudyMeta.synthetic(seed=11)
    write_series(
        phantom,
        root / "swi",
        flavour="siemens_swi",
        kind="magnitude",
        study=meta,
        series_number=3,
        echo_time_ms=20.0,
        field_strength_t=3.0,
        seed=1,
    )
    write_series(
        phantom,
        root / "phase",
        flavour="siemens_swi",
        kind="phase",
        study=meta,
        series_number=4,
        echo_time_ms=20.0,
        field_strength_t=3.0,
        seed=2,
    )
    t1 = phantom.with_array(np.full(SHAPE, 50.0, np.float32))
    write_series(t1, root / "t1", flavour="siemens_t1", study=meta, series_number=2, seed=4)
    return root


def test_detect_writes_schema_valid_results(
    tmp_path: Path, study_dir: Path, test_model: Path, phantom: Volume
) -> None:
    out = tmp_path / "out"
    proc = _detect(study_dir, out, test_model, "--outputs", "", *PHANTOM)
    assert proc.returncode == 0, proc.stderr
    folders = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert len(folders) == 1
    folder = folders[0]
    payload = json.loads((folder / "detections.json").read_text())
    jsonschema.validate(payload, SCHEMA)
    assert folder.name == payload["study_instance_uid"]
    assert "1 CMB" not in proc.stdout and "3 CMB(s) kept" in proc.stdout

    # The SWI magnitude was chosen; phase and T1 were rejected with reasons.
    sel = payload["series_selection"]
    assert sel["chosen"] == payload["series_instance_uid"]
    assert len(sel["rejected"]) == 2 and all(r["reason"] for r in sel["rejected"])
    assert payload["acquisition"]["sequence"] == "swi"
    assert payload["acquisition"]["echo_time_ms"] == pytest.approx(20.0)
    assert payload["acquisition"]["field_strength_t"] == pytest.approx(3.0)

    # One kept detection per sphere, at the right LPS centre.
    kept = [d for d in payload["detections"] if d["status"] == "kept"]
    assert len(kept) == 3
    for centre in CENTRES:
        dist = min(np.linalg.norm(np.asarray(d["center_lps_mm"]) - centre) for d in kept)
        assert dist < 1.0

    # The NIfTI maps are on the source grid in patient space, and labels match the ids.
    prob = read_nifti(folder / "probability.nii.gz")
    labels = read_nifti(folder / "labels.nii.gz")
    for vol in (prob, labels):
        assert vol.shape == phantom.shape
        np.testing.assert_allclose(vol.affine, phantom.affine, atol=1e-3)
    assert set(np.unique(labels.array).astype(int)) == {0} | {
        d["id"] for d in payload["detections"]
    }
    assert prob.array.min() >= 0.0 and prob.array.max() <= 1.0
    # NIfTI on disk is RAS: an independent check of the first voxel's position.
    img = sitk.ReadImage(str(folder / "probability.nii.gz"))
    assert np.allclose(img.GetOrigin(), phantom.affine[:3, 3], atol=1e-3)  # ITK reports LPS


def test_detect_is_deterministic_and_replaces_output(
    tmp_path: Path, study_dir: Path, test_model: Path
) -> None:
    out = tmp_path / "out"
    for _ in range(2):
        assert (
            _cmb(
                "detect", study_dir, "--out", out, "--model", test_model, "--outputs", ""
            ).returncode
            == 0
        )
    folders = list(out.iterdir())
    assert len(folders) == 1, "a rerun must replace, not add"


def test_force_series_and_threshold(tmp_path: Path, study_dir: Path, test_model: Path) -> None:
    import pydicom

    uid = pydicom.dcmread(next((study_dir / "swi").iterdir()), stop_before_pixels=True)[
        "SeriesInstanceUID"
    ].value
    voxels = {}
    for threshold in ("0.5", "0.95"):
        out = tmp_path / threshold
        proc = _cmb(
            "detect",
            study_dir,
            "--out",
            out,
            "--model",
            test_model,
            "--outputs",
            "",
            "--series",
            uid,
            "--threshold",
            threshold,
        )
        assert proc.returncode == 0, proc.stderr
        payload = json.loads(next(out.glob("*/detections.json")).read_text())
        assert payload["series_instance_uid"] == uid
        assert "forced" in payload["series_selection"]["reason"].lower()
        voxels[threshold] = sum(d["n_voxels"] for d in payload["detections"])
    assert 0 < voxels["0.95"] < voxels["0.5"]
    # An out-of-range threshold is refused with a one-line reason.
    proc = _cmb(
        "detect", study_dir, "--out", tmp_path / "x", "--model", test_model, "--threshold", "1.5"
    )
    assert proc.returncode == 2 and "threshold" in proc.stderr


def test_nifti_input(tmp_path: Path, phantom: Volume, test_model: Path) -> None:
    path = tmp_path / "swi.nii.gz"
    write_nifti(phantom, path)
    out = tmp_path / "out"
    proc = _detect(path, out, test_model, *PHANTOM)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(next(out.glob("*/detections.json")).read_text())
    jsonschema.validate(payload, SCHEMA)
    assert len([d for d in payload["detections"] if d["status"] == "kept"]) == 3
    assert not list(out.glob("*/*.dcm")), "NIfTI input has no DICOM source to reference"


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        ("missing_path", 2, "no such file"),
        ("truncated", 2, "trunc"),
        ("only_t1", 4, "no usable"),
        ("missing_slice", 3, "slice"),
        ("model_without_metadata", 5, "cmb.spacing_mm"),
    ],
)
def test_failures_give_one_line_and_no_output(
    tmp_path: Path,
    study_dir: Path,
    test_model: Path,
    phantom: Volume,
    case: str,
    code: int,
    needle: str,
) -> None:
    inputs: Path = study_dir
    model = test_model
    if case == "missing_path":
        inputs = tmp_path / "nope"
    elif case == "truncated":
        inputs = tmp_path / "trunc"
        inputs.mkdir()
        src = sorted((study_dir / "swi").iterdir())[0]
        (inputs / "x.dcm").write_bytes(src.read_bytes()[:-3000])
    elif case == "only_t1":
        inputs = study_dir / "t1"
    elif case == "missing_slice":
        inputs = tmp_path / "gap"
        write_series(phantom, inputs, flavour="siemens_swi", seed=9)
        files = sorted(inputs.iterdir(), key=lambda p: _position(p))
        files[len(files) // 2].unlink()
    elif case == "model_without_metadata":
        model = make_test_model(tmp_path / "bad.onnx", drop_keys=("cmb.spacing_mm",))
    out = tmp_path / "out"
    proc = _cmb("detect", inputs, "--out", out, "--model", model, "--outputs", "")
    assert proc.returncode == code, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0].lower() or needle in lines[0]
    assert not list(out.glob("*/detections.json")), "no partial output on failure"


def _position(path: Path) -> float:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    normal = np.cross(
        np.asarray(ds.ImageOrientationPatient[:3], float),
        np.asarray(ds.ImageOrientationPatient[3:], float),
    )
    return float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float)))


def test_detect_writes_dicom_results(tmp_path: Path, study_dir: Path, test_model: Path) -> None:
    import pydicom

    out = tmp_path / "out"
    proc = _detect(study_dir, out, test_model, "--outputs", "seg,sr,pdf,sc", *PHANTOM)
    assert proc.returncode == 0, proc.stderr
    folder = next(p for p in out.iterdir() if not p.name.startswith("."))
    payload = json.loads((folder / "detections.json").read_text())
    seg = pydicom.dcmread(folder / "seg.dcm")
    sr = pydicom.dcmread(folder / "sr.dcm")
    assert seg.Modality == "SEG"
    assert sr.Modality == "SR"
    for ds in (seg, sr):
        assert ds.StudyInstanceUID == payload["study_instance_uid"]
        assert ds.SeriesInstanceUID != payload["series_instance_uid"]
    kept = [d for d in payload["detections"] if d["status"] == "kept"]
    assert len(seg.SegmentSequence) == len(kept) == 3
    referenced = {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence}
    assert referenced == {payload["series_instance_uid"]}
    assert list(folder.glob("*.pdf")), "the human-readable report"
    assert len(list(folder.glob("sc*.dcm"))) + len(list(folder.glob("*key*.dcm"))) >= 1


def test_location_filter_is_not_applied_without_a_brain(
    tmp_path: Path, study_dir: Path, test_model: Path
) -> None:
    """A parcellation with no thalami is not believed: every candidate stays, unlocated.

    The test parcellation model labels the phantom by intensity, which gives no
    brain; the product path on anatomy is tested by tests/cmb/test_demo_command.py.
    """
    parc = make_test_model(tmp_path / "parc.onnx", task="parcellation")
    out = tmp_path / "out"
    location = ("--location", "onnx", "--parcellation-model", str(parc))
    proc = _detect(study_dir, out, test_model, "--outputs", "", *location)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(next(out.glob("*/detections.json")).read_text())
    jsonschema.validate(payload, SCHEMA)
    assert payload["location_filter"]["method"] == "onnx"
    assert payload["location_filter"]["reason"].startswith("not applied: no brain recognised")
    assert len(payload["detections"]) == 3
    assert all(d["status"] == "kept" and d["region"] is None for d in payload["detections"])
    assert "location" in payload["timings_s"]


def test_location_filter_off_is_recorded(tmp_path: Path, study_dir: Path, test_model: Path) -> None:
    out = tmp_path / "out"
    proc = _cmb(
        "detect",
        study_dir,
        "--out",
        out,
        "--model",
        test_model,
        "--outputs",
        "",
        "--location",
        "off",
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(next(out.glob("*/detections.json")).read_text())
    assert payload["location_filter"] == {"method": "off", "reason": "switched off by the user"}
    assert all(d["status"] == "kept" for d in payload["detections"])


def test_default_overlap_is_the_validated_one() -> None:
    """Every shipped number (docs/model-card.md) was measured at sliding-window overlap 0."""
    from cmb.cli import build_parser
    from cmb.commands.detect import pipeline_options
    from model.pipeline import PipelineOptions

    assert PipelineOptions().overlap == 0.0
    parse = build_parser().parse_args
    assert pipeline_options(parse(["detect", "in", "--out", "out"])).overlap == 0.0
    given = parse(["detect", "in", "--out", "out", "--overlap", "0.5"])
    assert pipeline_options(given).overlap == 0.5
