"""Preprocessing: resampling to the model grid and intensity normalization.

This module is THE preprocessing of the project: inference (``model.infer``)
and training (``training``) both call :func:`prepare` / :func:`normalize`, so a
network is always served with exactly the transform it was trained with.  The
transform is chosen by the model's metadata (``cmb.spacing_mm``,
``cmb.normalization``), never by a setting.

Resampling keeps the orientation of the source grid and aligns the outer
corners of the first voxel (the physical extent is preserved, as nnU-Net and
SimpleITK-based pipelines do), so a round trip source -> model grid -> source
maps every LPS point onto itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage as ndi

from model.types import Volume

if TYPE_CHECKING:
    from model.onnx_model import ModelMetadata

_INTERPOLATORS = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}
#: Otsu thresholds of each thresholding mask: the mask is above the lowest of them.
OTSU_LEVELS = {"otsu": 1, "head": 3}
MASKS = ("all", "nonzero", *OTSU_LEVELS)

FloatArray = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------- geometry


def _to_sitk(volume: Volume) -> sitk.Image:
    """Volume (array[k, j, i], affine on (k, j, i)) -> SimpleITK image (index x=i, y=j, z=k)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array, dtype=np.float32))
    _set_grid(image, volume.affine)
    return image


def _set_grid(image: sitk.Image, affine: npt.NDArray[np.float64]) -> None:
    steps = affine[:3, [2, 1, 0]]  # columns for sitk index axes x=i, y=j, z=k
    spacing = np.linalg.norm(steps, axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in (steps / spacing).ravel()])
    image.SetOrigin([float(o) for o in affine[:3, 3]])


def _grid_image(affine: npt.NDArray[np.float64], shape: tuple[int, int, int]) -> sitk.Image:
    """An empty SimpleITK image that only carries a target grid."""
    image = sitk.Image([shape[2], shape[1], shape[0]], sitk.sitkUInt8)
    _set_grid(image, affine)
    return image


def _resample(
    volume: Volume, affine: npt.NDArray[np.float64], shape: tuple[int, int, int], order: int
) -> Volume:
    if order not in _INTERPOLATORS:
        raise ValueError(
            f"interpolation order must be one of {sorted(_INTERPOLATORS)}, got {order}"
        )
    same_grid = shape == volume.shape and np.allclose(affine, volume.affine, rtol=0, atol=1e-6)
    if same_grid:
        array = np.asarray(volume.array, dtype=np.float32)
    else:
        out = sitk.Resample(
            _to_sitk(volume),
            _grid_image(affine, shape),
            sitk.Transform(),
            _INTERPOLATORS[order],
            0.0,
            sitk.sitkFloat32,
        )
        array = sitk.GetArrayFromImage(out)
    return Volume(
        array=array.astype(np.float32, copy=False),
        affine=np.array(affine, dtype=np.float64),
        study_instance_uid=volume.study_instance_uid,
        series_instance_uid=volume.series_instance_uid,
        slices=volume.slices if same_grid else (),
    )


def target_grid(
    volume: Volume, spacing_mm: tuple[float, float, float]
) -> tuple[npt.NDArray[np.float64], tuple[int, int, int]]:
    """Affine and shape of ``volume``'s extent resampled to ``spacing_mm`` (slice, row, col)."""
    old = np.asarray(volume.spacing, dtype=np.float64)
    new = np.asarray(spacing_mm, dtype=np.float64)
    if new.shape != (3,) or not np.all(new > 0):
        raise ValueError(f"spacing_mm must be 3 positive numbers, got {spacing_mm}")
    extent = np.asarray(volume.shape, dtype=np.float64) * old
    shape_arr = np.maximum(1, np.round(extent / new)).astype(int)
    shape = (int(shape_arr[0]), int(shape_arr[1]), int(shape_arr[2]))
    directions = volume.affine[:3, :3] / old
    affine = np.eye(4)
    affine[:3, :3] = directions * new
    # Outer corner of voxel 0 stays where it was: origin moves by half the spacing change.
    affine[:3, 3] = volume.affine[:3, 3] + directions @ ((new - old) / 2.0)
    return affine, shape


def resample_to_spacing(
    volume: Volume, spacing_mm: tuple[float, float, float], *, order: int = 1
) -> Volume:
    """Resample to ``spacing_mm`` (slice, row, col), same orientation, corner-aligned extent.

    ``order``: 0 nearest, 1 linear, 3 B-spline.  Returns ``volume`` values
    unchanged (as float32) when the spacing already matches.
    """
    affine, shape = target_grid(volume, spacing_mm)
    return _resample(volume, affine, shape, order)


def resample_like(volume: Volume, reference: Volume, *, order: int = 1) -> Volume:
    """Resample ``volume`` onto the grid of ``reference`` (0 outside ``volume``).

    The result carries the identity (UIDs, slice references) of ``reference``.
    """
    out = _resample(volume, reference.affine, reference.shape, order)
    return Volume(
        array=out.array,
        affine=reference.affine,
        study_instance_uid=reference.study_instance_uid,
        series_instance_uid=reference.series_instance_uid,
        slices=reference.slices,
    )


# --------------------------------------------------------------------------- intensity


def foreground_mask(array: npt.NDArray[Any], kind: str) -> npt.NDArray[np.bool_]:
    """Voxels that the normalization statistics are computed over.

    ``all``: every voxel; ``nonzero``: voxels != 0 (skull-stripped or masked
    input); ``otsu``: above the Otsu threshold (body vs air); ``head``: above
    the lowest of three Otsu thresholds (four intensity classes), every
    tissue but the darkest.  An empty mask falls back to every voxel.

    Why ``head``: when most of the head is brighter than white matter (a
    random tissue contrast; some SWI protocols), the single Otsu threshold
    falls between white matter and the bright tissues, so the ``otsu`` mask
    leaves white matter out and a percentile's lower clip lands above it,
    flattening white matter and every dark CMB in it to one value
    (docs/model-card.md, "The lower clip that hid CMBs").  The lowest of
    three thresholds separates air and bone from all tissue.
    """
    if kind not in MASKS:
        raise ValueError(f"unknown mask {kind!r}; expected one of {MASKS}")
    if kind == "all" or (kind in OTSU_LEVELS and float(array.max()) == float(array.min())):
        mask = np.ones(array.shape, dtype=bool)
    elif kind == "nonzero":
        mask = array != 0
    else:
        mask = _above_lowest_otsu(array, OTSU_LEVELS[kind])
    if not mask.any():
        mask = np.ones(array.shape, dtype=bool)
    return mask


def _above_lowest_otsu(array: npt.NDArray[Any], thresholds: int) -> npt.NDArray[np.bool_]:
    """Voxels above the lowest of ``thresholds`` Otsu thresholds (256-bin histogram)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    if thresholds == 1:
        # OtsuThreshold(image, insideValue, outsideValue): above threshold -> outside.
        return sitk.GetArrayFromImage(sitk.OtsuThreshold(image, 0, 1, 256)).astype(bool)
    otsu = sitk.OtsuMultipleThresholdsImageFilter()
    otsu.SetNumberOfThresholds(thresholds)
    otsu.SetNumberOfHistogramBins(256)
    return sitk.GetArrayFromImage(otsu.Execute(image)) > 0


@dataclass(frozen=True)
class IntensityMap:
    """What a normalization does to one volume: clip to [lower, upper], then (x - shift) / scale.

    Every method of :data:`NORMALIZATIONS` is such a map, its four numbers
    computed from the volume itself (:func:`intensity_map`).  Kept apart so a
    caller can apply another volume's map: ``training.contrast_ablation`` runs
    a random-contrast case with the map of the same head at prior contrast, to
    tell what the network cannot read from what the normalization shifted.
    """

    lower: float = -np.inf
    upper: float = np.inf
    shift: float = 0.0
    scale: float = 1.0

    def apply(self, array: npt.NDArray[Any]) -> FloatArray:
        values: npt.NDArray[Any] = np.asarray(array, dtype=np.float32)
        if np.isfinite(self.lower) or np.isfinite(self.upper):
            # float64 bounds, so float64 arithmetic from here: the numbers the
            # percentile methods have always produced, to the last bit
            values = np.clip(values, np.float64(self.lower), np.float64(self.upper))
        if self.scale == 0.0:  # a constant image under min-max: all zeros
            return np.zeros(values.shape, dtype=np.float32)
        return ((values - self.shift) / self.scale).astype(np.float32)


def _percentile_bounds(
    array: FloatArray, spec: Mapping[str, Any], mask: npt.NDArray[np.bool_]
) -> tuple[float, float]:
    lo, hi = np.percentile(array[mask], [float(spec["lower"]), float(spec["upper"])])
    return np.float64(lo), np.float64(hi)


def _zscore_map(
    values: FloatArray, mask: npt.NDArray[np.bool_], lower: float, upper: float
) -> IntensityMap:
    """Centre and scale by the mean and std of ``values[mask]`` (already clipped)."""
    inside = values[mask].astype(np.float64)
    mean = float(inside.mean())
    std = float(inside.std())
    if std < 1e-8 * max(1.0, abs(mean)):
        std = 1.0  # constant image: centre only
    return IntensityMap(lower, upper, mean, std)


def _zscore(array: FloatArray, spec: Mapping[str, Any], mask: Mask) -> IntensityMap:
    return _zscore_map(array, mask, -np.inf, np.inf)


def _percentile_zscore(array: FloatArray, spec: Mapping[str, Any], mask: Mask) -> IntensityMap:
    lo, hi = _percentile_bounds(array, spec, mask)
    return _zscore_map(np.clip(array, lo, hi), mask, lo, hi)


def _percentile_minmax(array: FloatArray, spec: Mapping[str, Any], mask: Mask) -> IntensityMap:
    lo, hi = _percentile_bounds(array, spec, mask)
    clipped = np.clip(array, lo, hi)
    low, high = float(clipped.min()), float(clipped.max())
    return IntensityMap(lo, hi, low, max(high - low, 0.0))


# name -> (function computing the map, required keys, optional keys)
NORMALIZATIONS: dict[
    str,
    tuple[
        Callable[[FloatArray, Mapping[str, Any], Mask], IntensityMap],
        set[str],
        set[str],
    ],
] = {
    "zscore": (_zscore, set(), {"mask"}),
    "percentile_zscore": (_percentile_zscore, {"lower", "upper"}, {"mask"}),
    "percentile_minmax": (_percentile_minmax, {"lower", "upper"}, {"mask"}),
}


def validate_normalization(spec: Mapping[str, Any]) -> None:
    """Raise ValueError naming what is wrong with a normalization spec."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"normalization must be an object, got {spec!r}")
    method = spec.get("method")
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(NORMALIZATIONS)}")
    _, required, optional = NORMALIZATIONS[method]
    keys = set(spec) - {"method"}
    if missing := required - keys:
        raise ValueError(f"method {method!r} needs {sorted(missing)}")
    if unknown := keys - required - optional:
        raise ValueError(f"method {method!r} does not take {sorted(unknown)}")
    if "mask" in spec and spec["mask"] not in MASKS:
        raise ValueError(f"mask {spec['mask']!r} is not one of {MASKS}")
    if "lower" in spec:
        lo, hi = spec["lower"], spec["upper"]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi))
        if not numbers or not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"percentiles need 0 <= lower < upper <= 100, got {lo}, {hi}")


def normalize(array: npt.NDArray[Any], spec: Mapping[str, Any]) -> FloatArray:
    """Apply the normalization ``spec`` (the model's ``cmb.normalization``) to ``array``.

    Statistics (percentiles, mean, std) come from the voxels of the spec's
    ``mask``; clipping and scaling apply to the whole array.
    """
    return intensity_map(array, spec).apply(array)


def intensity_map(
    array: npt.NDArray[Any],
    spec: Mapping[str, Any],
    *,
    mask: Mask | None = None,
) -> IntensityMap:
    """The map :func:`normalize` applies to ``array`` under ``spec``.

    ``mask`` computes the statistics over those voxels instead of the spec's
    mask (a diagnostic: ``training.normalization_shift`` compares a mask with
    the true brain's).
    """
    validate_normalization(spec)
    fn = NORMALIZATIONS[spec["method"]][0]
    values = np.asarray(array, dtype=np.float32)
    if mask is None:
        mask = foreground_mask(values, spec.get("mask", "all"))
    elif mask.shape != values.shape or not mask.any():
        raise ValueError(f"a mask of shape {values.shape} with a voxel in it is needed")
    return fn(values, spec, mask)


# --------------------------------------------------------------------------- input filter

#: The filters a model may declare in ``cmb.input_filter`` (``{"method": name}``).
INPUT_FILTERS = ("inplane_minimum",)


def validate_input_filter(spec: Mapping[str, Any]) -> None:
    """Raise ValueError naming what is wrong with an input filter spec."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"input filter must be an object, got {spec!r}")
    if spec.get("method") not in INPUT_FILTERS:
        raise ValueError(
            f"unknown input filter {spec.get('method')!r}; expected one of {INPUT_FILTERS}"
        )
    if unknown := set(spec) - {"method"}:
        raise ValueError(f"input filter {spec['method']!r} does not take {sorted(unknown)}")


def minimum_footprint(
    spacing_mm: tuple[float, float, float], grid_mm: tuple[float, float, float]
) -> tuple[int, int, int]:
    """Size per axis (slice, row, column) of the in-plane minimum filter for a model grid.

    ``ceil(grid / spacing) + 1`` voxels on each in-plane axis finer than the
    grid's, 1 elsewhere (the slice axis always): whatever the phase of the two
    grids, one linearly interpolated grid sample then reads only the filtered
    value at a dark dot, i.e. its darkest voxel.
    """

    def size(spacing: float, grid: float) -> int:
        return math.ceil(grid / spacing - 1e-6) + 1 if spacing < grid else 1

    return (1, size(spacing_mm[1], grid_mm[1]), size(spacing_mm[2], grid_mm[2]))


def inplane_minimum(volume: Volume, grid_mm: tuple[float, float, float]) -> Volume:
    """``volume`` minimum-filtered in-plane so that its dark dots survive resampling to ``grid_mm``.

    Why: linear resampling of a 0.5 mm series to a 1 mm grid averages a
    one-voxel CMB with its neighbours or steps over it (docs/model-card.md,
    "The shipped U-Net on a minimum-filtered input").  The price: every dark
    structure, veins included, thickens by the footprint less one voxel.
    """
    size = minimum_footprint(volume.spacing, grid_mm)
    if size == (1, 1, 1):
        return volume
    array = np.asarray(volume.array, dtype=np.float32)
    return volume.with_array(ndi.minimum_filter(array, size=size, mode="nearest"))


def apply_input_filter(
    volume: Volume, spec: Mapping[str, Any] | None, grid_mm: tuple[float, float, float]
) -> Volume:
    """The model's declared input filter (None: ``volume`` as is) for its grid ``grid_mm``."""
    if spec is None:
        return volume
    validate_input_filter(spec)
    return inplane_minimum(volume, grid_mm)


def on_model_grid(volume: Volume, metadata: ModelMetadata) -> Volume:
    """``volume`` filtered as the model declares and resampled to its grid (not normalized)."""
    filtered = apply_input_filter(volume, metadata.input_filter, metadata.spacing_mm)
    return resample_to_spacing(filtered, metadata.spacing_mm, order=1)


def prepare(
    volume: Volume, metadata: ModelMetadata, *, fixed_map: IntensityMap | None = None
) -> Volume:
    """Filter as declared, resample to the model spacing, normalize: what the network sees,
    in training too.

    ``fixed_map`` applies that map instead of the one the model's
    normalization computes from this volume (a diagnostic, see :class:`IntensityMap`).
    """
    resampled = on_model_grid(volume, metadata)
    if fixed_map is not None:
        return resampled.with_array(fixed_map.apply(resampled.array))
    return resampled.with_array(normalize(resampled.array, metadata.normalization))
