"""Conversions between `Volume` (LPS, ``array[k, j, i]``) and SimpleITK / NIfTI.

ITK works in LPS like DICOM and converts to NIfTI's RAS when it reads or
writes a ``.nii``/``.nii.gz``, so going through SimpleITK keeps the sign
conventions in one well-tested place.  The only thing done here is the axis
bookkeeping: SimpleITK indexes an image ``(x, y, z) = (i, j, k)`` while its
numpy view and our `Volume` index ``[k, j, i]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from model.errors import InputError
from model.types import SliceRef, Volume

__all__ = ["from_sitk", "read_nifti", "to_sitk", "write_nifti"]


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image with the same voxels and LPS geometry.

    SimpleITK needs an orthogonal direction matrix; a sheared affine (which no
    valid DICOM series produces) is refused.
    """
    a = volume.affine[:3, :3]
    # SimpleITK axis order (x, y, z) = our columns (2, 1, 0).
    axes = a[:, [2, 1, 0]]
    spacing = np.linalg.norm(axes, axis=0)
    direction = axes / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ValueError("volume affine is not orthogonal; SimpleITK cannot represent it")
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(x) for x in volume.affine[:3, 3]])
    image.SetDirection([float(x) for x in direction.ravel()])
    return image


def from_sitk(
    image: sitk.Image,
    *,
    study_instance_uid: str = "",
    series_instance_uid: str = "",
    slices: tuple[SliceRef, ...] = (),
    dtype: npt.DTypeLike = np.float32,
) -> Volume:
    """A `Volume` from a 3D SimpleITK image (geometry in LPS, as ITK keeps it)."""
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("expected a scalar image, got a vector/colour image")
    array = sitk.GetArrayFromImage(image).astype(dtype, copy=False)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    axes = direction * spacing  # columns: x, y, z steps
    affine = np.eye(4)
    affine[:3, 0] = axes[:, 2]
    affine[:3, 1] = axes[:, 1]
    affine[:3, 2] = axes[:, 0]
    affine[:3, 3] = np.asarray(image.GetOrigin(), dtype=np.float64)
    return Volume(
        array=array,
        affine=affine,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        slices=slices,
    )


def read_nifti(path: str | Path) -> Volume:
    """Read a 3D NIfTI file (RAS on disk) into an LPS `Volume`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        image = sitk.ReadImage(str(p))
    except RuntimeError as e:
        raise InputError(
            f"{p}: not a readable NIfTI file ({str(e).strip().splitlines()[-1]})"
        ) from e
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(f"{p}: expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{p}: expected a scalar image, got a vector/colour image")
    return from_sitk(image)


def write_nifti(volume: Volume, path: str | Path) -> None:
    """Write ``volume`` as NIfTI (ITK converts our LPS geometry to NIfTI's RAS)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(to_sitk(volume), str(p), useCompression=p.name.endswith(".gz"))
