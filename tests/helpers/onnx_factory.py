"""Small ONNX models with a known output, built with ``onnx.helper`` (no torch, no training).

``make_test_model`` writes a model that follows docs/model-format.md and whose
output is a closed-form function of its (normalized) input, so tests can
predict it with scipy:

* ``cmb_segmentation``: a fixed 3D centre-surround filter that responds to
  dark blobs, ``logit = gain * correlate(x, dark_blob_kernel()) + bias``,
  zero padding ("same" size), then ``sigmoid`` (C=1), a two-channel
  ``softmax`` whose channel 1 equals that sigmoid, or raw ``logits`` (C=1).
  The kernel sums to zero, so a uniform region gives ``sigmoid(bias)`` (about
  0.02 with the defaults), and a dark sphere of radius 2-3 voxels in a bright
  background gives a probability close to 1 at its centre.  It also responds,
  more weakly, on the dark side of a straight bright/dark edge: phantoms for
  end-to-end tests should be dark spheres inside a bright background that
  fills the volume.
* ``cmb_candidate_classification``: one convolution as large as the cube
  (``[N, 1, 1, 1, 1]`` out) comparing the cube's mean with the mean of its
  central 3x3x3 voxels, ``sigmoid(gain * (mean(cube) - mean(centre)) + bias)``:
  a candidate on a dark blob scores high, one in a uniform region
  ``sigmoid(bias)``.  The model has the extra key ``cmb.candidate_threshold``.
* ``parcellation``: a 1x1x1 convolution with C channels and softmax whose
  argmax is ``round(clip(x, 0, 1) * (C - 1))``: with ``percentile_minmax``
  normalization the label follows the intensity.

``expected_probability`` / ``expected_labels`` / ``expected_classifier_score``
compute the same with scipy/numpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from scipy import ndimage

from model.types import Volume

OPSET = 17
IR_VERSION = 8  # readable by every ONNX Runtime >= 1.14

DEFAULT_NORMALIZATION: dict[str, Any] = {
    "method": "percentile_zscore",
    "lower": 0.0,
    "upper": 99.9,
    "mask": "all",
}
DEFAULT_GAIN = 2.0
DEFAULT_BIAS = -4.0


def dark_blob_kernel(
    radius: int = 5, sigma_center: float = 1.0, sigma_surround: float = 2.5
) -> npt.NDArray[np.float32]:
    """Surround-minus-centre Gaussian kernel (sums to 0; positive response on dark blobs)."""
    r = np.arange(-radius, radius + 1, dtype=np.float64)
    d2 = r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2
    center = np.exp(-d2 / (2 * sigma_center**2))
    surround = np.exp(-d2 / (2 * sigma_surround**2))
    kernel = surround / surround.sum() - center / center.sum()
    return kernel.astype(np.float32)


def _sigmoid(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))).astype(np.float32)


def expected_probability(
    normalized: npt.NDArray[Any],
    *,
    gain: float = DEFAULT_GAIN,
    bias: float = DEFAULT_BIAS,
    radius: int = 5,
    sigma_center: float = 1.0,
    sigma_surround: float = 2.5,
) -> npt.NDArray[np.float32]:
    """What the segmentation test model outputs for one normalized 3D array (whole volume)."""
    kernel = dark_blob_kernel(radius, sigma_center, sigma_surround).astype(np.float64)
    response = ndimage.correlate(np.asarray(normalized, np.float64), kernel, mode="constant")
    return _sigmoid(gain * response + bias)


def expected_labels(normalized: npt.NDArray[Any], label_ids: list[int]) -> npt.NDArray[np.int32]:
    """What the parcellation test model's argmax gives, as label ids."""
    n = len(label_ids)
    idx = np.rint(np.clip(np.asarray(normalized, np.float64), 0.0, 1.0) * (n - 1)).astype(int)
    return np.asarray(label_ids, dtype=np.int32)[idx]


def _props(
    *,
    name: str,
    version: str,
    task: str,
    spacing_mm: tuple[float, float, float],
    patch_size: tuple[int, int, int],
    normalization: Mapping[str, Any],
    output: str,
    threshold: float,
    labels: Mapping[int, str],
) -> dict[str, str]:
    return {
        "cmb.format_version": "1",
        "cmb.name": name,
        "cmb.version": version,
        "cmb.task": task,
        "cmb.spacing_mm": json.dumps([float(s) for s in spacing_mm]),
        "cmb.patch_size": json.dumps([int(p) for p in patch_size]),
        "cmb.normalization": json.dumps(dict(normalization)),
        "cmb.output": output,
        "cmb.threshold": str(threshold),
        "cmb.labels": json.dumps({str(k): v for k, v in labels.items()}),
        "cmb.description": "test model built by tests/helpers/onnx_factory.py (fixed filter)",
    }


def _segmentation_graph(
    output: str, gain: float, bias: float, radius: int, sigma_center: float, sigma_surround: float
) -> tuple[list[onnx.NodeProto], list[TensorProto], int]:
    kernel = dark_blob_kernel(radius, sigma_center, sigma_surround) * np.float32(gain)
    if output == "softmax":
        weights = np.stack([np.zeros_like(kernel), kernel])[:, None]  # [2, 1, K, K, K]
        biases = np.array([0.0, bias], dtype=np.float32)
    else:
        weights = kernel[None, None]
        biases = np.array([bias], dtype=np.float32)
    inits = [
        numpy_helper.from_array(weights.astype(np.float32), "W"),
        numpy_helper.from_array(biases, "B"),
    ]
    conv_out = "logits" if output == "logits" else "conv"
    nodes = [helper.make_node("Conv", ["image", "W", "B"], [conv_out], pads=[radius] * 6)]
    if output == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["conv"], ["probability"]))
    elif output == "softmax":
        nodes.append(helper.make_node("Softmax", ["conv"], ["probability"], axis=1))
    return nodes, inits, int(weights.shape[0])


def classifier_kernel(patch_size: Sequence[int], gain: float) -> npt.NDArray[np.float32]:
    """Weights of the classifier test model: gain * (mean of cube - mean of central 3^3)."""
    size = tuple(int(p) for p in patch_size)
    kernel = np.full(size, 1.0 / float(np.prod(size)), dtype=np.float64)
    centre = tuple(slice(n // 2 - 1, n // 2 + 2) for n in size)
    kernel[centre] -= 1.0 / 27.0
    return (gain * kernel).astype(np.float32)


def expected_classifier_score(
    cube: npt.NDArray[Any], gain: float = DEFAULT_GAIN, bias: float = DEFAULT_BIAS
) -> float:
    """What the classifier test model gives for one normalized cube (``[D, H, W]``) or
    ``[C, D, H, W]`` cubes, channel ``c`` weighted ``c + 1`` (so that the channels' order
    shows in the score)."""
    cubes = cube[None] if cube.ndim == 3 else cube
    kernel = classifier_kernel(cubes.shape[1:], gain)
    logit = sum(float((c + 1) * (kernel * cubes[c]).sum()) for c in range(cubes.shape[0]))
    return float(_sigmoid(np.asarray(logit + bias)))


def _classifier_graph(
    patch_size: Sequence[int], gain: float, bias: float, input_channels: int
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    kernel = classifier_kernel(patch_size, gain)
    weights = np.stack([(c + 1) * kernel for c in range(input_channels)])[None]
    inits = [
        numpy_helper.from_array(weights.astype(np.float32), "W"),
        numpy_helper.from_array(np.array([bias], dtype=np.float32), "B"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "W", "B"], ["conv"]),
        helper.make_node("Sigmoid", ["conv"], ["probability"]),
    ]
    return nodes, inits


def _parcellation_graph(
    n_labels: int, slope: float
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    # logit_c = slope * (2 c y - c^2), y = clip(x, 0, 1) * (C - 1): argmax_c = round(y).
    c = np.arange(n_labels, dtype=np.float32)
    weights = (slope * 2 * c * (n_labels - 1)).reshape(n_labels, 1, 1, 1, 1).astype(np.float32)
    biases = (-slope * c**2).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.0, np.float32), "hi"),
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(biases, "B"),
    ]
    nodes = [
        helper.make_node("Clip", ["image", "lo", "hi"], ["clipped"]),
        helper.make_node("Conv", ["clipped", "W", "B"], ["conv"]),
        helper.make_node("Softmax", ["conv"], ["probability"], axis=1),
    ]
    return nodes, inits


def make_test_model(
    path: str | Path,
    *,
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    patch_size: tuple[int, int, int] = (32, 32, 32),
    normalization: Mapping[str, Any] | None = None,
    threshold: float = 0.5,
    task: str = "cmb_segmentation",
    output: str = "sigmoid",
    gain: float = DEFAULT_GAIN,
    bias: float = DEFAULT_BIAS,
    radius: int = 5,
    sigma_center: float = 1.0,
    sigma_surround: float = 2.5,
    labels: Mapping[int, str] | None = None,
    name: str = "test-dark-blob",
    version: str = "0.0.0-test",
    metadata: Mapping[str, str] | None = None,
    drop_keys: tuple[str, ...] = (),
    input_channels: int = 1,
) -> Path:
    """Write a test model to ``path`` and return the path.

    ``input_channels``: of a classifier's input (its ``cmb.extra_channels`` are the
    caller's to write into ``metadata``); channel ``c`` weighs ``c + 1``.

    ``metadata`` overrides/extends the ``cmb.*`` props (use it to write invalid
    values); ``drop_keys`` removes props (e.g. ``("cmb.spacing_mm",)``).
    """
    path = Path(path)
    if normalization is None:
        normalization = (
            DEFAULT_NORMALIZATION
            if task in ("cmb_segmentation", "cmb_candidate_classification")
            else {"method": "percentile_minmax", "lower": 0.0, "upper": 100.0, "mask": "all"}
        )
    if task == "cmb_segmentation":
        labels = labels or {0: "background", 1: "cmb"}
        nodes, inits, channels = _segmentation_graph(
            output, gain, bias, radius, sigma_center, sigma_surround
        )
        out_name = "logits" if output == "logits" else "probability"
    elif task == "parcellation":
        labels = labels or {
            0: "background",
            2: "Left-Cerebral-White-Matter",
            3: "Left-Cerebral-Cortex",
        }
        output = "softmax"
        nodes, inits = _parcellation_graph(len(labels), slope=50.0)
        channels = len(labels)
        out_name = "probability"
    elif task == "cmb_candidate_classification":
        labels = labels or {0: "not_cmb", 1: "cmb"}
        output = "sigmoid"
        nodes, inits = _classifier_graph(patch_size, gain, bias, input_channels)
        channels = 1
        out_name = "probability"
        metadata = {"cmb.candidate_threshold": "0.3", **(metadata or {})}
    else:
        raise ValueError(f"unknown task {task!r}")
    graph = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["N", input_channels, "D", "H", "W"]
            )
        ],
        [
            helper.make_tensor_value_info(
                out_name, TensorProto.FLOAT, ["N", channels, "D", "H", "W"]
            )
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnx_factory"
    )
    model.ir_version = IR_VERSION
    props = _props(
        name=name,
        version=version,
        task=task,
        spacing_mm=spacing_mm,
        patch_size=patch_size,
        normalization=normalization,
        output=output,
        threshold=threshold,
        labels=labels,
    )
    props.update(metadata or {})
    for key in drop_keys:
        props.pop(key, None)
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def oblique_affine(
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    angles_deg: tuple[float, float, float] = (10.0, -20.0, 30.0),
    origin: tuple[float, float, float] = (-40.0, 25.0, 12.0),
) -> npt.NDArray[np.float64]:
    """A (k, j, i) -> LPS affine with rotated axes and the given spacing (slice, row, col)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = (rz @ ry @ rx) * np.asarray(spacing, dtype=np.float64)
    affine[:3, 3] = origin
    return affine


def sphere_phantom(
    shape: Sequence[int],
    affine: npt.NDArray[np.float64],
    centres_lps: Sequence[npt.ArrayLike],
    radii_mm: Sequence[float],
    *,
    background: float = 100.0,
    sphere: float = 20.0,
    noise: float = 0.0,
    seed: int = 0,
    supersample: int = 3,
) -> Volume:
    """Dark spheres (LPS centres, radii in mm) in a bright background filling the volume.

    Voxels get the mean of ``supersample**3`` sub-samples (partial volume), so
    the spheres' centroids are not quantized to the grid.
    """
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    sub = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    inside = np.zeros(idx.shape[0], dtype=np.float64)
    linear, origin = affine[:3, :3], affine[:3, 3]
    for centre_like, radius in zip(centres_lps, radii_mm, strict=True):
        centre = np.asarray(centre_like, np.float64)
        c_idx = np.linalg.solve(linear, centre - origin)
        reach = radius / np.linalg.norm(linear, axis=0) + 2
        near = np.all(np.abs(idx - c_idx) <= reach, axis=1)
        pts = (idx[near][:, None, :] + sub[None]) @ linear.T + origin
        frac = (np.linalg.norm(pts - centre, axis=2) <= radius).mean(axis=1)
        inside[near] = np.maximum(inside[near], frac)
    array = background + (sphere - background) * inside.reshape(tuple(shape))
    if noise > 0:
        array = array + np.random.default_rng(seed).normal(0.0, noise, shape)
    return Volume(array=array.astype(np.float32), affine=np.asarray(affine, np.float64))
