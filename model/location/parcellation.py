"""Brain parcellation of a volume: our ONNX network, or FreeSurfer's ``mri_synthseg``.

Both paths return the same thing: a :class:`~model.types.Volume` on the input
volume's grid whose voxels hold FreeSurfer label ids (float32, 0 =
background), the labels of :mod:`model.location.labels`.

* ``onnx``: the volume is resampled (linear) onto the canonical S/P/L grid at
  the model spacing (:mod:`model.location.grid`), normalised with the model's
  own ``cmb.normalization`` (:func:`model.preprocess.normalize`, the function
  training used), run through the network in one pass (the whole head at 2 mm
  is ~128^3), and the arg-max labels are resampled back nearest-neighbour.
* ``mri_synthseg``: the volume is written as NIfTI, FreeSurfer's tool is run,
  and its label map (1 mm, its own grid) is resampled nearest-neighbour onto
  the volume's grid.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from model.errors import CmbError, ModelError
from model.location.grid import canonical_grid, empty_like_grid
from model.onnx_model import OnnxModel, default_model_path, load_cached
from model.preprocess import foreground_mask, normalize, resample_like
from model.types import Volume
from model.volume import read_nifti

METHODS = ("onnx", "mri_synthseg")
#: The network pools four times.
SIZE_DIVISOR = 16


def parcellate(
    volume: Volume,
    *,
    method: str = "onnx",
    model_path: Path | None = None,
    device: str = "auto",
    executable: str = "mri_synthseg",
) -> Volume:
    """Label map (FreeSurfer ids) of ``volume`` on its own grid."""
    if method == "onnx":
        return parcellate_onnx(volume, load_parcellation_model(model_path, device))
    if method == "mri_synthseg":
        return parcellate_mri_synthseg(volume, executable=executable)
    raise ValueError(f"unknown parcellation method {method!r}; expected one of {METHODS}")


def _load(path: Path, device: str) -> OnnxModel:
    model = load_cached(path, device=device)
    if model.metadata.task != "parcellation":
        raise ModelError(f"{path} is a {model.metadata.task!r} model, not a parcellation model")
    return model


def load_parcellation_model(model_path: Path | None = None, device: str = "auto") -> OnnxModel:
    """The parcellation model (cached per file version and device)."""
    path = Path(model_path) if model_path is not None else default_model_path("parcellation")
    return _load(path.resolve(), device)


def parcellate_onnx(volume: Volume, model: OnnxModel) -> Volume:
    """Run the ONNX parcellation network; see the module docstring."""
    meta = model.metadata
    spacing = float(meta.spacing_mm[0])
    affine, shape = canonical_grid(volume, spacing, divisor=SIZE_DIVISOR)
    canon = resample_like(volume, empty_like_grid(affine, shape), order=1)
    image = normalize(canon.array, meta.normalization)
    box = head_box(image, SIZE_DIVISOR)
    probs = model.run(image[box][None, None])[0]
    ids = np.asarray(meta.label_ids, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.float32)  # air around the head: background
    labels[box] = ids[np.argmax(probs, axis=0)]
    return resample_like(Volume(array=labels, affine=affine), volume, order=0)


def head_box(
    image: npt.NDArray[np.float32], divisor: int, margin: int = 4
) -> tuple[slice, slice, slice]:
    """Box around the head (Otsu foreground + ``margin`` voxels), sides multiples of ``divisor``.

    The air around a head is a large part of a 1 mm whole-head grid; the
    network only runs on the box (training saw such crops too).
    """
    mask = foreground_mask(image, "otsu")
    idx = np.argwhere(mask)
    shape = np.asarray(image.shape)
    if idx.size == 0:
        return (slice(0, int(shape[0])), slice(0, int(shape[1])), slice(0, int(shape[2])))
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin, shape)
    size = np.minimum(np.ceil((hi - lo) / divisor).astype(int) * divisor, shape)
    # grow symmetrically inside the grid to reach the rounded size
    lo = np.clip(lo - (size - (hi - lo)) // 2, 0, shape - size)
    hi = lo + size
    return (
        slice(int(lo[0]), int(hi[0])),
        slice(int(lo[1]), int(hi[1])),
        slice(int(lo[2]), int(hi[2])),
    )


# --------------------------------------------------------------------------- mri_synthseg


def write_nifti(volume: Volume, path: Path) -> None:
    """Write ``volume`` as NIfTI (SimpleITK converts LPS to the file's RAS)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array, dtype=np.float32))
    spacing = np.asarray(volume.spacing, dtype=np.float64)
    direction = volume.affine[:3, :3] / spacing  # columns for (k, j, i)
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    image.SetDirection(tuple(float(v) for v in direction[:, ::-1].ravel()))
    image.SetOrigin(tuple(float(v) for v in volume.affine[:3, 3]))
    sitk.WriteImage(image, str(path))


def read_label_nifti(path: Path) -> Volume:
    """A NIfTI label map (e.g. ``mri_synthseg`` output) as a Volume of FreeSurfer ids."""
    volume = read_nifti(path)
    return volume.with_array(np.rint(volume.array).astype(np.float32))


def labels_onto(labels: Volume, reference: Volume) -> Volume:
    """Resample a label map nearest-neighbour onto ``reference``'s grid (ids kept exact)."""
    out = resample_like(labels, reference, order=0)
    return out.with_array(np.rint(out.array).astype(np.float32))


Runner = Callable[[Sequence[str]], Any]


def _default_runner(cmd: Sequence[str]) -> Any:
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True)


def parcellate_mri_synthseg(
    volume: Volume,
    *,
    executable: str = "mri_synthseg",
    threads: int = 1,
    extra_args: Sequence[str] = (),
    runner: Runner | None = None,
) -> Volume:
    """Run FreeSurfer's ``mri_synthseg`` on ``volume`` and return its labels on ``volume``'s grid.

    ``runner`` runs the command (``subprocess.run`` by default; tests pass a fake).
    """
    exe = shutil.which(executable) or (executable if Path(executable).is_file() else None)
    if exe is None:
        raise CmbError(
            f"parcellation method 'mri_synthseg' needs FreeSurfer's {executable!r} on PATH "
            "(FreeSurfer >= 7.3); use the default method 'onnx' otherwise"
        )
    run = runner or _default_runner
    with tempfile.TemporaryDirectory(prefix="cmb-synthseg-") as tmp:
        src = Path(tmp) / "input.nii.gz"
        dst = Path(tmp) / "input_synthseg.nii.gz"
        write_nifti(volume, src)
        cmd = [
            exe,
            "--i",
            str(src),
            "--o",
            str(dst),
            "--threads",
            str(threads),
            "--cpu",
            *extra_args,
        ]
        try:
            run(cmd)
        except subprocess.CalledProcessError as e:
            detail = (e.stderr or "").strip().splitlines()[-1:] or [""]
            raise CmbError(f"mri_synthseg failed (exit {e.returncode}): {detail[0]}") from e
        return labels_onto(read_label_nifti(dst), volume)


def label_counts(labels: Volume) -> dict[int, int]:
    """Voxel count per label id (for logs and tests)."""
    values, counts = np.unique(np.rint(labels.array).astype(np.int64), return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def as_int_labels(labels: Volume) -> npt.NDArray[np.int32]:
    return np.rint(labels.array).astype(np.int32)
