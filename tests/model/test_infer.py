"""Sliding-window inference, blending, TTA and the way back to the source grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy import ndimage

from model.candidates import extract_candidates
from model.errors import ModelError
from model.infer import (
    gaussian_importance,
    predict_labels,
    predict_probability,
    sliding_window,
    window_starts,
)
from model.onnx_model import OnnxModel
from model.preprocess import normalize, prepare
from model.types import Volume
from tests.helpers.onnx_factory import (
    expected_labels,
    expected_probability,
    make_test_model,
    oblique_affine,
    sphere_phantom,
)


@pytest.fixture(scope="module")
def steep_model(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    """bias 0: outputs spread over (0, 1), so blending errors are visible."""
    path = make_test_model(tmp_path_factory.mktemp("m") / "steep.onnx", bias=0.0)
    return OnnxModel.load(path, device="cpu")


@pytest.fixture(scope="module")
def blob_model(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    return OnnxModel.load(make_test_model(tmp_path_factory.mktemp("m") / "blob.onnx"))


def rough(shape: tuple[int, int, int], seed: int = 0) -> npt.NDArray[np.float32]:
    noise = np.random.default_rng(seed).normal(0, 1, shape)
    return (ndimage.gaussian_filter(noise, 1.0) * 10).astype(np.float32)


@pytest.mark.parametrize(
    ("size", "patch", "overlap"),
    [(100, 32, 0.5), (64, 32, 0.0), (33, 32, 0.5), (200, 48, 0.75), (32, 32, 0.9), (10, 32, 0.5)],
)
def test_window_starts_cover_evenly(size: int, patch: int, overlap: float) -> None:
    starts = window_starts(size, patch, overlap)
    assert starts[0] == 0
    assert starts[-1] == max(0, size - patch)
    steps = np.diff(starts)
    assert np.all(steps > 0)
    assert np.all(steps <= patch * (1 - overlap) + 1)  # at least the requested overlap
    assert np.all(steps <= patch)  # no gaps


def test_window_starts_refuse_bad_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        window_starts(100, 32, 1.0)
    with pytest.raises(ValueError, match="overlap"):
        window_starts(100, 32, -0.1)


def test_gaussian_importance_peaks_at_centre() -> None:
    w = gaussian_importance((32, 16, 31))
    assert w.shape == (32, 16, 31)
    assert w.max() == pytest.approx(1.0, abs=1e-2)
    assert w[16, 8, 15] == w.max()
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1], rtol=1e-6)
    assert w.min() > 0  # every voxel of a window contributes


def test_sliding_window_equals_whole_volume_and_blends_without_seams(
    steep_model: OnnxModel,
) -> None:
    x = rough((32, 64, 40))
    expected = expected_probability(x, bias=0.0)  # one convolution over the whole volume
    blended = sliding_window(x, steep_model, overlap=0.5)[0]
    assert blended.shape == x.shape
    np.testing.assert_allclose(blended, expected, atol=3e-3)
    # Without overlap the two windows along the rows meet at row 32, where each
    # sees zero padding instead of its neighbour: a seam the blending removes.
    tiled = sliding_window(x, steep_model, overlap=0.0)[0]
    seam = np.abs(tiled - expected)[:, 27:37].max()
    assert seam > 0.05
    assert np.abs(blended - expected)[:, 27:37].max() < seam / 20


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_overlap_sets_number_of_windows(steep_model: OnnxModel, overlap: float) -> None:
    x = rough((40, 70, 52), seed=1)
    calls: list[tuple[int, int]] = []
    out = sliding_window(
        x, steep_model, overlap=overlap, progress=lambda d, t: calls.append((d, t))
    )
    n_windows = np.prod([len(window_starts(s, 32, overlap)) for s in x.shape])
    assert calls[-1] == (n_windows, n_windows)
    assert [d for d, _ in calls] == list(range(1, n_windows + 1))
    np.testing.assert_allclose(out[0], expected_probability(x, bias=0.0), atol=5e-3)


def test_more_overlap_runs_more_windows() -> None:
    counts = [
        np.prod([len(window_starts(s, 32, ov)) for s in (40, 70, 52)]) for ov in (0.0, 0.5, 0.75)
    ]
    assert counts[0] < counts[1] < counts[2]


def test_volume_smaller_than_patch_is_padded(steep_model: OnnxModel) -> None:
    x = rough((12, 20, 40), seed=2)  # smaller than 32 along two axes
    out = sliding_window(x, steep_model)[0]
    assert out.shape == x.shape
    # Zero padding in the window = zero padding of the whole-volume convolution.
    np.testing.assert_allclose(out, expected_probability(x, bias=0.0), atol=3e-3)


def test_tta_on_a_symmetric_model_equals_no_tta(steep_model: OnnxModel) -> None:
    x = rough((20, 36, 30), seed=3)
    calls: list[tuple[int, int]] = []
    plain = sliding_window(x, steep_model)
    tta = sliding_window(x, steep_model, tta=True, progress=lambda d, t: calls.append((d, t)))
    np.testing.assert_allclose(tta, plain, atol=1e-5)
    n_windows = np.prod([len(window_starts(s, 32, 0.5)) for s in x.shape])
    assert calls[-1] == (8 * n_windows, 8 * n_windows)


def test_batch_size_does_not_change_the_result(steep_model: OnnxModel) -> None:
    x = rough((20, 50, 44), seed=4)
    one = sliding_window(x, steep_model, batch_size=1)
    three = sliding_window(x, steep_model, batch_size=3)
    np.testing.assert_allclose(three, one, atol=1e-6)
    with pytest.raises(ValueError, match="batch_size"):
        sliding_window(x, steep_model, batch_size=0)


def test_predict_probability_on_model_grid_matches_the_filter(blob_model: OnnxModel) -> None:
    source = Volume(array=rough((24, 40, 36), seed=5) + 50, affine=oblique_affine())
    prob = predict_probability(source, blob_model)
    assert prob.shape == source.shape
    np.testing.assert_array_equal(prob.affine, source.affine)
    assert prob.array.dtype == np.float32
    expected = expected_probability(normalize(source.array, blob_model.metadata.normalization))
    np.testing.assert_allclose(prob.array, expected, atol=3e-3)


@pytest.mark.parametrize("spacing", [(2.0, 0.7, 0.7), (1.0, 1.0, 1.0), (0.8, 1.2, 0.9)])
def test_phantom_spheres_are_found_at_their_lps_centres(
    blob_model: OnnxModel, spacing: tuple[float, float, float]
) -> None:
    """End to end: anisotropic oblique source -> model grid -> back -> one detection per sphere."""
    shape = tuple(round(48 / s) for s in spacing)
    affine = oblique_affine(spacing)
    middle = affine[:3, :3] @ (np.array(shape) / 2) + affine[:3, 3]
    centres = [middle + d for d in ([0, 0, 0], [12, -8, 5], [-10, 9, -11], [6, 12, -12])]
    radii = [2.0, 2.5, 3.0, 2.2]
    source = sphere_phantom(shape, affine, centres, radii, noise=4.0, seed=1)
    prob = predict_probability(source, blob_model, overlap=0.5)
    assert prob.shape == source.shape
    assert prob.array.min() >= 0.0
    assert prob.array.max() <= 1.0
    labels, detections = extract_candidates(prob, blob_model.metadata.threshold)
    assert labels.shape == source.shape
    assert len(detections) == len(centres)
    for centre in centres:
        dist = min(np.linalg.norm(np.subtract(d.center_lps_mm, centre)) for d in detections)
        assert dist < 0.6, (centre, dist)
    assert all(d.probability > 0.9 for d in detections)


def test_predict_probability_refuses_a_parcellation_model(tmp_path: Path) -> None:
    model = OnnxModel.load(make_test_model(tmp_path / "p.onnx", task="parcellation"))
    with pytest.raises(ModelError, match="cmb_segmentation"):
        predict_probability(Volume(array=rough((8, 8, 8)), affine=np.eye(4)), model)


def test_predict_labels_gives_label_ids_on_the_source_grid(tmp_path: Path) -> None:
    model = OnnxModel.load(
        make_test_model(tmp_path / "p.onnx", task="parcellation", spacing_mm=(1.0, 1.0, 1.0))
    )
    ids = model.metadata.label_ids
    array = np.zeros((16, 40, 20), np.float32)
    array[:, :, 7:14] = 50
    array[:, :, 14:] = 100
    source = Volume(array=array, affine=oblique_affine((1.0, 1.0, 1.0)))
    labels = predict_labels(source, model)
    assert labels.array.dtype == np.int32
    expected = expected_labels(prepare(source, model.metadata).array, ids)
    np.testing.assert_array_equal(labels.array, expected)
    assert set(np.unique(labels.array)) == set(ids)
    # A source at another spacing comes back on its own grid, nearest-neighbour labels only.
    coarse = Volume(array=array[::2], affine=oblique_affine((2.0, 1.0, 1.0)))
    coarse_labels = predict_labels(coarse, model, overlap=0.25)
    assert coarse_labels.shape == coarse.shape
    assert set(np.unique(coarse_labels.array)) <= set(ids)
    np.testing.assert_array_equal(coarse_labels.array[:, :, 16:], ids[-1])
    with pytest.raises(ModelError, match="parcellation"):
        predict_labels(source, OnnxModel.load(make_test_model(tmp_path / "s.onnx")))
