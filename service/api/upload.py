"""Turning uploads into instances: DICOM files, zip archives, STOW-RS multipart/related."""

from __future__ import annotations

import email.parser
import email.policy
import io
import zipfile
from dataclasses import dataclass, field

from service.store import InstanceIds, NotStorableError, OutOfResourcesError, Spool, parse_part10


@dataclass
class UploadReport:
    stored: list[InstanceIds] = field(default_factory=list)
    duplicates: list[InstanceIds] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)

    @property
    def studies(self) -> list[str]:
        return sorted({i.study_instance_uid for i in self.stored + self.duplicates})


def iter_files(name: str, data: bytes) -> list[tuple[str, bytes]]:
    """A file, or every member of a zip archive (nested folders, no nested zips)."""
    if data[:4] != b"PK\x03\x04":
        return [(name, data)]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [(f"{name}/{i.filename}", zf.read(i)) for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as e:
        raise NotStorableError(f"{name}: corrupt zip archive: {e}") from e


def store_files(spool: Spool, files: list[tuple[str, bytes]], source: str) -> UploadReport:
    """Store every DICOM instance in ``files``; others are listed as refused with the reason.

    OutOfResourcesError propagates (the caller answers 507): nothing is half-stored.
    """
    report = UploadReport()
    for name, data in files:
        try:
            members = iter_files(name, data)
        except NotStorableError as e:
            report.refused.append((name, str(e)))
            continue
        for member, raw in members:
            if member.rsplit("/", 1)[-1].upper() == "DICOMDIR":
                continue
            try:
                ids = parse_part10(raw)
                result = spool.store(raw, ids, source)
            except NotStorableError as e:
                report.refused.append((member, str(e)))
                continue
            except OutOfResourcesError:
                raise
            (report.duplicates if result.outcome == "duplicate" else report.stored).append(ids)
    return report


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
