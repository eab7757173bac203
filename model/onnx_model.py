"""The ONNX model artifact: metadata contract, loading, execution provider, running.

The model file carries its own plan in ``metadata_props`` (see
``docs/model-format.md``): target spacing, patch size, intensity
normalization, what the output tensor holds, the threshold and the label
names.  The runtime reads everything from there, so a model cannot be served
with a preprocessing other than the one it was trained with.  A file without a
valid plan is refused at load with a :class:`~model.errors.ModelError` that
names the key at fault.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from model.errors import ModelError
from model.paths import WEIGHTS_DIR
from model.preprocess import validate_input_filter, validate_normalization
from model.types import ModelInfo

FORMAT_VERSION = "1"
PREFIX = "cmb."
TASKS = ("cmb_segmentation", "parcellation", "cmb_candidate_classification")
#: The task whose models may take more than one input channel (``cmb.extra_channels``).
CHANNELS_TASK = "cmb_candidate_classification"
OUTPUTS = ("sigmoid", "softmax", "logits")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_FILES = {
    "cmb_segmentation": "cmb_unet.onnx",
    "parcellation": "parcellation.onnx",
    "cmb_candidate_classification": "cmb_classifier.onnx",
}
REQUIRED_KEYS = (
    "format_version",
    "name",
    "version",
    "task",
    "spacing_mm",
    "patch_size",
    "normalization",
    "output",
    "threshold",
    "labels",
)
OPTIONAL_KEYS = (
    "input_filter",
    "extra_channels",
    "training_data_hash",
    "config_hash",
    "metrics",
    "trained_on",
    "description",
)


def _json(key: str, value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise ModelError(f"model metadata {PREFIX}{key} is not valid JSON: {value!r}") from e


def _object(key: str, value: str) -> dict[str, Any]:
    parsed = _json(key, value)
    if not isinstance(parsed, dict):
        raise ModelError(f"model metadata {PREFIX}{key} must be a JSON object")
    return parsed


def _filters(key: str, value: str) -> tuple[dict[str, Any] | None, ...]:
    parsed = _json(key, value)
    if not isinstance(parsed, list) or not all(v is None or isinstance(v, dict) for v in parsed):
        raise ModelError(
            f"model metadata {PREFIX}{key} must be a JSON list of input filters (objects or "
            f"null): {value!r}"
        )
    return tuple(parsed)


def _triple(key: str, value: str, kind: type) -> tuple[Any, Any, Any]:
    parsed = _json(key, value)
    if not isinstance(parsed, list) or len(parsed) != 3:
        raise ModelError(
            f"model metadata {PREFIX}{key} must be a JSON list of 3 numbers: {value!r}"
        )
    out = []
    for v in parsed:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ModelError(f"model metadata {PREFIX}{key} must hold numbers: {value!r}")
        if kind is int and float(v) != int(v):
            raise ModelError(f"model metadata {PREFIX}{key} must hold integers: {value!r}")
        if not math.isfinite(v) or v <= 0:
            raise ModelError(f"model metadata {PREFIX}{key} must hold positive numbers: {value!r}")
        out.append(kind(v))
    return (out[0], out[1], out[2])


@dataclass(frozen=True)
class ModelMetadata:
    """The plan of a model, parsed and validated from ``metadata_props``.

    ``spacing_mm`` and ``patch_size`` are in array order (slice, row, column).
    ``labels`` maps output channel value to name (``{0: "background", 1: "cmb"}``);
    for parcellation models the keys are the FreeSurfer label ids of the
    channels, in channel order.
    """

    name: str
    version: str
    task: str
    spacing_mm: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    normalization: dict[str, Any]
    output: str
    threshold: float
    labels: dict[int, str]
    format_version: str = FORMAT_VERSION
    #: filter applied to the source image before resampling (model.preprocess); None: none
    input_filter: dict[str, Any] | None = None
    #: further input channels (candidate classifiers only): the image prepared with each of
    #: these input filters instead of ``input_filter`` (None: as acquired), in channel order
    extra_channels: tuple[dict[str, Any] | None, ...] = ()
    training_data_hash: str | None = None
    config_hash: str | None = None
    metrics: dict[str, Any] | None = None
    trained_on: str | None = None
    description: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise ModelError(
                f"model metadata {PREFIX}format_version is {self.format_version!r}; "
                f"this runtime reads format {FORMAT_VERSION!r}"
            )
        if not self.name:
            raise ModelError(f"model metadata {PREFIX}name is empty")
        if not self.version:
            raise ModelError(f"model metadata {PREFIX}version is empty")
        if self.task not in TASKS:
            raise ModelError(f"model metadata {PREFIX}task {self.task!r} is not one of {TASKS}")
        if self.output not in OUTPUTS:
            raise ModelError(
                f"model metadata {PREFIX}output {self.output!r} is not one of {OUTPUTS}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ModelError(f"model metadata {PREFIX}threshold {self.threshold} is not in [0, 1]")
        if len(self.labels) < 1:
            raise ModelError(f"model metadata {PREFIX}labels is empty")
        try:
            validate_normalization(self.normalization)
        except ValueError as e:
            raise ModelError(f"model metadata {PREFIX}normalization: {e}") from e
        if self.input_filter is not None:
            try:
                validate_input_filter(self.input_filter)
            except ValueError as e:
                raise ModelError(f"model metadata {PREFIX}input_filter: {e}") from e
        if self.extra_channels and self.task != CHANNELS_TASK:
            raise ModelError(
                f"model metadata {PREFIX}extra_channels: only a {CHANNELS_TASK} model takes "
                f"further input channels, this is a {self.task} model"
            )
        for n, spec in enumerate(self.extra_channels):
            if spec is None:
                continue
            try:
                validate_input_filter(spec)
            except ValueError as e:
                raise ModelError(f"model metadata {PREFIX}extra_channels[{n}]: {e}") from e

    @property
    def input_channels(self) -> int:
        """Channels of the network's input: the prepared image, then one per extra channel."""
        return 1 + len(self.extra_channels)

    def channel_plans(self) -> list[ModelMetadata]:
        """One plan per input channel: this one, then this one with each extra channel's
        input filter (what ``model.preprocess.prepare`` makes of the image for that channel)."""
        return self.with_input_filters([self.input_filter, *self.extra_channels])

    def with_input_filters(self, filters: Sequence[dict[str, Any] | None]) -> list[ModelMetadata]:
        """This plan once per input filter (None: the image as acquired), one channel each."""
        return [replace(self, input_filter=spec, extra_channels=()) for spec in filters]

    def on_grid(self, spacing_mm: tuple[float, float, float] | None) -> ModelMetadata:
        """This plan run on another grid (a cascade's ``cmb.unet_spacing_mm``); None: as is."""
        return self if spacing_mm is None else replace(self, spacing_mm=spacing_mm)

    @property
    def label_ids(self) -> list[int]:
        """Label ids in channel order."""
        return list(self.labels)

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        """Parse ``metadata_props`` (``cmb.*`` keys, all values strings)."""
        values = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
        for key in REQUIRED_KEYS:
            if key not in values:
                raise ModelError(f"model metadata lacks the required key {PREFIX}{key}")
        normalization = _object("normalization", values["normalization"])
        labels_raw = _object("labels", values["labels"])
        try:
            labels = {int(k): str(v) for k, v in labels_raw.items()}
        except ValueError as e:
            raise ModelError(f"model metadata {PREFIX}labels keys must be integers") from e
        try:
            threshold = float(values["threshold"])
        except ValueError as e:
            raise ModelError(
                f"model metadata {PREFIX}threshold is not a number: {values['threshold']!r}"
            ) from e
        metrics = _object("metrics", values["metrics"]) if "metrics" in values else None
        input_filter = (
            _object("input_filter", values["input_filter"]) if "input_filter" in values else None
        )
        extra_channels = (
            _filters("extra_channels", values["extra_channels"])
            if "extra_channels" in values
            else ()
        )
        known = set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)
        return cls(
            format_version=values["format_version"],
            name=values["name"],
            version=values["version"],
            task=values["task"],
            spacing_mm=_triple("spacing_mm", values["spacing_mm"], float),
            patch_size=_triple("patch_size", values["patch_size"], int),
            normalization=normalization,
            output=values["output"],
            threshold=threshold,
            labels=labels,
            input_filter=input_filter,
            extra_channels=extra_channels,
            training_data_hash=values.get("training_data_hash"),
            config_hash=values.get("config_hash"),
            metrics=metrics,
            trained_on=values.get("trained_on"),
            description=values.get("description"),
            extra={k: v for k, v in values.items() if k not in known},
        )

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` that :meth:`from_props` reads back to an equal object."""
        props = {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "spacing_mm": json.dumps([float(s) for s in self.spacing_mm]),
            "patch_size": json.dumps([int(p) for p in self.patch_size]),
            "normalization": json.dumps(self.normalization, sort_keys=True),
            "output": self.output,
            "threshold": repr(float(self.threshold)),
            "labels": json.dumps({str(k): v for k, v in self.labels.items()}),
        }
        optional: dict[str, str | None] = {
            "input_filter": json.dumps(self.input_filter, sort_keys=True)
            if self.input_filter is not None
            else None,
            "extra_channels": json.dumps(list(self.extra_channels), sort_keys=True)
            if self.extra_channels
            else None,
            "training_data_hash": self.training_data_hash,
            "config_hash": self.config_hash,
            "metrics": json.dumps(self.metrics, sort_keys=True)
            if self.metrics is not None
            else None,
            "trained_on": self.trained_on,
            "description": self.description,
        }
        props.update({k: v for k, v in optional.items() if v is not None})
        props.update(self.extra)
        return {PREFIX + k: v for k, v in props.items()}


def default_model_path(task: str = "cmb_segmentation") -> Path:
    """The packaged model for ``task`` (``model/weights/``); ModelError if it is not there."""
    if task not in DEFAULT_FILES:
        raise ModelError(f"unknown model task {task!r}; expected one of {tuple(DEFAULT_FILES)}")
    path = WEIGHTS_DIR / DEFAULT_FILES[task]
    if not path.is_file():
        raise ModelError(
            f"no {task} model at {path}: train and export one (`cmb train`, `cmb export`) "
            "or pass --model PATH"
        )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def select_providers(device: str) -> list[str]:
    """Execution providers for ``device`` (auto: CUDA when ONNX Runtime has it, else CPU)."""
    if device not in DEVICES:
        raise ModelError(f"device {device!r} is not one of {DEVICES}")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda":
        if not has_cuda:
            raise ModelError(
                "device 'cuda' requested but ONNX Runtime has no CUDAExecutionProvider "
                f"(available: {', '.join(available)}); install the `gpu` extra "
                "(onnxruntime-gpu) or use --device cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto" and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel:
    """An ONNX Runtime session with the validated plan of its model."""

    def __init__(
        self,
        session: ort.InferenceSession,
        metadata: ModelMetadata,
        info: ModelInfo,
        path: Path,
    ) -> None:
        self.session = session
        self.metadata = metadata
        self.info = info
        self.path = path
        self.providers: list[str] = list(session.get_providers())
        inputs = session.get_inputs()
        outputs = session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelError(f"model {path} must have one input and at least one output")
        shape = inputs[0].shape
        channels = metadata.input_channels
        if len(shape) != 5 or (isinstance(shape[1], int) and shape[1] != channels):
            raise ModelError(
                f"model {path} input must be [N, {channels}, D, H, W] (its metadata's input "
                f"channels), got {shape}"
            )
        if len(outputs[0].shape) != 5:
            raise ModelError(f"model {path} output must be [N, C, D, H, W], got {outputs[0].shape}")
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        # A batch dimension exported as a fixed 1 is run one sample at a time.
        self._fixed_batch = isinstance(shape[0], int) and shape[0] == 1

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        device: str = "auto",
        threads: int | None = None,
    ) -> OnnxModel:
        """Load and validate a model; ``None`` loads the packaged segmentation model.

        ``device``: ``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``
        (ModelError when CUDA is not usable).  ``threads``: CPU intra-op threads
        (ONNX Runtime's default when None).
        """
        model_path = Path(path) if path is not None else default_model_path()
        if not model_path.is_file():
            raise ModelError(f"model file {model_path} does not exist")
        if threads is not None and threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        try:
            proto = onnx.load(str(model_path), load_external_data=False)
        except Exception as e:  # onnx raises DecodeError and others: all mean "not a model"
            raise ModelError(f"{model_path} is not a readable ONNX model: {e}") from e
        props = {p.key: p.value for p in proto.metadata_props}
        try:
            metadata = ModelMetadata.from_props(props)
        except ModelError as e:
            raise ModelError(f"{model_path}: {e}") from e
        providers = select_providers(device)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception hierarchy
            raise ModelError(f"ONNX Runtime cannot load {model_path}: {e}") from e
        if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            raise ModelError(
                "device 'cuda' requested but ONNX Runtime could not start the CUDA provider "
                "(check the CUDA/cuDNN libraries); use --device cpu"
            )
        info = ModelInfo(
            name=metadata.name, version=metadata.version, sha256=file_sha256(model_path)
        )
        return cls(session, metadata, info, model_path)

    @property
    def uses_cuda(self) -> bool:
        return "CUDAExecutionProvider" in self.providers

    def run(self, batch: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Run ``[N, channels, D, H, W]`` through the network (one channel but for a classifier
        with ``cmb.extra_channels``); probabilities ``[N, C, D, H, W]``."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        channels = self.metadata.input_channels
        if x.ndim != 5 or x.shape[1] != channels:
            raise ValueError(f"model input must be [N, {channels}, D, H, W], got {x.shape}")
        if self._fixed_batch and x.shape[0] != 1:
            return np.concatenate([self.run(x[n : n + 1]) for n in range(x.shape[0])], axis=0)
        (raw,) = self.session.run([self.output_name], {self.input_name: x})
        out = np.asarray(raw, dtype=np.float32)
        if self.metadata.output == "logits":
            out = _sigmoid(out) if out.shape[1] == 1 else _softmax(out)
        return out


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def _softmax(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def load_cached(path: str | Path, *, device: str = "auto", threads: int | None = None) -> OnnxModel:
    """:meth:`OnnxModel.load`, once per file version, device and thread count.

    A worker runs many studies: the small models are loaded once, not per
    study.  The key holds the file's size and modification time, so a model
    file replaced in place (new weights installed) is loaded again instead of
    the old network running under the new file's name.
    """
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except OSError as e:
        raise ModelError(f"model file {resolved} does not exist") from e
    return _load_version(str(resolved), stat.st_mtime_ns, stat.st_size, device, threads)


@functools.lru_cache(maxsize=8)
def _load_version(
    path: str, mtime_ns: int, size: int, device: str, threads: int | None
) -> OnnxModel:
    return OnnxModel.load(path, device=device, threads=threads)
