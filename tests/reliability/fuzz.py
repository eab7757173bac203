"""A deterministic DICOM mutator: broken Part 10 files of known categories.

Each case starts from a small, valid MR slice (tests/service/dicom_factory,
explicit VR little endian) and breaks it one way.  The file meta stays valid
in the "dataset" categories, so a DIMSE sender (pynetdicom, sending the file's
bytes as they are) can still offer it in a presentation context; the "meta"
categories break the file meta too and only go through REST.
"""

from __future__ import annotations

import io
import logging
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from tests.service.dicom_factory import mr_dataset

_LONG_VRS = {
    b"OB",
    b"OW",
    b"OF",
    b"OD",
    b"OL",
    b"OV",
    b"SQ",
    b"UT",
    b"UN",
    b"UC",
    b"UR",
    b"SV",
    b"UV",
}


@dataclass(frozen=True)
class Element:
    offset: int  # of the tag
    group: int
    elem: int
    vr: bytes
    length_offset: int
    length_size: int  # 2 or 4
    length: int


@dataclass(frozen=True)
class Case:
    category: str
    raw: bytes
    dimse_ok: bool  # file meta intact: can be offered over DIMSE as is


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def meta_end(raw: bytes) -> int:
    """Offset of the first data set element (after preamble, DICM and the file meta group)."""
    pos = 132
    (group_length,) = struct.unpack_from("<I", raw, pos + 8)
    return pos + 12 + group_length


def elements(raw: bytes, start: int) -> list[Element]:
    """Top-level elements of an explicit VR little endian data set (our own, well-formed)."""
    out = []
    pos = start
    while pos + 8 <= len(raw):
        group, elem = struct.unpack_from("<HH", raw, pos)
        vr = raw[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", raw, pos + 8)
            lo, ls, head = pos + 8, 4, 12
        else:
            (length,) = struct.unpack_from("<H", raw, pos + 6)
            lo, ls, head = pos + 6, 2, 8
        out.append(Element(pos, group, elem, vr, lo, ls, length))
        pos += head + length
    return out


def _set_length(raw: bytearray, el: Element, value: int) -> None:
    fmt = "<I" if el.length_size == 4 else "<H"
    struct.pack_into(fmt, raw, el.length_offset, value % (1 << (8 * el.length_size)))


_SERIAL = [0]
_BASES: dict[tuple[str, int, int], bytes] = {}


def _uid() -> str:
    _SERIAL[0] += 1
    return f"2.25.1{_SERIAL[0]:019d}"  # fixed length: patched into cached bytes in place


def _base(rng: random.Random, study_uid: str) -> Dataset:
    ds = mr_dataset(study_uid, f"{study_uid}.{rng.randint(1, 3)}", rng.randint(0, 3), size=16)
    uid = UID(_uid())
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    return ds


def _base_raw(rng: random.Random, study_uid: str) -> bytes:
    """A valid encoded slice with a fresh SOP Instance UID (cached encoding, UID patched)."""
    key = (study_uid, rng.randint(1, 3), rng.randint(0, 3))
    if key not in _BASES:
        ds = mr_dataset(study_uid, f"{study_uid}.{key[1]}", key[2], size=16)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID("2.25.1" + "0" * 19)
        _BASES[key] = encode(ds)
    return _BASES[key].replace(("2.25.1" + "0" * 19).encode(), _uid().encode())


def _mutators() -> dict[str, Callable[..., tuple[bytes, bool]]]:
    def byte_flip(rng: random.Random, base: bytes) -> tuple[bytes, bool]:
        raw = bytearray(base)
        start = meta_end(bytes(raw))
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(start, len(raw))] = rng.randrange(256)
        return bytes(raw), True

    def wrong_length(rng: random.Random, base: bytes) -> tuple[bytes, bool]:
        raw = bytearray(base)
        els = elements(bytes(raw), meta_end(bytes(raw)))
        el = rng.choice(els)
        _set_length(raw, el, rng.choice([0, 1, el.length + 1, el.length * 3 + 7, 0xFFFF, 0xFFFE]))
        return bytes(raw), True

    def bad_vr(rng: random.Random, base: bytes) -> tuple[bytes, bool]:
        raw = bytearray(base)
        el = rng.choice(elements(bytes(raw), meta_end(bytes(raw))))
        raw[el.offset + 4 : el.offset + 6] = rng.choice(
            [b"ZZ", b"\x00\x00", b"SQ", b"OB", b"UN", b"FD", b"AT", b"\xff\xfe"]
        )
        return bytes(raw), True

    def truncated_pixels(rng: random.Random, base: bytes) -> tuple[bytes, bool]:
        raw = base
        els = elements(raw, meta_end(raw))
        pix = next(e for e in els if (e.group, e.elem) == (0x7FE0, 0x0010))
        cut = pix.offset + rng.randint(0, 12 + pix.length - 1)
        return raw[:cut], True

    def truncated_anywhere(rng: random.Random, base: bytes) -> tuple[bytes, bool]:
        raw = base
        return raw[: rng.randint(meta_end(raw), len(raw) - 1)], True

    def huge_size(rng: random.Random, base: bytes) -> tuple[bytes, bool]:
        raw = bytearray(base)
        els = elements(bytes(raw), meta_end(bytes(raw)))
        longs = [e for e in els if e.length_size == 4]
        el = rng.choice(longs)
        _set_length(raw, el, rng.choice([0xFFFFFFF0, 0x7FFFFFFF, 0x10000000, 0xFFFFFFFE]))
        return bytes(raw), True

    def absurd_dimensions(rng: random.Random, base: bytes, study_uid: str) -> tuple[bytes, bool]:
        ds = _base(rng, study_uid)
        choice = rng.randrange(8)
        if choice == 0:
            ds.Rows, ds.Columns = 65535, 65535
        elif choice == 1:
            ds.Rows = 0
        elif choice == 2:
            ds.BitsAllocated = rng.choice([1, 7, 12, 64])
        elif choice == 3:
            ds.NumberOfFrames = rng.choice([0, 2**31 - 1, 65536])
        elif choice == 4:
            ds.SamplesPerPixel = 3
        elif choice == 5:
            ds.PixelSpacing = [rng.choice([0.0, -1.0, 1e308]), 1.0]
        elif choice == 6:
            ds.ImageOrientationPatient = [0.0] * 6
        else:
            ds.ImagePositionPatient = ["nan", "inf", "-inf"]
        return encode(ds), True

    def bad_uids(rng: random.Random, base: bytes, study_uid: str) -> tuple[bytes, bool]:
        ds = _base(rng, study_uid)
        choice = rng.randrange(4)
        if choice == 0:
            ds.StudyInstanceUID = "1." + "2" * 200
        elif choice == 1:
            del ds.SeriesInstanceUID
        elif choice == 2:
            ds.StudyInstanceUID = "../../etc/passwd"
        else:
            ds.SOPInstanceUID = generate_uid()  # does not match the file meta / request
        return encode(ds), True

    def garbage_values(rng: random.Random, base: bytes) -> tuple[bytes, bool]:
        raw = bytearray(base)
        els = [e for e in elements(bytes(raw), meta_end(bytes(raw))) if e.length]
        el = rng.choice(els)
        head = 12 if el.length_size == 4 else 8
        for i in range(min(el.length, 32)):
            raw[el.offset + head + i] = rng.randrange(256)
        return bytes(raw), True

    def wrong_transfer_syntax(rng: random.Random, base: bytes) -> tuple[bytes, bool]:
        # Declared compressed/other but the bytes are explicit VR LE: only through REST
        # (a DIMSE sender would offer a context the data does not match).
        raw = base
        ts = rng.choice([b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.2\x00", b"1.2.3.4.5.6\x00"])
        old = b"1.2.840.10008.1.2.1\x00"
        fixed = ts.ljust(len(old), b"\x00")[: len(old)] if len(ts) <= len(old) else ts
        if len(fixed) != len(old):
            return raw.replace(old, old[:-2] + b"9\x00", 1), False
        return raw.replace(old, fixed, 1), False

    def bad_meta(rng: random.Random, base: bytes) -> tuple[bytes, bool]:
        raw = bytearray(base)
        choice = rng.randrange(3)
        if choice == 0:
            raw[128:132] = b"DICN"
        elif choice == 1:
            struct.pack_into("<I", raw, 140, rng.choice([0, 3, 0xFFFFFFFF]))
        else:
            raw = raw[: rng.randint(0, 200)]
        return bytes(raw), False

    return {
        "byte_flip": byte_flip,
        "wrong_length": wrong_length,
        "bad_vr": bad_vr,
        "truncated_pixel_data": truncated_pixels,
        "truncated_anywhere": truncated_anywhere,
        "huge_declared_size": huge_size,
        "absurd_dimensions": absurd_dimensions,
        "bad_uids": bad_uids,
        "garbage_values": garbage_values,
        "wrong_transfer_syntax": wrong_transfer_syntax,
        "bad_file_meta": bad_meta,
    }


MUTATORS = _mutators()
_DATASET_LEVEL = {"absurd_dimensions", "bad_uids"}


def make_cases(n: int, seed: int, study_uid: str, *, dimse: bool) -> list[Case]:
    """``n`` broken files, the categories in turn; ``dimse`` keeps only DIMSE-sendable ones."""
    # pydicom warns (with the values) about the invalid data this module writes on purpose:
    # silence it here, so the suite's log scan sees only what the service logs.
    pydicom_log = logging.getLogger("pydicom")
    was = pydicom_log.disabled
    pydicom_log.disabled = True
    try:
        return _make_cases(n, seed, study_uid, dimse=dimse)
    finally:
        pydicom_log.disabled = was


def _make_cases(n: int, seed: int, study_uid: str, *, dimse: bool) -> list[Case]:
    rng = random.Random(seed)
    names = [
        k for k in MUTATORS if not dimse or k not in ("wrong_transfer_syntax", "bad_file_meta")
    ]
    cases: list[Case] = []
    i = 0
    while len(cases) < n:
        name = names[i % len(names)]
        i += 1
        fn = MUTATORS[name]
        if name in _DATASET_LEVEL:
            raw, dimse_ok = fn(rng, b"", study_uid)
        else:
            raw, dimse_ok = fn(rng, _base_raw(rng, study_uid))
        if dimse and not dimse_ok:
            continue
        cases.append(Case(name, raw, dimse_ok))
    return cases
