"""From files, folders and zip archives to `Study` objects made of geometric stacks.

`load_studies` reads every DICOM object it is given (folders recursively,
zip members too; NIfTI files become single-stack studies), checks that each
one is complete, sets aside what is not an image (SR, SEG, PR, KO...) with
the reason, and groups the images by study and series.  A series that holds
several echoes or image kinds (Siemens multi-echo GRE, Philips Enhanced MR
with magnitude and phase frames, GE B0 map exports) is split into one
`Series` per echo and kind, each with its `SeriesInfo` and classification.

Errors: a missing path, a truncated or corrupt DICOM file, or inputs without
any image raise `InputError` naming the culprit; nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
import struct
import warnings
import zipfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import UID

from model.errors import GeometryError, InputError
from model.series import FrameRef, Series, SourceRef, Study, has_dicm_prefix, parse_dicom
from model.series_classify import classify, echo_time_ms, header_features, private_value
from model.series_classify import functional_groups as _groups
from model.types import SequenceKind, SeriesInfo

__all__ = ["IMAGE_SOP_CLASSES", "load_studies"]

# Cross-sectional image storage classes that can hold a stack (others are skipped).
IMAGE_SOP_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.4",  # MR Image
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image
        "1.2.840.10008.5.1.4.1.1.128",  # PET Image
    }
)
_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ".dc3"}
_NIFTI_SUFFIXES = (".nii", ".nii.gz")


#: What a missing, mistyped or garbled header element raises when it is read
#: (pydicom decodes values lazily, on first access): turned into `InputError`
#: naming the file, at the boundary where one file's header is read.
_HEADER_ERRORS = (
    AttributeError,
    KeyError,
    IndexError,
    TypeError,
    ValueError,
    OverflowError,
    struct.error,
    BytesLengthException,
)


def _required_int(ds: Dataset, keyword: str, source: object) -> int:
    """An integer attribute that an image must have, or `InputError` naming file and attribute."""
    value = ds.get(keyword)
    if value in (None, ""):
        raise InputError(f"{source}: image without {keyword}")
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{source}: unreadable {keyword} ({value!r})") from e


class _SkipError(Exception):
    """An object that is readable but not an image stack member (reason in args[0])."""

    def __init__(self, reason: str, study_uid: str | None = None) -> None:
        super().__init__(reason)
        self.study_uid = study_uid


@dataclass(frozen=True)
class _Item:
    """One frame read from disk with the keys that decide its stack."""

    frame: FrameRef
    study_uid: str
    series_uid: str
    kind: str
    echo_number: int | None
    echo_time: float | None
    ge_vas: int | None
    header: Dataset
    frame_item: Dataset | None


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def _expand(inputs: Sequence[str | Path]) -> Iterator[SourceRef]:
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                yield from _expand_file(child)
        else:
            yield from _expand_file(path)


def _expand_file(path: Path) -> Iterator[SourceRef]:
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = [i.filename for i in archive.infolist() if not i.is_dir()]
        except zipfile.BadZipFile as e:
            raise InputError(f"{path}: not a readable zip archive ({e})") from e
        for name in sorted(names):
            yield SourceRef(path, name)
    else:
        yield SourceRef(path)


def _read_dataset(source: SourceRef) -> Dataset:
    """The complete dataset; `_SkipError` for non-DICOM files, `InputError` for broken DICOM."""
    name = source.member or source.path.name
    if Path(name).name.startswith("._") or "__MACOSX/" in name:
        raise _SkipError("macOS resource fork (AppleDouble file), not DICOM")
    data = source.read_bytes()
    has_prefix = has_dicm_prefix(data)
    looks_dicom = has_prefix or Path(name).suffix.lower() in _DICOM_SUFFIXES
    if Path(name).name.upper() == "DICOMDIR":
        raise _SkipError("DICOMDIR (media directory, not an image)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = parse_dicom(data)
        except InvalidDicomError as e:
            if looks_dicom:
                raise InputError(f"{source}: truncated or corrupt DICOM file ({e})") from e
            raise _SkipError("not a DICOM file") from e
        except (EOFError, ValueError, OSError, KeyError, TypeError, OverflowError) as e:
            if looks_dicom or has_prefix:
                raise InputError(f"{source}: truncated or corrupt DICOM file ({e})") from e
            raise _SkipError("not a DICOM file") from e
    problems = [str(w.message) for w in caught if "End of file" in str(w.message)]
    if problems and (has_prefix or looks_dicom):
        raise InputError(f"{source}: truncated DICOM file ({problems[0]})")
    if "SOPClassUID" not in ds:
        if has_prefix or looks_dicom:
            raise InputError(f"{source}: truncated or corrupt DICOM file (no SOP Class UID)")
        raise _SkipError("not a DICOM file")
    return ds


def _check_pixel_data(ds: Dataset, source: SourceRef) -> None:
    if "PixelData" not in ds:
        raise InputError(f"{source}: image object without pixel data (truncated file?)")
    ts = ds.file_meta.get("TransferSyntaxUID")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if ts is not None and UID(ts).is_compressed:
        return  # pydicom found the sequence delimiter, so the fragments are complete
    rows, columns = _required_int(ds, "Rows", source), _required_int(ds, "Columns", source)
    expected = rows * columns * int(ds.get("SamplesPerPixel", 1) or 1) * frames
    expected = expected * _required_int(ds, "BitsAllocated", source) // 8
    if len(ds.PixelData) < expected:
        raise InputError(
            f"{source}: truncated DICOM file (pixel data has {len(ds.PixelData)} bytes, "
            f"{expected} expected)"
        )


def _rescale(ds: Dataset, frame: Dataset | None) -> tuple[float, float]:
    for item in _groups(ds, frame, "PixelValueTransformationSequence"):
        return float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)
    return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)


def _floats(value: object, n: int, what: str, source: SourceRef) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as e:
        raise InputError(f"{source}: unreadable {what} ({e})") from e
    if len(out) != n:
        raise InputError(f"{source}: {what} has {len(out)} values, {n} expected")
    return out


def _frame_geometry(
    ds: Dataset, frame: Dataset | None, source: SourceRef
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...], float | None, float | None]:
    if frame is None:
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise _SkipError("image without patient geometry (no ImagePositionPatient)")
        pos, iop, ps = ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.get("PixelSpacing")
        thick, between = ds.get("SliceThickness"), ds.get("SpacingBetweenSlices")
    else:
        pos = next(
            (i.get("ImagePositionPatient") for i in _groups(ds, frame, "PlanePositionSequence")),
            None,
        )
        iop = next(
            (
                i.get("ImageOrientationPatient")
                for i in _groups(ds, frame, "PlaneOrientationSequence")
            ),
            None,
        )
        measures = next(iter(_groups(ds, frame, "PixelMeasuresSequence")), Dataset())
        ps = measures.get("PixelSpacing")
        thick, between = measures.get("SliceThickness"), measures.get("SpacingBetweenSlices")
        if pos is None or iop is None:
            raise _SkipError("multi-frame image without plane position/orientation")
    if ps is None:
        raise _SkipError("image without PixelSpacing")
    return (
        _floats(pos, 3, "ImagePositionPatient", source),
        _floats(iop, 6, "ImageOrientationPatient", source),
        _floats(ps, 2, "PixelSpacing", source),
        float(thick) if thick not in (None, "") else None,
        float(between) if between not in (None, "") else None,
    )


def _items(ds: Dataset, source: SourceRef) -> list[_Item]:
    """The frames of one image object, with their stack keys."""
    sop_class = str(ds.SOPClassUID)
    if sop_class not in IMAGE_SOP_CLASSES:
        name = UID(sop_class).name or sop_class
        study_uid = ds.get("StudyInstanceUID")
        raise _SkipError(f"not a cross-sectional image ({name})", str(study_uid or "") or None)
    _check_pixel_data(ds, source)
    if "StudyInstanceUID" not in ds or "SeriesInstanceUID" not in ds:
        raise InputError(f"{source}: image without StudyInstanceUID/SeriesInstanceUID")
    header = ds.copy()
    del header.PixelData  # keep the headers of a whole study in memory, not its pixels
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    frame_items: list[Dataset | None] = list(per_frame) if per_frame else [None]
    ge_vas = private_value(ds, 0x0043, "GEMS_PARM_01", 0x30)
    out = []
    for index, item in enumerate(frame_items):
        pos, iop, ps, thick, between = _frame_geometry(ds, item, source)
        slope, intercept = _rescale(ds, item)
        echo_number = ds.get("EchoNumbers") if item is None else None
        frame = FrameRef(
            source=source,
            frame_index=None if item is None else index,
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=sop_class,
            position=(pos[0], pos[1], pos[2]),
            orientation=(iop[0], iop[1], iop[2], iop[3], iop[4], iop[5]),
            pixel_spacing=(ps[0], ps[1]),
            rows=_required_int(ds, "Rows", source),
            columns=_required_int(ds, "Columns", source),
            rescale_slope=slope,
            rescale_intercept=intercept,
            slice_thickness=thick,
            spacing_between_slices=between,
        )
        te = echo_time_ms(ds, item)
        out.append(
            _Item(
                frame=frame,
                study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                kind=header_features(ds, item).image_kind,
                echo_number=int(echo_number) if echo_number not in (None, "") else None,
                echo_time=round(te, 3) if te is not None else None,
                ge_vas=int(ge_vas) if isinstance(ge_vas, int) else None,
                header=header,
                frame_item=item,
            )
        )
    return out


def _field_strength(ds: Dataset) -> float | None:
    value = ds.get("MagneticFieldStrength")
    if value in (None, ""):
        return None
    tesla = float(value)
    return tesla / 10000.0 if tesla > 20 else tesla  # some old exports give gauss


def _split(items: list[_Item]) -> list[tuple[str, list[_Item], tuple[float, ...]]]:
    """Split one series' frames into stacks by image kind and echo; name each stack."""
    if len({i.ge_vas for i in items}) > 1:
        # GE B0-map exports keep magnitude ((0043,1030) = 2) and the field map
        # (other values) in one series with the same positions; dcm2niix splits them too.
        items = [i if i.ge_vas == 2 else replace(i, kind="fieldmap") for i in items]
    by_kind: dict[str, list[_Item]] = defaultdict(list)
    for item in items:
        by_kind[item.kind].append(item)
    stacks: list[tuple[str, list[_Item], tuple[float, ...]]] = []
    for kind, kind_items in sorted(by_kind.items(), key=lambda kv: _KIND_ORDER.get(kv[0], 9)):
        by_echo: dict[tuple[int, float], list[_Item]] = defaultdict(list)
        for item in kind_items:
            key = (item.echo_number or 0, item.echo_time if item.echo_time is not None else -1.0)
            by_echo[key].append(item)
        keys = sorted(by_echo, key=lambda k: (k[1], k[0]))
        numbers = [k[0] for k in keys]
        # Label echoes by EchoNumbers when they tell the groups apart, else by TE rank.
        use_numbers = all(numbers) and len(set(numbers)) == len(numbers)
        echo_times = tuple(sorted({i.echo_time for i in kind_items if i.echo_time is not None}))
        for rank, key in enumerate(keys, start=1):
            suffix = ""
            if len(by_kind) > 1:
                suffix += f"#{kind}"
            if len(keys) > 1:
                suffix += f"#echo{key[0] if use_numbers else rank}"
            stacks.append((suffix, by_echo[key], echo_times))
    return stacks


_KIND_ORDER = {"magnitude": 0, "phase": 1, "fieldmap": 2, "real": 3, "imaginary": 4}


def _series_info(
    stack_items: list[_Item],
    series_uid: str,
    echo_times: tuple[float, ...],
    rules: dict[str, Any] | None,
) -> tuple[SeriesInfo, str]:
    first = stack_items[0]
    ds, frame_item = first.header, first.frame_item
    features = replace(header_features(ds, frame_item), image_kind=first.kind)
    kind, reason = classify(features, rules)
    thickness = first.frame.slice_thickness
    number = ds.get("SeriesNumber")
    info = SeriesInfo(
        study_instance_uid=first.study_uid,
        series_instance_uid=series_uid,
        modality=str(ds.get("Modality", "")),
        sequence_kind=kind,
        series_description=str(ds.get("SeriesDescription", "") or ""),
        series_number=int(number) if number not in (None, "") else None,
        manufacturer=str(ds.get("Manufacturer", "")) or None,
        field_strength_t=_field_strength(ds),
        echo_time_ms=first.echo_time,
        echo_times_ms=echo_times,
        pixel_spacing_mm=first.frame.pixel_spacing,
        slice_thickness_mm=thickness,
        spacing_between_slices_mm=first.frame.spacing_between_slices,
        acquisition_type=str(ds.get("MRAcquisitionType", "")) or None,
        image_type=features.image_type,
        sequence_name=features.sequence_name or features.ge_psd_name or None,
        n_instances=len({i.frame.sop_instance_uid for i in stack_items}),
        n_frames=len(stack_items),
    )
    return info, reason


def _slice_spacing(series: Series) -> float | None:
    """The measured slice spacing; None when the geometry is invalid (reported later)."""
    try:
        return series.geometry().slice_spacing
    except GeometryError:
        return None


def _nifti_study(path: Path) -> Study:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()
    uid = "2.25." + str(int(digest[:30], 16))
    info = SeriesInfo(
        study_instance_uid=uid,
        series_instance_uid=uid + ".1",
        modality="MR",
        sequence_kind=SequenceKind.T2STAR,
        series_description=path.name,
    )
    series = Series(
        info=info,
        stack_id=info.series_instance_uid,
        classification_reason="NIfTI input: no DICOM header to check, taken as the "
        "SWI/T2* magnitude volume the user provided",
        nifti_path=path,
    )
    return Study(study_instance_uid=uid, series=[series])


def load_studies(inputs: Sequence[str | Path], rules: dict[str, Any] | None = None) -> list[Study]:
    """Read DICOM (files, folders, zips) and NIfTI inputs into studies of stacks.

    ``rules`` replaces the packaged classification table
    (``model.series_classify.load_rules(path)``); pass the same table to
    `model.selection.select_series`.
    """
    if not inputs:
        raise InputError("no input given")
    studies: dict[str, Study] = {}
    skipped: list[tuple[str, str, str | None]] = []  # (path, reason, study uid if known)
    by_series: dict[tuple[str, str], list[_Item]] = defaultdict(list)
    seen: dict[str, SourceRef] = {}  # SOPInstanceUID -> first source
    for source in _expand(inputs):
        if source.member is None and _is_nifti(source.path):
            study = _nifti_study(source.path)
            studies[study.study_instance_uid] = study
            continue
        try:
            ds = _read_dataset(source)
            items = _items(ds, source)
        except _SkipError as skip:
            skipped.append((str(source), str(skip.args[0]), skip.study_uid))
            continue
        except _HEADER_ERRORS as e:
            raise InputError(
                f"{source}: missing or unreadable header attribute ({type(e).__name__}: {e})"
            ) from e
        sop_uid = items[0].frame.sop_instance_uid
        if sop_uid in seen:
            # The same instance twice (a folder and a file in it, a re-sent export).
            skipped.append((str(source), f"duplicate of {seen[sop_uid]}", items[0].study_uid))
            continue
        seen[sop_uid] = source
        for item in items:
            by_series[(item.study_uid, item.series_uid)].append(item)
    for (study_uid, series_uid), items in by_series.items():
        study = studies.setdefault(study_uid, Study(study_instance_uid=study_uid))
        stacks = _split(items)
        for suffix, stack_items, times in stacks:
            try:
                info, reason = _series_info(stack_items, series_uid, times, rules)
            except _HEADER_ERRORS as e:
                raise InputError(
                    f"{stack_items[0].frame.source}: missing or unreadable header attribute "
                    f"({type(e).__name__}: {e})"
                ) from e
            series = Series(
                info=info,
                stack_id=series_uid + suffix,
                frames=[i.frame for i in stack_items],
                classification_reason=reason,
            )
            spacing = _slice_spacing(series)
            if spacing is not None:
                series.info = replace(info, spacing_between_slices_mm=round(spacing, 4))
            study.series.append(series)
    if not studies:
        detail = "; ".join(f"{p}: {r}" for p, r, _ in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        raise InputError(f"no DICOM or NIfTI image found in the input ({detail}{more})")
    result = sorted(studies.values(), key=lambda s: s.study_instance_uid)
    for study in result:
        study.series.sort(key=lambda s: (s.info.series_number or 0, s.stack_id))
        # Objects of a known other study stay with it; unreadable ones are listed everywhere.
        study.skipped = [(p, r) for p, r, uid in skipped if uid in (None, study.study_instance_uid)]
    if not any(study.series for study in result):
        raise InputError("no image series found in the input")
    return result
