"""Sliding-window ONNX inference on a whole volume.

``prepare`` (resample + normalize, from the model's metadata) -> patches of the
model's patch size at a configurable overlap -> Gaussian importance blending
(patch centres weigh more than their borders, as in nnU-Net) -> optional flip
test-time augmentation (mean over the 8 combinations of axis flips) -> the
foreground channel (segmentation) or the argmax label (parcellation) ->
resampled back to the source grid of the input volume.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

from model.errors import ModelError
from model.onnx_model import OnnxModel
from model.preprocess import IntensityMap, prepare, resample_like
from model.types import Volume

Progress = Callable[[int, int], None]
FloatArray = npt.NDArray[np.float32]

#: Flip combinations used for test-time augmentation (axes of the 3D patch).
TTA_FLIPS: tuple[tuple[int, ...], ...] = tuple(
    axes for n in range(4) for axes in itertools.combinations((0, 1, 2), n)
)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of ``patch`` covering ``size`` with at least ``overlap``.

    Windows are spread evenly, the first at 0 and the last ending at ``size``
    (nnU-Net's step rule: target step ``patch * (1 - overlap)``).
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= patch:
        return [0]
    target_step = max(1.0, patch * (1.0 - overlap))
    n = math.ceil((size - patch) / target_step) + 1
    step = (size - patch) / (n - 1)
    return [round(step * i) for i in range(n)]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8) -> FloatArray:
    """Separable Gaussian weight map over a patch, 1 at the centre (sigma = patch / 8)."""
    axes = []
    for p in patch:
        x = np.arange(p, dtype=np.float64) - (p - 1) / 2.0
        sigma = max(p * sigma_scale, 1e-3)
        axes.append(np.exp(-(x**2) / (2 * sigma**2)))
    weight = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (weight / weight.max()).astype(np.float32)


def _pad_to(array: FloatArray, patch: Sequence[int]) -> tuple[FloatArray, tuple[slice, ...]]:
    """Pad (constant 0, both sides) every axis shorter than the patch; return the crop back."""
    pads = []
    for size, p in zip(array.shape, patch, strict=True):
        total = max(0, p - size)
        pads.append((total // 2, total - total // 2))
    crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, array.shape, strict=True))
    if not any(lo or hi for lo, hi in pads):
        return array, crop
    return np.pad(array, pads, mode="constant", constant_values=0.0), crop


def _batches(items: list[tuple[int, ...]], size: int) -> Iterator[list[tuple[int, ...]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sliding_window(
    array: npt.NDArray[np.float32],
    model: OnnxModel,
    *,
    overlap: float = 0.5,
    tta: bool = False,
    batch_size: int = 1,
    channels: slice | None = None,
    progress: Progress | None = None,
) -> FloatArray:
    """Run ``model`` over a normalized 3D ``array``; returns blended outputs ``[C, D, H, W]``.

    ``channels`` keeps only some output channels (saves memory for
    multi-channel models when only the foreground is needed).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    patch = model.metadata.patch_size
    padded, crop = _pad_to(np.asarray(array, dtype=np.float32), patch)
    starts = [window_starts(s, p, overlap) for s, p in zip(padded.shape, patch, strict=True)]
    positions = list(itertools.product(*starts))
    flips = TTA_FLIPS if tta else ((),)
    weight = gaussian_importance(patch)
    accum: FloatArray | None = None
    norm = np.zeros(padded.shape, dtype=np.float32)
    total, done = len(positions) * len(flips), 0
    for batch in _batches(positions, batch_size):
        windows = [
            tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True)) for start in batch
        ]
        x = np.stack([padded[w] for w in windows])[:, None]  # [B, 1, *patch]
        mean: FloatArray | None = None
        for axes in flips:
            flip_axes = tuple(a + 2 for a in axes)
            xin = np.flip(x, flip_axes) if axes else x
            out = model.run(np.ascontiguousarray(xin))
            if channels is not None:
                out = out[:, channels]
            if axes:
                out = np.flip(out, flip_axes)
            mean = out if mean is None else mean + out
            done += len(batch)
            if progress is not None:
                progress(done, total)
        if mean is None:  # pragma: no cover - flips is never empty
            raise RuntimeError("no TTA flip ran")
        mean = mean / np.float32(len(flips))
        if accum is None:
            accum = np.zeros((mean.shape[1], *padded.shape), dtype=np.float32)
        for w, pred in zip(windows, mean, strict=True):
            accum[(slice(None), *w)] += pred * weight
            norm[w] += weight
    if accum is None:  # pragma: no cover - positions is never empty
        raise RuntimeError("no window ran")
    accum /= norm[None]
    return np.ascontiguousarray(accum[(slice(None), *crop)])


def predict_probability(
    volume: Volume,
    model: OnnxModel,
    *,
    overlap: float = 0.5,
    tta: bool = False,
    batch_size: int = 1,
    spacing_mm: tuple[float, float, float] | None = None,
    progress: Progress | None = None,
    fixed_map: IntensityMap | None = None,
) -> Volume:
    """CMB probability map of ``volume`` on its own (source) grid, float32 in [0, 1].

    The CMB probability is the model's last output channel (channel 0 of a
    one-channel sigmoid model, channel 1 of a background/CMB softmax model).
    ``spacing_mm`` runs the network on another grid than its own
    ``cmb.spacing_mm`` (a cascade's setting: ``model.candidate_classifier.unet_spacing``).
    ``fixed_map`` normalizes with that map instead of this volume's own
    (a diagnostic: :class:`model.preprocess.IntensityMap`).
    """
    if model.metadata.task != "cmb_segmentation":
        raise ModelError(
            f"model {model.info.name} is a {model.metadata.task} model, not cmb_segmentation"
        )
    prepared = prepare(volume, model.metadata.on_grid(spacing_mm), fixed_map=fixed_map)
    probs = sliding_window(
        prepared.array,
        model,
        overlap=overlap,
        tta=tta,
        batch_size=batch_size,
        channels=slice(-1, None),
        progress=progress,
    )
    back = resample_like(prepared.with_array(probs[0]), volume, order=1)
    return volume.with_array(np.clip(back.array, 0.0, 1.0).astype(np.float32))


def predict_labels(
    volume: Volume,
    model: OnnxModel,
    *,
    overlap: float = 0.5,
    tta: bool = False,
    batch_size: int = 1,
    progress: Progress | None = None,
) -> Volume:
    """Parcellation of ``volume``: the argmax label id per voxel, on the source grid (int32).

    Channel ``c`` is the ``c``-th key of the model's ``cmb.labels``.  The argmax
    is taken on the model grid, then mapped to the source grid by nearest
    neighbour.
    """
    if model.metadata.task != "parcellation":
        raise ModelError(
            f"model {model.info.name} is a {model.metadata.task} model, not parcellation"
        )
    prepared = prepare(volume, model.metadata)
    probs = sliding_window(
        prepared.array, model, overlap=overlap, tta=tta, batch_size=batch_size, progress=progress
    )
    ids = np.asarray(model.metadata.label_ids, dtype=np.int32)
    if probs.shape[0] != len(ids):
        raise ModelError(
            f"model {model.info.name} outputs {probs.shape[0]} channels "
            f"but cmb.labels names {len(ids)}"
        )
    labels = ids[np.argmax(probs, axis=0)].astype(np.float32)
    back = resample_like(prepared.with_array(labels), volume, order=0)
    return volume.with_array(np.rint(back.array).astype(np.int32))
