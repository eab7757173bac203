"""The candidate classifier stage: cubes around candidates, scores, rejections, the pipeline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.candidate_classifier import (
    REJECT_REASON,
    candidate_threshold,
    classify_candidates,
    extract_patches,
    parse_unet_spacing,
    score_patches,
    symmetric_views,
    unet_spacing,
)
from model.errors import InputError, ModelError
from model.onnx_model import ModelMetadata, OnnxModel, default_model_path
from model.pipeline import PipelineOptions, load_classifier, process
from model.preprocess import prepare
from model.series_writer import StudyMeta, write_series
from model.types import Detection, DetectionStatus, Volume
from tests.helpers.lesion_phantom import dot_volume
from tests.helpers.onnx_factory import (
    expected_classifier_score,
    make_test_model,
    oblique_affine,
    sphere_phantom,
)

PATCH = (12, 12, 12)
#: a gain that keeps the test classifier's scores of the dot phantom off 0 and 1
GAIN = 0.2


def _detection(n: int, centre: np.ndarray, probability: float = 0.6) -> Detection:
    return Detection(
        id=n,
        center_lps_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
        diameter_mm=3.0,
        volume_mm3=14.0,
        probability=probability,
    )


def _classifier_file(
    tmp_path: Path, name: str, metadata: dict[str, str] | None = None, input_channels: int = 1
) -> Path:
    return make_test_model(
        tmp_path / name,
        task="cmb_candidate_classification",
        patch_size=PATCH,
        metadata=metadata,
        input_channels=input_channels,
    )


def test_patches_are_centred_on_the_nearest_voxel_of_an_oblique_grid() -> None:
    affine = oblique_affine(spacing=(1.5, 0.8, 0.8))
    array = np.arange(20 * 22 * 24, dtype=np.float32).reshape(20, 22, 24)
    volume = Volume(array, affine)
    points = [(5, 6, 7), (10, 11, 12)]
    lps = volume.index_to_lps(np.asarray(points, dtype=float) + 0.3)  # off-grid: rounds down
    cubes = extract_patches(volume, lps, (5, 6, 7))
    assert cubes.shape == (2, 1, 5, 6, 7)
    for cube, (k, j, i) in zip(cubes, points, strict=True):
        assert cube[0, 2, 3, 3] == array[k, j, i]
        np.testing.assert_array_equal(cube[0], array[k - 2 : k + 3, j - 3 : j + 3, i - 3 : i + 4])


def test_patches_outside_the_volume_hold_its_minimum() -> None:
    array = np.full((10, 10, 10), 5.0, dtype=np.float32)
    array[0, 0, 0] = -3.0
    volume = Volume(array, np.eye(4))
    cubes = extract_patches(volume, [(0.0, 0.0, 0.0), (500.0, -900.0, 40.0)], (4, 4, 4))
    corner = cubes[0, 0]
    np.testing.assert_array_equal(corner[:2], -3.0)  # slices -2 and -1: outside
    np.testing.assert_array_equal(corner[2:, 2:, 2:], array[:2, :2, :2])  # (0,0,0) at the centre
    np.testing.assert_array_equal(cubes[1], -3.0)
    assert extract_patches(volume, np.zeros((0, 3)), (4, 4, 4)).shape == (0, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="patch size"):
        extract_patches(volume, [(0.0, 0.0, 0.0)], (4, 0, 4))


def test_classifier_scores_blobs_high_and_rejects_uniform_tissue(tmp_path: Path) -> None:
    affine = oblique_affine(spacing=(1.0, 1.0, 1.0))
    blob = affine[:3, :3] @ np.array([15.0, 16.0, 14.0]) + affine[:3, 3]
    flat = affine[:3, :3] @ np.array([30.0, 30.0, 30.0]) + affine[:3, 3]
    volume = sphere_phantom((40, 40, 40), affine, [blob], [2.5], noise=0.0)
    path = make_test_model(
        tmp_path / "classifier.onnx",
        task="cmb_candidate_classification",
        patch_size=PATCH,
        threshold=0.5,
    )
    model = OnnxModel.load(path, device="cpu")
    assert candidate_threshold(model) == pytest.approx(0.3)
    detections = [_detection(1, blob, 0.9), _detection(2, flat, 0.7)]
    classify_candidates(volume, detections, model)

    prepared = prepare(volume, model.metadata)
    cubes = extract_patches(prepared, [blob, flat], PATCH)
    expected = [expected_classifier_score(c[0]) for c in cubes]
    assert [d.probability for d in detections] == pytest.approx(expected, abs=1e-5)
    assert expected[0] > 0.5 > expected[1]
    assert [d.unet_probability for d in detections] == [0.9, 0.7]
    assert detections[0].kept
    assert detections[1].status is DetectionStatus.REJECTED
    assert detections[1].reject_reason == REJECT_REASON
    assert detections[1].to_json()["unet_probability"] == 0.7


def test_a_classifier_that_declares_an_input_filter_scores_filtered_cubes(
    tmp_path: Path,
) -> None:
    """The classifier's own ``cmb.input_filter`` (``harvest --cube-filter``): its cubes are
    cut from the filtered image (the filter's depth: tests/model/test_preprocess.py)."""
    volume = dot_volume(0.5)
    centre = volume.index_to_lps(np.asarray([[3.0, 21.0, 21.0]]))[0]
    minimum = {"cmb.input_filter": json.dumps({"method": "inplane_minimum"})}
    cubes = {}
    for name, metadata in (("plain", None), ("filtered", minimum)):
        model = OnnxModel.load(_classifier_file(tmp_path, f"{name}.onnx", metadata), device="cpu")
        detections = [_detection(1, centre)]
        classify_candidates(volume, detections, model, threshold=0.0)
        cube = extract_patches(prepare(volume, model.metadata), [centre], PATCH)[0, 0]
        assert detections[0].probability == pytest.approx(expected_classifier_score(cube))
        cubes[name] = cube
    assert model.metadata.input_filter == {"method": "inplane_minimum"}
    assert not np.allclose(cubes["filtered"], cubes["plain"], atol=1e-3)


def test_a_classifier_with_an_extra_channel_scores_the_cube_beside_its_filtered_twin(
    tmp_path: Path,
) -> None:
    """``cmb.extra_channels`` (``harvest --extra-channel``): channel 0 is the cube as the
    plan prepares it, channel 1 the same cube from the image minimum-filtered in-plane."""
    volume = dot_volume(0.5)
    centre = volume.index_to_lps(np.asarray([[3.0, 21.0, 21.0]]))[0]
    minimum = {"method": "inplane_minimum"}
    path = make_test_model(
        tmp_path / "two.onnx",
        task="cmb_candidate_classification",
        patch_size=PATCH,
        metadata={"cmb.extra_channels": json.dumps([minimum])},
        input_channels=2,
        gain=GAIN,
    )
    model = OnnxModel.load(path, device="cpu")
    assert model.metadata.extra_channels == (minimum,)
    assert model.metadata.input_channels == 2
    assert [p.input_filter for p in model.metadata.channel_plans()] == [None, minimum]
    detections = [_detection(1, centre)]
    classify_candidates(volume, detections, model, threshold=0.0)
    plain = extract_patches(prepare(volume, model.metadata), [centre], PATCH)[0, 0]
    filtered_plan = dataclasses.replace(model.metadata, input_filter=minimum, extra_channels=())
    filtered = extract_patches(prepare(volume, filtered_plan), [centre], PATCH)[0, 0]
    assert not np.allclose(plain, filtered, atol=1e-3)
    expected = expected_classifier_score(np.stack([plain, filtered]), gain=GAIN)
    assert detections[0].probability == pytest.approx(expected, abs=1e-5)
    # the channels' order matters (channel c weighs c + 1 in the test model)
    swapped = expected_classifier_score(np.stack([filtered, plain]), gain=GAIN)
    assert abs(expected - swapped) > 0.01
    # with test-time augmentation: the mean over the 16 views, each moving both channels alike
    with_tta = [_detection(1, centre)]
    classify_candidates(volume, with_tta, model, threshold=0.0, tta=True)
    views = symmetric_views(np.stack([plain, filtered])[None])
    expected_tta = np.mean([expected_classifier_score(v[0], gain=GAIN) for v in views])
    assert with_tta[0].probability == pytest.approx(float(expected_tta), abs=1e-5)


def test_input_channels_must_agree_with_the_metadata(tmp_path: Path) -> None:
    minimum = json.dumps([{"method": "inplane_minimum"}])
    two_without = _classifier_file(tmp_path, "a.onnx", input_channels=2)
    with pytest.raises(ModelError, match=r"input must be \[N, 1, D, H, W\]"):
        OnnxModel.load(two_without, device="cpu")
    one_with = _classifier_file(tmp_path, "b.onnx", {"cmb.extra_channels": minimum})
    with pytest.raises(ModelError, match=r"input must be \[N, 2, D, H, W\]"):
        OnnxModel.load(one_with, device="cpu")
    seg = make_test_model(tmp_path / "seg.onnx", metadata={"cmb.extra_channels": minimum})
    with pytest.raises(ModelError, match="only a cmb_candidate_classification model"):
        OnnxModel.load(seg, device="cpu")
    for raw, message in (
        ('[{"method": "median"}]', "unknown input filter"),
        ('{"method": "inplane_minimum"}', "JSON list of input filters"),
        ("[1]", "JSON list of input filters"),
    ):
        bad = _classifier_file(tmp_path, "c.onnx", {"cmb.extra_channels": raw}, input_channels=2)
        with pytest.raises(ModelError, match=message):
            OnnxModel.load(bad, device="cpu")
    model = OnnxModel.load(
        _classifier_file(
            tmp_path, "d.onnx", {"cmb.extra_channels": "[null, " + minimum[1:]}, input_channels=3
        ),
        device="cpu",
    )
    assert model.metadata.extra_channels == (None, {"method": "inplane_minimum"})
    assert ModelMetadata.from_props(model.metadata.to_props()) == model.metadata
    with pytest.raises(ValueError, match=r"\[N, 3, D, H, W\]"):
        model.run(np.zeros((1, 1, *PATCH), np.float32))


def test_classifier_refuses_other_models_and_bad_metadata(tmp_path: Path) -> None:
    seg = OnnxModel.load(make_test_model(tmp_path / "seg.onnx"), device="cpu")
    with pytest.raises(ModelError, match="not cmb_candidate_classification"):
        score_patches(seg, np.zeros((1, 1, 12, 12, 12), np.float32))
    bare = make_test_model(
        tmp_path / "bare.onnx",
        task="cmb_candidate_classification",
        patch_size=PATCH,
        metadata={"cmb.candidate_threshold": "1.5"},
    )
    with pytest.raises(ModelError, match="not in"):
        candidate_threshold(OnnxModel.load(bare, device="cpu"))


def _study(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    affine = oblique_affine(spacing=(1.0, 1.0, 1.0))
    centres = [
        affine[:3, :3] @ np.array(c, float) + affine[:3, 3] for c in ((12, 14, 15), (26, 24, 25))
    ]
    volume = sphere_phantom((40, 40, 40), affine, centres, [2.0, 2.0], noise=1.0)
    write_series(volume, tmp_path / "study", study=StudyMeta.synthetic(7), flavour="siemens_swi")
    return tmp_path / "study", centres


def test_pipeline_runs_the_classifier_when_asked(tmp_path: Path) -> None:
    study, _ = _study(tmp_path)
    unet = make_test_model(tmp_path / "unet.onnx")
    classifier = make_test_model(
        tmp_path / "classifier.onnx", task="cmb_candidate_classification", patch_size=PATCH
    )
    common: dict[str, Any] = {"model_path": unet, "outputs": (), "location": "off"}
    (plain,) = process([study], tmp_path / "plain", PipelineOptions(**common, classifier="off"))
    (cascade,) = process(
        [study],
        tmp_path / "cascade",
        PipelineOptions(**common, classifier="on", classifier_model_path=classifier),
    )
    doc = json.loads(cascade.files["detections"].read_text())
    info = doc["candidate_classifier"]
    assert info["applied"] is True and info["candidate_threshold"] == pytest.approx(0.3)
    assert info["rejected"] == sum(d["reject_reason"] == "classifier" for d in doc["detections"])
    assert all(d["unet_probability"] is not None for d in doc["detections"])
    # the two spheres survive the classifier; the plain run does not record one
    assert len(cascade.result.kept) == len(plain.result.kept) == 2
    assert json.loads(plain.files["detections"].read_text())["candidate_classifier"] == {
        "applied": False,
        "reason": "switched off by the user",
    }


def test_the_unet_runs_on_the_grid_the_classifier_names(tmp_path: Path) -> None:
    """``cmb.unet_spacing_mm``: the cascade runs the U-Net there, as if that were its spacing."""
    study, _ = _study(tmp_path)
    unet = make_test_model(tmp_path / "unet.onnx")
    fine = make_test_model(tmp_path / "unet_fine.onnx", spacing_mm=(0.8, 0.8, 0.8))
    on_grid = _classifier_file(tmp_path, "grid.onnx", {"cmb.unet_spacing_mm": "[0.8, 0.8, 0.8]"})
    own = _classifier_file(tmp_path, "own.onnx")
    common: dict[str, Any] = {"outputs": (), "location": "off", "classifier": "on"}
    (cascade,) = process(
        [study],
        tmp_path / "a",
        PipelineOptions(**common, model_path=unet, classifier_model_path=on_grid),
    )
    (reference,) = process(
        [study],
        tmp_path / "b",
        PipelineOptions(**common, model_path=fine, classifier_model_path=own),
    )
    (plain,) = process(
        [study],
        tmp_path / "c",
        PipelineOptions(**common, model_path=unet, classifier_model_path=own),
    )
    np.testing.assert_array_equal(
        cascade.result.probability.array, reference.result.probability.array
    )
    assert not np.array_equal(cascade.result.probability.array, plain.result.probability.array)
    info = json.loads(cascade.files["detections"].read_text())["candidate_classifier"]
    assert info["unet_spacing_mm"] == [0.8, 0.8, 0.8]
    assert json.loads(plain.files["detections"].read_text())["candidate_classifier"][
        "unet_spacing_mm"
    ] == [1.0, 1.0, 1.0]
    assert unet_spacing(OnnxModel.load(own, device="cpu")) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [("[0.8, 0.8]", "3 spacings"), ("[0.8, 0, 0.8]", "3 spacings"), ("fine", "not a list")],
)
def test_a_bad_unet_grid_is_refused(raw: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        parse_unet_spacing(raw, "c.onnx")


def test_auto_runs_a_classifier_only_behind_its_own_unet(tmp_path: Path) -> None:
    unet_path = make_test_model(tmp_path / "unet.onnx")
    unet = OnnxModel.load(unet_path, device="cpu")
    other = _classifier_file(tmp_path, "other.onnx")
    ours = _classifier_file(
        tmp_path, "ours.onnx", {"cmb.unet": f"test 0 sha256:{unet.info.sha256}"}
    )
    model, why = load_classifier(PipelineOptions(classifier_model_path=other), unet)
    assert model is None and "another U-Net" in why
    model, _ = load_classifier(PipelineOptions(classifier_model_path=ours), unet)
    assert model is not None and model.path == ours
    model, why = load_classifier(
        PipelineOptions(classifier_model_path=tmp_path / "missing.onnx"), unet
    )
    assert model is None and "no classifier model" in why
    with pytest.raises(InputError, match="no classifier model"):
        load_classifier(
            PipelineOptions(classifier="on", classifier_model_path=tmp_path / "missing.onnx"),
            unet,
        )


def test_the_shipped_classifier_runs_behind_the_shipped_unet() -> None:
    # replacing one of the two files without the other would silently drop the second stage
    unet = OnnxModel.load(default_model_path(), device="cpu")
    classifier, why = load_classifier(PipelineOptions(), unet)
    assert classifier is not None, why
    assert classifier.metadata.task == "cmb_candidate_classification"
    assert classifier.metadata.spacing_mm == unet.metadata.spacing_mm
    assert classifier.metadata.normalization == unet.metadata.normalization
    assert 0.0 < candidate_threshold(classifier) < classifier.metadata.threshold < 1.0


def test_mars_rating_band_follows_the_score_that_decided(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model.location.plausibility as plausibility
    from model.location.rating import DEFINITE_CLASSIFIER, DEFINITE_UNET

    # the test parcellation labels the phantom by intensity: no thalami, so the
    # anatomy guard would (rightly) skip the filter; this test is about the band
    monkeypatch.setattr(
        plausibility,
        "check_anatomy",
        lambda _: plausibility.Plausibility(True, (10.0, 10.0), "test: taken as a brain"),
    )

    study, _ = _study(tmp_path)
    unet = make_test_model(tmp_path / "unet.onnx")
    classifier = make_test_model(
        tmp_path / "classifier.onnx", task="cmb_candidate_classification", patch_size=PATCH
    )
    parc = make_test_model(tmp_path / "parc.onnx", task="parcellation")
    common: dict[str, Any] = {
        "model_path": unet,
        "outputs": (),
        "location": "onnx",
        "parcellation_model_path": parc,
        "classifier_model_path": classifier,
    }
    bands = {}
    for mode in ("off", "on"):
        (out,) = process([study], tmp_path / mode, PipelineOptions(**common, classifier=mode))
        rating = json.loads(out.files["detections"].read_text())["location_filter"]["mars_rating"]
        bands[mode] = rating["definite_probability"]
    assert bands == {"off": DEFINITE_UNET, "on": DEFINITE_CLASSIFIER}


def test_symmetric_views_are_the_16_flips_and_inplane_swaps() -> None:
    from model.candidate_classifier import symmetric_views

    cube = np.random.default_rng(0).normal(size=(2, 1, 3, 4, 4)).astype(np.float32)
    views = list(symmetric_views(cube))
    assert len(views) == 16
    np.testing.assert_array_equal(views[0], cube)
    expected = []
    for c in (cube, cube.transpose(0, 1, 2, 4, 3)):
        for d in (slice(None), slice(None, None, -1)):
            for h in (slice(None), slice(None, None, -1)):
                for w in (slice(None), slice(None, None, -1)):
                    expected.append(c[:, :, d, h, w].tobytes())
    assert sorted(v.tobytes() for v in views) == sorted(expected)
    assert len({v.tobytes() for v in views}) == 16


def test_tta_follows_the_model_metadata(tmp_path: Path) -> None:
    from model.candidate_classifier import TTA_KEY, symmetric_views, uses_tta

    cubes = np.random.default_rng(1).normal(size=(3, 1, *PATCH)).astype(np.float32)
    plain_path = _classifier_file(tmp_path, "plain.onnx")
    tta_path = _classifier_file(tmp_path, "tta.onnx", {f"cmb.{TTA_KEY}": "flips_inplane_swap"})
    plain, tta = (OnnxModel.load(p, device="cpu") for p in (plain_path, tta_path))
    assert not uses_tta(plain) and uses_tta(tta)
    one_view = score_patches(plain, cubes)
    np.testing.assert_allclose(
        one_view, [expected_classifier_score(c[0]) for c in cubes], atol=1e-5
    )
    mean = np.mean([score_patches(plain, v) for v in symmetric_views(cubes)], axis=0)
    np.testing.assert_allclose(score_patches(tta, cubes), mean, atol=1e-6)
    np.testing.assert_allclose(score_patches(plain, cubes, tta=True), mean, atol=1e-6)
    np.testing.assert_allclose(score_patches(tta, cubes, tta=False), one_view, atol=1e-6)
    odd = _classifier_file(tmp_path, "odd.onnx", {f"cmb.{TTA_KEY}": "rotations"})
    with pytest.raises(ModelError, match="rotations"):
        score_patches(OnnxModel.load(odd, device="cpu"), cubes)
