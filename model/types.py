"""The core types every stage of the pipeline speaks.

Geometry convention (used everywhere in the project):

* ``Volume.array`` is indexed ``array[k, j, i]`` = ``[slice, row, column]``, the
  order in which a DICOM series stacks its frames (and SimpleITK's
  ``GetArrayFromImage`` order).
* ``Volume.affine`` maps the index vector **in the same order as the array
  axes**, ``(k, j, i, 1)``, to DICOM patient coordinates (LPS, millimetres):
  ``lps = affine @ [k, j, i, 1]``.  Column 0 is the slice step (normal times
  slice spacing), column 1 the row step (ImageOrientationPatient[3:6] times
  PixelSpacing[0]), column 2 the column step (ImageOrientationPatient[0:3] times
  PixelSpacing[1]), column 3 the position of voxel (0, 0, 0).

Everything geometric downstream (candidate centres, SEG frames, evaluation
matching) is computed in LPS mm through this affine, never in the voxel
indices of one particular grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt


class SequenceKind(StrEnum):
    """What a series is, as far as CMB detection cares. Values are the JSON strings."""

    SWI = "swi"  # SWI magnitude (phase-mask enhanced), Siemens SWI, Philips SWIp, GE SWAN
    T2STAR = "t2star"  # T2*-weighted GRE magnitude, 2D or 3D, single or multi-echo
    MINIP = "minip"  # minimum / maximum intensity projection
    PHASE = "phase"  # phase, field map, QSM
    LOCALIZER = "localizer"
    DERIVED = "derived"  # MPR, other derived reformats
    OTHER = "other"  # T1, FLAIR, DWI, ...


class MarsCategory(StrEnum):
    """Microbleed Anatomical Rating Scale category."""

    LOBAR = "lobar"
    DEEP = "deep"
    INFRATENTORIAL = "infratentorial"


class DetectionStatus(StrEnum):
    KEPT = "kept"
    REJECTED = "rejected"


@dataclass(frozen=True)
class SliceRef:
    """Where one slice of a volume came from: an instance and, for multi-frame, a frame."""

    sop_instance_uid: str
    sop_class_uid: str
    frame_number: int | None = None  # 1-based, only for multi-frame instances


@dataclass(frozen=True)
class Volume:
    """A 3D float32 image with its LPS affine and the identity of its source.

    See the module docstring for the axis convention.
    """

    array: npt.NDArray[np.float32]
    affine: npt.NDArray[np.float64]
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    slices: tuple[SliceRef, ...] = ()

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3D, got shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got {self.affine.shape}")
        if not np.all(np.isfinite(self.affine)):
            raise ValueError("Volume.affine contains non-finite values")
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-9:
            raise ValueError("Volume.affine is singular")
        if self.slices and len(self.slices) != self.array.shape[0]:
            raise ValueError(
                f"Volume has {self.array.shape[0]} slices but {len(self.slices)} slice references"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.array.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm along (slice, row, column)."""
        n = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(n[0]), float(n[1]), float(n[2]))

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def index_to_lps(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map (k, j, i) indices (N x 3 or 3,) to LPS mm."""
        idx = np.asarray(index, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_index(self, lps: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map LPS mm points (N x 3 or 3,) to continuous (k, j, i) indices."""
        pts = np.asarray(lps, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def with_array(self, array: npt.NDArray[Any]) -> Volume:
        """Same grid and identity, new voxel values."""
        return Volume(
            array=array,
            affine=self.affine,
            study_instance_uid=self.study_instance_uid,
            series_instance_uid=self.series_instance_uid,
            slices=self.slices,
        )


@dataclass(frozen=True)
class SeriesInfo:
    """What series selection and the evaluation need to know about a series."""

    study_instance_uid: str
    series_instance_uid: str
    modality: str
    sequence_kind: SequenceKind
    series_description: str = ""
    series_number: int | None = None
    manufacturer: str | None = None
    field_strength_t: float | None = None
    echo_time_ms: float | None = None  # the echo used (see echo_times_ms for multi-echo)
    echo_times_ms: tuple[float, ...] = ()
    pixel_spacing_mm: tuple[float, float] | None = None  # (row spacing, column spacing)
    slice_thickness_mm: float | None = None
    spacing_between_slices_mm: float | None = None
    acquisition_type: str | None = None  # "2D" or "3D" (MRAcquisitionType)
    image_type: tuple[str, ...] = ()
    sequence_name: str | None = None
    n_instances: int = 0
    n_frames: int = 0

    def acquisition_json(self) -> dict[str, Any]:
        """The ``acquisition`` block of detections.json."""
        return {
            "field_strength_t": self.field_strength_t,
            "echo_time_ms": self.echo_time_ms,
            "slice_thickness_mm": self.slice_thickness_mm,
            "pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
            "sequence": self.sequence_kind.value,
            "manufacturer": self.manufacturer,
            "acquisition_type": self.acquisition_type,
            "spacing_between_slices_mm": self.spacing_between_slices_mm,
        }


@dataclass(frozen=True)
class RejectedSeries:
    series_instance_uid: str
    reason: str


@dataclass(frozen=True)
class SeriesSelection:
    """Which series was chosen and why; which were not and why."""

    chosen: str
    reason: str
    rejected: tuple[RejectedSeries, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "reason": self.reason,
            "rejected": [
                {"series_instance_uid": r.series_instance_uid, "reason": r.reason}
                for r in self.rejected
            ],
        }


@dataclass
class Detection:
    """One candidate microbleed. Geometry in LPS mm."""

    id: int
    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    volume_mm3: float
    # The confidence every output reports: the U-Net's maximum inside the
    # component, or the candidate classifier's probability when it ran.
    probability: float
    mean_probability: float = 0.0
    elongation: float = 1.0  # ratio of largest to smallest principal axis (1 = sphere)
    n_voxels: int = 0
    region: str | None = None
    region_label: int | None = None
    mars: MarsCategory | None = None
    lobe: str | None = None
    hemisphere: str | None = None
    status: DetectionStatus = DetectionStatus.KEPT
    reject_reason: str | None = None
    # The U-Net's maximum when the candidate classifier replaced ``probability``.
    unet_probability: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if self.diameter_mm < 0 or self.volume_mm3 < 0:
            raise ValueError("diameter_mm and volume_mm3 must be non-negative")
        if self.status is DetectionStatus.REJECTED and not self.reject_reason:
            raise ValueError("a rejected detection needs a reject_reason")
        if isinstance(self.mars, str) and not isinstance(self.mars, MarsCategory):
            self.mars = MarsCategory(self.mars)
        if isinstance(self.status, str) and not isinstance(self.status, DetectionStatus):
            self.status = DetectionStatus(self.status)

    def reject(self, reason: str) -> None:
        self.status = DetectionStatus.REJECTED
        self.reject_reason = reason

    @property
    def kept(self) -> bool:
        return self.status is DetectionStatus.KEPT

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "center_lps_mm": [round(float(c), 3) for c in self.center_lps_mm],
            "diameter_mm": round(float(self.diameter_mm), 3),
            "volume_mm3": round(float(self.volume_mm3), 3),
            "probability": round(float(self.probability), 4),
            "mean_probability": round(float(self.mean_probability), 4),
            "unet_probability": (
                round(float(self.unet_probability), 4)
                if self.unet_probability is not None
                else None
            ),
            "elongation": round(float(self.elongation), 3),
            "n_voxels": int(self.n_voxels),
            "region": self.region,
            "region_label": self.region_label,
            "mars": self.mars.value if self.mars else None,
            "lobe": self.lobe,
            "hemisphere": self.hemisphere,
            "status": self.status.value,
            "reject_reason": self.reject_reason,
        }


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass
class Result:
    """Everything one run of the pipeline produced for one study."""

    study_instance_uid: str
    series: SeriesInfo
    selection: SeriesSelection
    detections: list[Detection]
    probability: Volume  # on the source grid, float32 in [0, 1]
    labels: Volume  # on the source grid, 0 = background, n = Detection.id
    model: ModelInfo
    timings_s: dict[str, float] = field(default_factory=dict)
    # What the location filter did: method, rejections per rule, MARS rating.
    location: dict[str, Any] | None = None
    # Whether the candidate classifier ran: its model, thresholds, how many it rejected.
    classifier: dict[str, Any] | None = None

    @property
    def kept(self) -> list[Detection]:
        return [d for d in self.detections if d.kept]

    def to_json(self) -> dict[str, Any]:
        """detections.json (schema: docs/detections.schema.json)."""
        return {
            "schema_version": "1.0",
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series.series_instance_uid,
            "series_selection": self.selection.to_json(),
            "acquisition": self.series.acquisition_json(),
            "model": self.model.to_json(),
            "detections": [d.to_json() for d in self.detections],
            "location_filter": self.location,
            "candidate_classifier": self.classifier,
            "timings_s": {k: round(float(v), 4) for k, v in self.timings_s.items()},
        }
