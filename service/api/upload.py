"""Turning uploads into instances: DICOM files, zip archives, STOW-RS multipart/related."""

from __future__ import annotations

import email.parser
import email.policy
import io
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from service.settings import Settings
from service.store import InstanceIds, NotStorableError, Spool, parse_part10


@dataclass
class UploadReport:
    stored: list[InstanceIds] = field(default_factory=list)
    duplicates: list[InstanceIds] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)

    @property
    def studies(self) -> list[str]:
        return sorted({i.study_instance_uid for i in self.stored + self.duplicates})


@dataclass(frozen=True)
class ZipLimits:
    """Bounds on what one uploaded zip archive may inflate to (zip bombs).

    The sizes are counted on the bytes actually inflated, never taken from the
    archive's headers, and a member is read in chunks, so that a bomb is
    refused after at most ``max_total_bytes`` of one member were held.
    """

    max_total_bytes: int = 4096 * 2**20
    max_members: int = 20000
    max_ratio: float = 200.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ZipLimits:
        return cls(
            max_total_bytes=int(settings.zip_max_total_mb * 2**20),
            max_members=settings.zip_max_members,
            max_ratio=settings.zip_max_ratio,
        )


_CHUNK = 2**20


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, limits: ZipLimits) -> bytes:
    """One member's bytes, refused as soon as it passes ``budget`` or the ratio limit."""
    out = bytearray()
    # ZipExtFile reads at most compress_size compressed bytes, so this bound holds even
    # when the header lies about the decompressed size.
    max_ratio_bytes = max(info.compress_size, 1) * limits.max_ratio
    with zf.open(info) as member:
        while chunk := member.read(_CHUNK):
            out += chunk
            if len(out) > budget:
                raise NotStorableError(
                    f"zip archive inflates to more than {limits.max_total_bytes // 2**20} MiB"
                )
            if len(out) > max_ratio_bytes and len(out) > _CHUNK:
                raise NotStorableError(
                    f"zip member {info.filename} inflates more than {limits.max_ratio:g}-fold "
                    "(zip bomb?)"
                )
    return bytes(out)


def iter_files(
    name: str, data: bytes, limits: ZipLimits | None = None
) -> Iterator[tuple[str, bytes]]:
    """A file, or every member of a zip archive (nested folders, no nested zips), one at a time.

    Raises `NotStorableError` for a corrupt archive or one past ``limits``; members
    yielded before that were complete.
    """
    if data[:4] != b"PK\x03\x04":
        yield name, data
        return
    limits = limits or ZipLimits()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            if len(members) > limits.max_members:
                raise NotStorableError(
                    f"{name}: zip archive has {len(members)} files, "
                    f"more than the limit of {limits.max_members}"
                )
            left = limits.max_total_bytes
            for info in members:
                raw = _inflate(zf, info, left, limits)
                left -= len(raw)
                yield f"{name}/{info.filename}", raw
    except NotStorableError as e:
        raise NotStorableError(f"{name}: {e}" if not str(e).startswith(name) else str(e)) from e
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error) as e:
        raise NotStorableError(f"{name}: corrupt zip archive: {e}") from e
    except NotImplementedError as e:  # an unsupported compression method
        raise NotStorableError(f"{name}: unsupported zip archive: {e}") from e


def store_files(
    spool: Spool,
    files: list[tuple[str, bytes]],
    source: str,
    limits: ZipLimits | None = None,
) -> UploadReport:
    """Store every DICOM instance in ``files``; others are listed as refused with the reason.

    A zip archive past ``limits`` is refused from the member that passed them on.
    OutOfResourcesError propagates (the caller answers 507): nothing is half-stored.
    """
    report = UploadReport()
    for name, data in files:
        try:
            for member, raw in iter_files(name, data, limits):
                _store_one(spool, report, member, raw, source)
        except NotStorableError as e:
            report.refused.append((name, str(e)))
    return report


def _store_one(spool: Spool, report: UploadReport, member: str, raw: bytes, source: str) -> None:
    if member.rsplit("/", 1)[-1].upper() == "DICOMDIR":
        return
    try:
        ids = parse_part10(raw)
        result = spool.store(raw, ids, source)
    except NotStorableError as e:
        report.refused.append((member, str(e)))
        return
    (report.duplicates if result.outcome == "duplicate" else report.stored).append(ids)


def split_multipart_related(content_type: str, body: bytes) -> list[bytes]:
    """The parts of a ``multipart/related; type="application/dicom"`` body (STOW-RS)."""
    if "multipart/related" not in content_type.lower():
        raise NotStorableError(
            'STOW-RS needs Content-Type multipart/related; type="application/dicom"'
        )
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise NotStorableError("the multipart/related body has no parts")
    parts = []
    for part in msg.iter_parts():
        ctype = part.get_content_type()
        if ctype != "application/dicom":
            raise NotStorableError(
                f"unsupported part type {ctype}; only application/dicom is accepted"
            )
        payload = part.get_payload(decode=True)
        parts.append(payload if isinstance(payload, bytes) else b"")
    return parts
