"""Second stage: a small 3D CNN scores each U-Net candidate (false-positive reduction).

The U-Net finds nearly every large microbleed at a low threshold but also
dozens of veins, calcifications and artefacts per scan.  Like the cascade of
Dou et al. (IEEE TMI 2016, the paper of the public DOU set), a second network
looks at a small cube centred on each candidate and gives the probability that
it is a microbleed.  The pipeline then:

1. extracts candidates from the U-Net map at the classifier's
   ``cmb.candidate_threshold`` (lower than a stand-alone U-Net threshold, so the
   cascade's recall ceiling is high);
2. resamples and normalizes the volume with the classifier's own plan
   (``model.preprocess.prepare``, the code training uses), cuts a
   ``cmb.patch_size`` cube around each candidate centre;
3. stores the U-Net maximum as ``Detection.unet_probability`` and the
   classifier's output as ``Detection.probability`` (the confidence every
   output reports), and rejects candidates below ``cmb.threshold`` with the
   reason ``classifier``.

**Test-time augmentation.**  A model whose metadata says ``cmb.tta =
flips_inplane_swap`` is run on 16 views of each cube (every flip of the three
axes, with and without swapping the two in-plane axes: the symmetries it was
trained with, ``training/classifier/train.py``) and its score is the mean of
the 16 probabilities.  Its ``cmb.threshold`` is chosen for that mean.  On the
shipped classifier the views halve the false positives at the same recall
(docs/model-card.md); they cost 16 runs of a 54 k-parameter network per
candidate.

**Input channels.**  A classifier whose metadata lists ``cmb.extra_channels``
reads one cube per channel around each candidate: the image prepared by its
plan, then the image prepared with each listed input filter instead
(``ModelMetadata.channel_plans``), e.g. the cube as acquired beside the cube
minimum-filtered in-plane, where a sub-voxel dot keeps its depth.

The model file is an ordinary ONNX model of this project's format
(``docs/model-format.md``) with ``cmb.task = "cmb_candidate_classification"``
and a ``[N, 1, 1, 1, 1]`` output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from model.errors import ModelError
from model.onnx_model import ModelMetadata, OnnxModel
from model.preprocess import prepare
from model.types import Detection, Volume

TASK = "cmb_candidate_classification"
#: ``Detection.reject_reason`` of candidates the classifier scores below its threshold.
REJECT_REASON = "classifier"
#: Metadata key (``cmb.`` prefix) of the U-Net threshold the cascade extracts candidates at.
CANDIDATE_THRESHOLD_KEY = "candidate_threshold"
#: Metadata key (``cmb.`` prefix) of the test-time augmentation the threshold was chosen with.
TTA_KEY = "tta"
#: Every flip of the three axes, with and without swapping the in-plane axes: 16 views.
TTA_FLIPS_INPLANE_SWAP = "flips_inplane_swap"
#: The values ``cmb.tta`` may take.
TTA_MODES = ("none", TTA_FLIPS_INPLANE_SWAP)
#: Metadata key (``cmb.`` prefix) of the U-Net the classifier was validated behind
#: (:func:`unet_identity`); ``auto`` runs the classifier only behind that file.
UNET_KEY = "unet"
#: Metadata key (``cmb.`` prefix) of the grid (mm, array order) the cascade runs the U-Net
#: on, when it is not the U-Net's own ``cmb.spacing_mm`` (:func:`unet_spacing`).
UNET_SPACING_KEY = "unet_spacing_mm"


def unet_identity(unet: OnnxModel, spacing_mm: Sequence[float] | None = None) -> str:
    """How a classifier file names the U-Net it belongs to: name, version and SHA-256.

    ``spacing_mm``, when it is not the U-Net's own spacing, is named too (the
    grid the U-Net ran on): candidates of another grid are other candidates.
    """
    identity = f"{unet.metadata.name} {unet.metadata.version} sha256:{unet.info.sha256}"
    if spacing_mm is not None and not np.allclose(spacing_mm, unet.metadata.spacing_mm):
        identity += _GRID_PREFIX + " x ".join(f"{float(v):g}" for v in spacing_mm) + _GRID_SUFFIX
    return identity


_GRID_PREFIX, _GRID_SUFFIX = " on a ", " mm grid"


def identity_grid(identity: str) -> tuple[float, float, float] | None:
    """The grid a :func:`unet_identity` names (None: the U-Net's own, or none named)."""
    if not identity.endswith(_GRID_SUFFIX) or _GRID_PREFIX not in identity:
        return None
    spacings = identity[: -len(_GRID_SUFFIX)].rsplit(_GRID_PREFIX, 1)[1].split(" x ")
    z, y, x = (float(v) for v in spacings)
    return (z, y, x)


def paired_with(classifier: OnnxModel, unet: OnnxModel) -> bool:
    """Whether ``classifier`` was validated behind exactly this U-Net file."""
    return f"sha256:{unet.info.sha256}" in classifier.metadata.extra.get(UNET_KEY, "")


def candidate_threshold(model: OnnxModel) -> float:
    """The U-Net threshold at which candidates are extracted for this classifier."""
    raw = model.metadata.extra.get(CANDIDATE_THRESHOLD_KEY)
    if raw is None:
        raise ModelError(f"classifier {model.info.name} lacks cmb.{CANDIDATE_THRESHOLD_KEY}")
    try:
        value = float(raw)
    except ValueError as e:
        raise ModelError(
            f"classifier {model.info.name}: cmb.{CANDIDATE_THRESHOLD_KEY} is not a number"
        ) from e
    if not 0.0 < value < 1.0:
        raise ModelError(
            f"classifier {model.info.name}: cmb.{CANDIDATE_THRESHOLD_KEY} {value} not in (0, 1)"
        )
    return value


def unet_spacing(model: OnnxModel) -> tuple[float, float, float] | None:
    """The grid the cascade runs the U-Net on (None: the U-Net's own spacing).

    A U-Net trained at 1 mm and run on a finer grid sees every object larger:
    microbleeds of 1-2 mm, one or two voxels at 1 mm, become candidates there
    (docs/model-card.md).  What the classifier learned to reject, its
    candidate threshold and its operating point belong to the candidates of
    that grid, so the grid is the classifier's setting, not the U-Net's.
    """
    return parse_unet_spacing(model.metadata.extra.get(UNET_SPACING_KEY), model.info.name)


def format_unet_spacing(spacing_mm: Sequence[float]) -> str:
    """The text of ``cmb.unet_spacing_mm`` for a grid (what :func:`parse_unet_spacing` reads)."""
    return json.dumps([float(v) for v in spacing_mm])


def parse_unet_spacing(raw: str | None, name: str) -> tuple[float, float, float] | None:
    """``cmb.unet_spacing_mm`` of the classifier ``name`` (None when absent); ModelError if bad."""
    if raw is None:
        return None
    try:
        values = json.loads(raw)
        spacing = tuple(float(v) for v in values)
    except (ValueError, TypeError) as e:
        raise ModelError(
            f"classifier {name}: cmb.{UNET_SPACING_KEY} {raw!r} is not a list of numbers"
        ) from e
    if len(spacing) != 3 or not all(0.0 < v < 20.0 for v in spacing):
        raise ModelError(
            f"classifier {name}: cmb.{UNET_SPACING_KEY} must be 3 spacings in mm "
            f"(0-20), got {raw!r}"
        )
    return (spacing[0], spacing[1], spacing[2])


def extract_patches(
    prepared: Volume, centres_lps_mm: npt.ArrayLike, size: Sequence[int]
) -> npt.NDArray[np.float32]:
    """Cubes of ``size`` voxels of ``prepared`` centred on each LPS point: ``[N, 1, *size]``.

    The centre voxel of a cube is the one nearest to the point (for an even
    size, the point falls between the two middle voxels, rounded down).
    Outside the volume the cube holds the volume's minimum (air after
    normalization).
    """
    centres = np.asarray(centres_lps_mm, dtype=np.float64).reshape(-1, 3)
    shape = np.asarray(size, dtype=np.int64)
    if shape.shape != (3,) or np.any(shape < 1):
        raise ValueError(f"patch size must be 3 positive integers, got {size}")
    out = np.empty((centres.shape[0], 1, *shape.tolist()), dtype=np.float32)
    if centres.shape[0] == 0:
        return out
    array = np.asarray(prepared.array, dtype=np.float32)
    pad = int(shape.max())
    padded = np.pad(array, pad, mode="constant", constant_values=float(array.min()))
    index = np.rint(prepared.lps_to_index(centres)).astype(np.int64)
    # keep far-away points inside the padded array (their cube is all background)
    start = np.clip(index - shape // 2 + pad, 0, np.asarray(padded.shape) - shape)
    for n, (k, j, i) in enumerate(start):
        out[n, 0] = padded[k : k + shape[0], j : j + shape[1], i : i + shape[2]]
    return out


def prepare_channels(volume: Volume, metadata: ModelMetadata) -> list[Volume]:
    """``volume`` prepared for each input channel of a classifier (one without extra channels)."""
    return [prepare(volume, plan) for plan in metadata.channel_plans()]


def extract_channel_patches(
    prepared: Sequence[Volume], centres_lps_mm: npt.ArrayLike, size: Sequence[int]
) -> npt.NDArray[np.float32]:
    """:func:`extract_patches` of each prepared channel, side by side: ``[N, C, *size]``."""
    if not prepared:
        raise ValueError("at least one prepared volume is needed")
    return np.concatenate([extract_patches(p, centres_lps_mm, size) for p in prepared], axis=1)


def uses_tta(model: OnnxModel) -> bool:
    """Whether the model's threshold was chosen on test-time-augmented scores."""
    raw = model.metadata.extra.get(TTA_KEY, "none")
    if raw not in TTA_MODES:
        raise ModelError(
            f"classifier {model.info.name}: cmb.{TTA_KEY} {raw!r} is not one of {TTA_MODES}"
        )
    return raw == TTA_FLIPS_INPLANE_SWAP


def symmetric_views(patches: npt.NDArray[np.float32]) -> Iterator[npt.NDArray[np.float32]]:
    """The 16 views of ``[N, C, D, H, W]`` cubes: 8 flips of (D, H, W), each with H and W swapped
    and not (the first view is the cubes themselves)."""
    for swap in (False, True):
        base = np.swapaxes(patches, 3, 4) if swap else patches
        for flips in range(8):
            axes = tuple(ax for bit, ax in enumerate((2, 3, 4)) if flips >> bit & 1)
            yield np.ascontiguousarray(np.flip(base, axis=axes) if axes else base)


def score_patches(
    model: OnnxModel,
    patches: npt.NDArray[np.float32],
    *,
    batch_size: int = 64,
    tta: bool | None = None,
) -> npt.NDArray[np.float32]:
    """Classifier probability of each ``[N, C, D, H, W]`` patch (C: the model's input
    channels): ``[N]``.

    ``tta``: the mean over :func:`symmetric_views`; ``None`` follows the model's
    metadata (``cmb.tta``), which is what its threshold was chosen with.
    """
    if model.metadata.task != TASK:
        raise ModelError(f"model {model.info.name} is a {model.metadata.task} model, not {TASK}")
    if tta is None:
        tta = uses_tta(model)
    if tta:
        views = [
            score_patches(model, v, batch_size=batch_size, tta=False)
            for v in symmetric_views(patches)
        ]
        return np.mean(views, axis=0).astype(np.float32)
    scores = [
        model.run(patches[n : n + batch_size]).reshape(-1)
        for n in range(0, patches.shape[0], batch_size)
    ]
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)


def classify_candidates(
    volume: Volume,
    detections: list[Detection],
    model: OnnxModel,
    *,
    threshold: float | None = None,
    tta: bool | None = None,
) -> None:
    """Score ``detections`` (in place) and reject those below ``threshold``.

    ``threshold`` defaults to the classifier's ``cmb.threshold``, ``tta`` to
    its ``cmb.tta`` (:func:`score_patches`).  Candidates already rejected keep
    their first reason but get a score too.
    """
    if not detections:
        return
    cut = model.metadata.threshold if threshold is None else threshold
    patches = extract_channel_patches(
        prepare_channels(volume, model.metadata),
        [d.center_lps_mm for d in detections],
        model.metadata.patch_size,
    )
    scores = score_patches(model, patches, tta=tta)
    for det, score in zip(detections, scores, strict=True):
        det.unet_probability = det.probability
        det.probability = float(np.clip(score, 0.0, 1.0))
        if det.kept and det.probability < cut:
            det.reject(REJECT_REASON)
