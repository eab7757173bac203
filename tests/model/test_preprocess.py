"""Resampling geometry and intensity normalization."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from model.errors import ModelError
from model.onnx_model import OnnxModel
from model.preprocess import (
    IntensityMap,
    apply_input_filter,
    foreground_mask,
    inplane_minimum,
    intensity_map,
    minimum_footprint,
    normalize,
    prepare,
    resample_like,
    resample_to_spacing,
    validate_normalization,
)
from model.types import SliceRef, Volume
from tests.helpers.lesion_phantom import dot_volume
from tests.helpers.onnx_factory import make_test_model, oblique_affine

# An LPS-linear intensity: linear interpolation reproduces it exactly, so any
# geometric error (axis order, direction, half-voxel shift) shows up as a value error.
GRADIENT = np.array([0.7, -1.3, 2.1])


def ramp_volume(shape: tuple[int, int, int], affine: npt.NDArray[np.float64]) -> Volume:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    lps = idx @ affine[:3, :3].T + affine[:3, 3]
    return Volume(array=(lps @ GRADIENT + 5.0).astype(np.float32), affine=affine)


def ramp_at(volume: Volume) -> npt.NDArray[np.float64]:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), -1)
    result: npt.NDArray[np.float64] = volume.index_to_lps(idx.reshape(-1, 3)) @ GRADIENT + 5.0
    return result.reshape(volume.shape)


def corners_lps(volume: Volume) -> npt.NDArray[np.float64]:
    """LPS of the 8 outer corners of the voxel grid (index -0.5 and n-0.5)."""
    ranges = [(-0.5, n - 0.5) for n in volume.shape]
    return volume.index_to_lps(np.array(list(itertools.product(*ranges))))


@pytest.mark.parametrize(
    ("source_spacing", "target_spacing"),
    [((3.0, 0.8, 0.8), (1.0, 1.0, 1.0)), ((1.0, 1.0, 1.0), (2.0, 0.5, 1.5))],
)
def test_resample_keeps_extent_orientation_and_values(
    source_spacing: tuple[float, float, float], target_spacing: tuple[float, float, float]
) -> None:
    source = ramp_volume((12, 30, 30), oblique_affine(source_spacing))
    out = resample_to_spacing(source, target_spacing)
    np.testing.assert_allclose(out.spacing, target_spacing, rtol=1e-9)
    # Same orientation: unit axis directions unchanged.
    src_dirs = source.affine[:3, :3] / np.asarray(source.spacing)
    out_dirs = out.affine[:3, :3] / np.asarray(out.spacing)
    np.testing.assert_allclose(out_dirs, src_dirs, atol=1e-12)
    # Corner-aligned: the grid's outer corners stay where they were (extent divides evenly).
    np.testing.assert_allclose(corners_lps(out), corners_lps(source), atol=1e-6)
    # Values follow the LPS ramp (interior, away from the half-voxel border).
    inner = tuple(slice(2, -2) for _ in range(3))
    np.testing.assert_allclose(out.array[inner], ramp_at(out)[inner], atol=1e-3)
    assert out.array.dtype == np.float32


def test_resample_round_trip_returns_to_source_grid() -> None:
    source = ramp_volume((10, 20, 18), oblique_affine((2.5, 0.9, 0.9)))
    there = resample_to_spacing(source, (1.0, 1.0, 1.0))
    back = resample_like(there, source)
    assert back.shape == source.shape
    np.testing.assert_array_equal(back.affine, source.affine)
    inner = tuple(slice(1, -1) for _ in range(3))
    np.testing.assert_allclose(back.array[inner], source.array[inner], atol=1e-3)


def test_resample_same_spacing_is_identity_and_keeps_identity() -> None:
    refs = tuple(SliceRef(f"1.2.{k}", "1.2.840.10008.5.1.4.1.1.4") for k in range(6))
    source = Volume(
        array=np.random.default_rng(0).random((6, 7, 8)).astype(np.float32),
        affine=oblique_affine((1.0, 1.0, 1.0)),
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        slices=refs,
    )
    out = resample_to_spacing(source, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(out.array, source.array)
    np.testing.assert_array_equal(out.affine, source.affine)
    assert out.slices == refs
    moved = resample_to_spacing(source, (0.5, 1.0, 1.0))
    assert moved.series_instance_uid == "1.2.3.4"
    assert moved.slices == ()  # the grid changed: no per-slice references
    back = resample_like(moved, source)
    assert back.slices == refs


def test_nearest_resampling_keeps_label_values() -> None:
    labels = np.zeros((8, 16, 16), np.float32)
    labels[2:6, 4:12, 4:12] = 7
    labels[3:5, 6:10, 6:10] = 3
    source = Volume(array=labels, affine=oblique_affine((2.0, 1.0, 1.0)))
    out = resample_to_spacing(source, (1.0, 0.7, 0.7), order=0)
    assert set(np.unique(out.array)) == {0.0, 3.0, 7.0}
    with pytest.raises(ValueError, match="order"):
        resample_to_spacing(source, (1.0, 1.0, 1.0), order=2)


def test_zscore_over_mask() -> None:
    rng = np.random.default_rng(0)
    array = np.zeros((20, 20, 20), np.float32)
    array[5:15, 5:15, 5:15] = rng.normal(300, 40, (10, 10, 10))
    out = normalize(array, {"method": "zscore", "mask": "nonzero"})
    inside = out[5:15, 5:15, 5:15]
    assert abs(inside.mean()) < 1e-4
    assert abs(inside.std() - 1.0) < 1e-4
    # Background keeps its place on the same scale: (0 - mean) / std.
    assert out[0, 0, 0] == pytest.approx((0 - array[5:15, 5:15, 5:15].mean()) / 40, rel=0.05)


def test_percentile_zscore_clips_at_percentiles() -> None:
    array = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    spec = {"method": "percentile_zscore", "lower": 1.0, "upper": 99.0}
    out = normalize(array, spec)
    clipped = np.clip(array, np.percentile(array, 1), np.percentile(array, 99))
    np.testing.assert_allclose(out, (clipped - clipped.mean()) / clipped.std(), atol=1e-5)


def test_percentile_minmax_maps_to_unit_range() -> None:
    array = np.random.default_rng(2).normal(50, 10, (12, 12, 12)).astype(np.float32)
    out = normalize(array, {"method": "percentile_minmax", "lower": 5.0, "upper": 95.0})
    assert out.min() == 0.0
    assert out.max() == pytest.approx(1.0)
    assert np.mean(out == 0.0) == pytest.approx(0.05, abs=0.01)


def test_otsu_mask_separates_body_from_air() -> None:
    rng = np.random.default_rng(3)
    array = rng.normal(5, 2, (16, 16, 16)).astype(np.float32)
    array[4:12, 4:12, 4:12] += 200
    mask = foreground_mask(array, "otsu")
    expected = np.zeros_like(mask)
    expected[4:12, 4:12, 4:12] = True
    np.testing.assert_array_equal(mask, expected)


def _head_brighter_than_white_matter() -> npt.NDArray[np.float32]:
    """Air, a dark skull, and inside it a white-matter core in tissue twice as bright."""
    rng = np.random.default_rng(5)
    array = rng.normal(5, 2, (24, 24, 24)).astype(np.float32)  # air
    array[1:23, 1:23, 1:23] = rng.normal(80, 10, (22, 22, 22))  # skull
    array[2:22, 2:22, 2:22] = rng.normal(400, 10, (20, 20, 20))  # bright tissue
    array[8:16, 8:16, 8:16] = rng.normal(200, 10, (8, 8, 8))  # white matter
    array[11:13, 11:13, 11:13] = 60.0  # a CMB, darker than white matter
    return array


def test_otsu_leaves_dark_white_matter_out_and_its_clip_hides_a_cmb() -> None:
    """Why the ``head`` mask exists: the failure it mends, on a volume built to show it."""
    array = _head_brighter_than_white_matter()
    spec = {"method": "percentile_zscore", "lower": 0.5, "upper": 99.5, "mask": "otsu"}
    assert not foreground_mask(array, "otsu")[12, 12, 12]  # white matter is not "body"
    out = normalize(array, spec)
    assert out[12, 12, 12] == pytest.approx(out[9, 9, 9])  # CMB and white matter: one value


def test_head_mask_keeps_every_tissue_and_the_cmb_stays_darker() -> None:
    array = _head_brighter_than_white_matter()
    mask = foreground_mask(array, "head")
    expected = np.zeros_like(mask)
    expected[1:23, 1:23, 1:23] = True
    # every tissue voxel is in (the CMB's may not be); of the air only the noise's top tail may be
    expected[11:13, 11:13, 11:13] = False
    assert mask[expected].all()
    expected[11:13, 11:13, 11:13] = True
    assert mask[~expected].mean() < 0.02
    spec = {"method": "percentile_zscore", "lower": 0.5, "upper": 99.5, "mask": "head"}
    out = normalize(array, spec)
    white_matter = float(np.median(out[8:16, 8:16, 8:16]))
    assert out[12, 12, 12] < white_matter - 0.8  # the CMB is darker than white matter
    assert white_matter < out[4, 4, 4]  # and white matter darker than the bright tissue


def test_head_mask_of_prior_contrast_is_the_head_without_air() -> None:
    rng = np.random.default_rng(3)
    array = rng.normal(5, 2, (24, 24, 24)).astype(np.float32)  # air
    tissues = ((1, 40.0), (3, 120.0), (5, 200.0), (8, 240.0), (10, 400.0))  # bone ... CSF
    for margin, level in tissues:
        inner = slice(margin, 24 - margin)
        array[inner, inner, inner] = rng.normal(level, 8.0, (24 - 2 * margin,) * 3)
    mask = foreground_mask(array, "head")
    assert mask[3:21, 3:21, 3:21].all()  # muscle, white and grey matter, CSF
    air = np.ones(mask.shape, dtype=bool)
    air[1:23, 1:23, 1:23] = False
    assert mask[air].mean() < 0.05


def test_a_given_mask_replaces_the_specs(tmp_path: Path) -> None:
    array = _head_brighter_than_white_matter()
    spec = {"method": "zscore", "mask": "otsu"}
    inner = np.zeros(array.shape, dtype=bool)
    inner[8:16, 8:16, 8:16] = True
    found = intensity_map(array, spec, mask=inner)
    assert found.shift == pytest.approx(float(array[inner].astype(np.float64).mean()))
    assert found.scale == pytest.approx(float(array[inner].astype(np.float64).std()))
    with pytest.raises(ValueError, match="mask"):
        intensity_map(array, spec, mask=np.zeros(array.shape, dtype=bool))
    with pytest.raises(ValueError, match="mask"):
        intensity_map(array, spec, mask=inner[:-1])


def test_constant_image_normalizes_without_nan() -> None:
    array = np.full((4, 4, 4), 7.0, np.float32)
    for spec in (
        {"method": "zscore", "mask": "otsu"},
        {"method": "zscore", "mask": "head"},
        {"method": "percentile_zscore", "lower": 0.5, "upper": 99.5},
        {"method": "percentile_minmax", "lower": 0.5, "upper": 99.5, "mask": "nonzero"},
    ):
        out = normalize(array, spec)
        assert np.all(out == 0.0), spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "nope"}, "unknown method"),
        ({"lower": 1}, "unknown method"),
        ({"method": "percentile_zscore", "upper": 99}, "needs"),
        ({"method": "zscore", "scale": 2}, "does not take"),
        ({"method": "zscore", "mask": "brain"}, "mask"),
        ({"method": "percentile_zscore", "lower": 50, "upper": 50}, "lower < upper"),
        ({"method": "percentile_zscore", "lower": -1, "upper": 50}, "lower < upper"),
        ({"method": "percentile_zscore", "lower": "1", "upper": 50}, "lower < upper"),
    ],
)
def test_invalid_normalization_is_refused(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_normalization(spec)
    with pytest.raises(ValueError, match=message):
        normalize(np.zeros((2, 2, 2), np.float32), spec)


def test_prepare_uses_the_model_plan(tmp_path: Path) -> None:
    spec = {"method": "percentile_minmax", "lower": 0.0, "upper": 100.0, "mask": "all"}
    model = OnnxModel.load(
        make_test_model(tmp_path / "m.onnx", spacing_mm=(1.5, 1.0, 1.0), normalization=spec)
    )
    source = ramp_volume((8, 20, 20), oblique_affine((3.0, 0.5, 0.5)))
    out = prepare(source, model.metadata)
    np.testing.assert_allclose(out.spacing, (1.5, 1.0, 1.0), rtol=1e-9)
    assert out.shape == (16, 10, 10)
    assert out.array.min() == 0.0
    assert out.array.max() == pytest.approx(1.0)
    expected = normalize(resample_to_spacing(source, (1.5, 1.0, 1.0)).array, spec)
    np.testing.assert_array_equal(out.array, expected)


SPECS = (
    {"method": "zscore", "mask": "otsu"},
    {"method": "percentile_zscore", "lower": 0.5, "upper": 99.5, "mask": "otsu"},
    {"method": "percentile_zscore", "lower": 0.5, "upper": 99.5, "mask": "head"},
    {"method": "percentile_minmax", "lower": 2.0, "upper": 98.0, "mask": "all"},
)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s['method']}-{s['mask']}")
def test_a_volumes_intensity_map_is_what_normalize_applies(spec: dict[str, object]) -> None:
    rng = np.random.default_rng(4)
    array = rng.gamma(2.0, 100.0, (20, 24, 16)).astype(np.float32)
    found = intensity_map(array, spec)
    np.testing.assert_array_equal(found.apply(array), normalize(array, spec))  # to the bit
    if spec["method"] != "zscore":
        lo, hi = np.percentile(
            array[foreground_mask(array, str(spec["mask"]))],
            [
                spec["lower"],
                spec["upper"],
            ],
        )
        assert (found.lower, found.upper) == (lo, hi)
    # another volume's map is not this one's: the point of applying a fixed map
    brighter = intensity_map(array * 2.0 + 50.0, spec)
    assert not np.allclose(brighter.apply(array), found.apply(array))


def test_a_fixed_map_replaces_the_volumes_own_in_prepare(tmp_path: Path) -> None:
    spec = {"method": "percentile_zscore", "lower": 0.5, "upper": 99.5, "mask": "otsu"}
    model = OnnxModel.load(make_test_model(tmp_path / "m.onnx", normalization=spec))
    source = ramp_volume((8, 20, 20), oblique_affine((1.0, 1.0, 1.0)))
    fixed = IntensityMap(lower=-1.0, upper=5.0, shift=2.0, scale=4.0)
    out = prepare(source, model.metadata, fixed_map=fixed)
    grid = resample_to_spacing(source, model.metadata.spacing_mm).array
    np.testing.assert_allclose(out.array, (np.clip(grid, -1.0, 5.0) - 2.0) / 4.0, atol=1e-6)
    own = prepare(source, model.metadata)
    np.testing.assert_array_equal(own.array, normalize(grid, spec))


def test_resample_sheared_grid_gantry_tilt() -> None:
    """A tilted-gantry series has a slice step that is not normal to the rows and columns."""
    affine = oblique_affine((2.0, 1.0, 1.0))
    affine[:3, 0] += 0.4 * affine[:3, 1]  # shear: each slice shifts 0.4 mm along the rows
    source = ramp_volume((10, 20, 20), affine)
    out = resample_to_spacing(source, (1.0, 1.0, 1.0))
    inner = tuple(slice(2, -2) for _ in range(3))
    np.testing.assert_allclose(out.array[inner], ramp_at(out)[inner], atol=1e-3)
    back = resample_like(out, source)
    np.testing.assert_allclose(back.array[inner], source.array[inner], atol=1e-3)


# --------------------------------------------------------------------------- input filter

MINIMUM = {"method": "inplane_minimum"}


def test_minimum_footprint_covers_the_grid_in_plane_only() -> None:
    one = (1.0, 1.0, 1.0)
    assert minimum_footprint((2.0, 0.5, 0.5), one) == (1, 3, 3)
    assert minimum_footprint((2.0, 0.87, 0.7), one) == (1, 3, 3)
    assert minimum_footprint((1.0, 1.0, 1.0), one) == (1, 1, 1)  # no finer axis: unchanged
    assert minimum_footprint((3.0, 0.4, 1.2), one) == (1, 4, 1)
    assert minimum_footprint((0.5, 0.5, 0.5), (0.7, 0.7, 0.7)) == (1, 3, 3)  # slices never


def test_a_one_voxel_dot_stays_dark_on_the_1_mm_grid() -> None:
    plain = dot_volume(0.5)
    assert plain.spacing == (2.0, 0.5, 0.5)
    filtered = inplane_minimum(plain, (1.0, 1.0, 1.0))
    assert (filtered.array[3] == 0.0).sum() == 9  # the dot, 3 x 3 pixels
    assert filtered.array.shape == plain.array.shape
    # linear resampling to 1 mm reads the plain dot at a quarter of its depth in-plane (the
    # grids are half a source voxel apart), the filtered one at its full depth in-plane
    plain_min = resample_to_spacing(plain, (1.0, 1.0, 1.0)).array.min()
    filtered_min = resample_to_spacing(filtered, (1.0, 1.0, 1.0)).array.min()
    assert plain_min > 75.0
    assert filtered_min < 30.0
    same = dot_volume(1.0)
    assert inplane_minimum(same, (1.0, 1.0, 1.0)) is same
    assert apply_input_filter(plain, None, (1.0, 1.0, 1.0)) is plain


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "median"}, "unknown input filter"),
        ({"method": "inplane_minimum", "size": 3}, "does not take"),
        (["inplane_minimum"], "must be an object"),
    ],
)
def test_an_unknown_input_filter_is_refused(spec: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_input_filter(dot_volume(0.5), spec, (1.0, 1.0, 1.0))  # type: ignore[arg-type]


def test_prepare_applies_the_declared_filter_before_resampling(tmp_path: Path) -> None:
    spec = {"method": "percentile_minmax", "lower": 0.0, "upper": 100.0, "mask": "all"}
    metadata = {"cmb.input_filter": '{"method": "inplane_minimum"}'}
    declared = OnnxModel.load(
        make_test_model(tmp_path / "f.onnx", normalization=spec, metadata=metadata)
    ).metadata
    plain = OnnxModel.load(make_test_model(tmp_path / "p.onnx", normalization=spec)).metadata
    assert declared.input_filter == MINIMUM
    assert plain.input_filter is None
    source = dot_volume(0.5)
    seen = prepare(source, declared)
    one = (1.0, 1.0, 1.0)
    expected = normalize(resample_to_spacing(inplane_minimum(source, one), one).array, spec)
    np.testing.assert_array_equal(seen.array, expected)
    # under an identity map: the dot's depth on the 1 mm grid, full with the filter
    identity = IntensityMap()
    assert prepare(source, declared, fixed_map=identity).array.min() < 30.0
    assert prepare(source, plain, fixed_map=identity).array.min() > 75.0
    # on another grid (a cascade's cmb.unet_spacing_mm) the footprint follows that grid
    assert declared.on_grid((0.7, 0.7, 0.7)).input_filter == MINIMUM


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"method": "x"}', "unknown input filter"),
    ],
)
def test_a_bad_declared_filter_is_refused_at_load(tmp_path: Path, value: str, message: str) -> None:
    path = make_test_model(tmp_path / "b.onnx", metadata={"cmb.input_filter": value})
    with pytest.raises(ModelError, match=message):
        OnnxModel.load(path)
