"""The training configuration: one typed object, read from a JSON file, saved with every run.

A config file holds any subset of the fields below (nested by section); what
it leaves out takes the default.  Unknown keys are refused, so a typo cannot
silently train with a default.  ``config_hash`` (SHA-256 of the canonical JSON
of the *whole* resolved config) goes into the exported model's metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from model.preprocess import validate_input_filter, validate_normalization
from training.augment import AugmentConfig
from training.errors import TrainingInputError
from training.losses import LossConfig
from training.network import NetworkConfig, check_patch_size

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    """Where the cases come from (standardized layout folders, see training.datasets.layout)."""

    train: tuple[str, ...] = ()
    val: tuple[str, ...] = ()
    #: fraction of patches centred on a microbleed (foreground oversampling)
    fg_fraction: float = 0.5
    #: max voxels of random jitter of a foreground patch centre, per axis
    fg_jitter: int = 16
    #: at most this many validation cases are used (0 = all)
    max_val_cases: int = 0
    num_workers: int = 0
    #: threads that preprocess new cases (the start of a run and each rescan)
    prepare_workers: int = 1
    #: folder for preprocessed (resampled + normalized) cases; "" = <run>/cache
    cache_dir: str = ""
    #: re-read the folders each epoch and add new cases (a generator still filling the pool)
    rescan: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.fg_fraction <= 1.0:
            raise TrainingInputError(f"data.fg_fraction must be in [0, 1], got {self.fg_fraction}")
        if self.prepare_workers < 1:
            raise TrainingInputError(
                f"data.prepare_workers must be >= 1, got {self.prepare_workers}"
            )
        if self.num_workers < 0 or self.max_val_cases < 0 or self.fg_jitter < 0:
            raise TrainingInputError("data.num_workers, max_val_cases and fg_jitter must be >= 0")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-5
    epochs: int = 50
    steps_per_epoch: int = 100
    batch_size: int = 4
    grad_clip: float = 12.0
    #: "poly" (nnU-Net's (1 - t)^0.9) or "constant"
    schedule: str = "poly"
    #: seconds of training wall time (0 = no limit).  With a budget the run ends
    #: when it is spent, even mid-epoch, and "poly" runs on the larger of the
    #: step and the time fraction, so the rate reaches zero at the budget (a
    #: lease on a machine whose speed is not known in advance, such as a GPU).
    time_budget_s: float = 0.0

    def __post_init__(self) -> None:
        if self.time_budget_s < 0:
            raise TrainingInputError(f"optim.time_budget_s must be >= 0, got {self.time_budget_s}")
        if self.lr <= 0 or self.epochs <= 0 or self.steps_per_epoch <= 0 or self.batch_size <= 0:
            raise TrainingInputError(
                "optim.lr, epochs, steps_per_epoch and batch_size must be positive"
            )
        if self.schedule not in ("poly", "constant"):
            raise TrainingInputError(
                f"optim.schedule must be 'poly' or 'constant', got {self.schedule!r}"
            )


@dataclass(frozen=True)
class ValConfig:
    """Per-epoch detection validation on the fixed held-out set."""

    every: int = 1
    #: thresholds tried; the exported model stores the best one
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    #: the threshold is chosen to maximise recall at no more than this FP/scan
    max_fp_per_scan: float = 0.5
    overlap: float = 0.25
    #: the metric that selects the best checkpoint: "recall_at_fp" or "f1"
    select_by: str = "recall_at_fp"
    #: also measure, at each validation, the recall on this many training cases (the
    #: first by case id) at the lowest threshold: whether the network fits the data it
    #: trains on (U-Net 0.5.0 did not: docs/model-card.md); 0 = off
    fit_cases: int = 0

    def __post_init__(self) -> None:
        if self.every <= 0:
            raise TrainingInputError("val.every must be positive")
        if self.fit_cases < 0:
            raise TrainingInputError("val.fit_cases must be >= 0")
        if not self.thresholds or any(not 0.0 < t < 1.0 for t in self.thresholds):
            raise TrainingInputError("val.thresholds must be non-empty values in (0, 1)")
        if self.select_by not in ("recall_at_fp", "f1"):
            raise TrainingInputError(
                f"val.select_by must be recall_at_fp or f1, got {self.select_by!r}"
            )


@dataclass(frozen=True)
class TrainConfig:
    name: str = "cmb_unet"
    version: str = "0.1.0"
    seed: int = 0
    #: model spacing in mm along (slice, row, column); written into the ONNX metadata
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    patch_size: tuple[int, int, int] = (48, 48, 48)
    #: intensity normalization spec for model.preprocess (None = its default)
    normalization: dict[str, Any] | None = None
    #: filter of the source image before resampling (model.preprocess; None = none);
    #: written into the ONNX metadata as cmb.input_filter
    input_filter: dict[str, Any] | None = None
    amp: bool = True
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    val: ValConfig = field(default_factory=ValConfig)

    def __post_init__(self) -> None:
        check_patch_size(self.patch_size)
        if len(self.spacing_mm) != 3 or any(s <= 0 for s in self.spacing_mm):
            raise TrainingInputError(
                f"spacing_mm must be 3 positive numbers, got {self.spacing_mm}"
            )
        try:  # the product's own checks (ValueError) name what is wrong with a spec
            if self.normalization is not None:
                validate_normalization(self.normalization)
            if self.input_filter is not None:
                validate_input_filter(self.input_filter)
        except ValueError as e:
            raise TrainingInputError(f"bad config: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        out = _jsonable(dataclasses.asdict(self))
        if self.input_filter is None:
            # absent, not null: the hash of every config written before the key stays as it was
            del out["input_filter"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def config_hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Construct dataclass ``cls`` from ``data``, recursing into nested dataclasses."""
    if not isinstance(data, dict):
        raise TrainingInputError(f"config section {where or 'root'} must be an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TrainingInputError(
            f"unknown config key(s) {unknown} in {where or 'root'}; known: {sorted(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(cls(), name) if name in fields else None
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            kwargs[name] = _build(type(default), value, f"{where}.{name}".lstrip("."))
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TrainingInputError(f"bad config section {where or 'root'}: {e}") from e


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, data, "")


def load_config(path: str | Path) -> TrainConfig:
    """Read a JSON config file (any subset of TrainConfig's fields)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"config file {p} does not exist") from e
    except json.JSONDecodeError as e:
        raise TrainingInputError(f"config file {p} is not valid JSON: {e}") from e
    return config_from_dict(data)
