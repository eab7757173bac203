"""The durable spool: each instance's bytes as received, fsynced, then recorded in the DB.

The order is the contract of the C-STORE SCP: the file is on disk (file and
directory fsynced) and its row committed before a success status leaves; a
crash at any point either loses an instance the sender was never told about, or
keeps one it was.  A duplicate (same SOP Instance UID, same bytes) changes
nothing; the same UID with different bytes replaces the file and marks the
study changed, so it is processed again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import socket
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from sqlalchemy.exc import IntegrityError

from service.db.models import Instance, Series, Study, utcnow
from service.db.session import Database

log = logging.getLogger(__name__)

#: SOP classes we store (docs/conformance.md, "Network"): MR, Enhanced MR, Legacy Converted MR.
SUPPORTED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
}

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: ``.<sop>.dcm.<host>-<pid>-<uuid>.tmp``: a write in progress, and who writes it.
_TMP_RE = re.compile(r"^\..+\.dcm\.(?P<host>.+)-(?P<pid>[0-9]+)-[0-9a-f]{32}\.tmp$")


class OutOfResourcesError(Exception):
    """Free disk below the configured reserve (C-STORE status 0xA700)."""


class NotStorableError(ValueError):
    """The bytes are not a DICOM instance we accept (unreadable, missing UIDs, wrong SOP class)."""


@dataclass(frozen=True)
class InstanceIds:
    """The identifiers the spool needs; nothing else of the dataset is looked at."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    modality: str | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset, transfer_syntax_uid: str) -> InstanceIds:
        try:
            ids = cls(
                sop_class_uid=str(ds.SOPClassUID),
                sop_instance_uid=str(ds.SOPInstanceUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                series_instance_uid=str(ds.SeriesInstanceUID),
                transfer_syntax_uid=str(transfer_syntax_uid),
                modality=str(ds.get("Modality", "")) or None,
            )
        except AttributeError as e:
            raise NotStorableError(f"instance lacks a required UID: {e}") from e
        for uid in (ids.sop_instance_uid, ids.study_instance_uid, ids.series_instance_uid):
            if not uid or len(uid) > 64:
                raise NotStorableError(f"invalid UID {uid!r}")
        return ids


@dataclass(frozen=True)
class StoreResult:
    ids: InstanceIds
    outcome: str  # "stored" | "duplicate" | "replaced"


#: What pydicom raises on malformed bytes: besides InvalidDicomError, a cut or
#: garbled element surfaces as one of these while reading or decoding a value.
_DECODE_ERRORS = (
    InvalidDicomError,
    BytesLengthException,
    EOFError,
    ValueError,  # includes UnicodeDecodeError
    OSError,
    struct.error,
    KeyError,
    IndexError,
    TypeError,
    OverflowError,
    NotImplementedError,
)


def parse_part10(raw: bytes) -> InstanceIds:
    """Identifiers of a DICOM Part 10 file (upload, STOW-RS part) without its pixel data.

    Anything malformed raises `NotStorableError` with the reason (a 4xx over
    REST, a failure status over DIMSE), never a decoding error of pydicom.
    """
    try:
        ds = dcmread(io.BytesIO(raw), stop_before_pixels=True, force=False)
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if not ts:
            raise NotStorableError("DICOM file without a Transfer Syntax UID in its file meta")
        # pydicom decodes values lazily: the UIDs are read here, inside the guard.
        return InstanceIds.from_dataset(ds, str(ts))
    except NotStorableError:
        raise
    except InvalidDicomError as e:
        raise NotStorableError(f"not a DICOM file: {e}") from e
    except _DECODE_ERRORS as e:
        raise NotStorableError(
            f"not a DICOM file (truncated or corrupt): {type(e).__name__}: {e}"
        ) from e


def _safe(uid: str) -> str:
    return uid if _UID_RE.match(uid) else hashlib.sha1(uid.encode()).hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Writes instances under ``<spool>/<study>/<series>/<sop>.dcm`` and records them."""

    def __init__(self, root: Path, db: Database, reserve_bytes: int) -> None:
        self.root = root
        self.db = db
        self.reserve_bytes = reserve_bytes
        root.mkdir(parents=True, exist_ok=True)

    def check_space(self, incoming: int = 0) -> None:
        free = shutil.disk_usage(self.root).free
        if free - incoming < self.reserve_bytes:
            raise OutOfResourcesError(
                f"free disk {free // 2**20} MiB is below the reserve of "
                f"{self.reserve_bytes // 2**20} MiB"
            )

    def path_for(self, ids: InstanceIds) -> Path:
        return (
            self.root
            / _safe(ids.study_instance_uid)
            / _safe(ids.series_instance_uid)
            / f"{_safe(ids.sop_instance_uid)}.dcm"
        )

    def store(self, raw: bytes, ids: InstanceIds, source: str) -> StoreResult:
        """Write ``raw`` durably and record it; returns only once both are done."""
        if ids.sop_class_uid not in SUPPORTED_SOP_CLASSES:
            raise NotStorableError(f"SOP class {ids.sop_class_uid} is not supported")
        digest = hashlib.sha256(raw).hexdigest()
        with self.db.session() as s:
            existing = s.get(Instance, ids.sop_instance_uid)
            if existing is not None and existing.sha256 == digest:
                return StoreResult(ids, "duplicate")
        self.check_space(len(raw))
        path = self.path_for(ids)
        self._write(path, raw)
        for attempt in range(3):
            try:
                return self._record(ids, path, digest, len(raw), source)
            except IntegrityError:
                # Another association created the same study/series/instance row at once.
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")

    def _write(self, path: Path, raw: bytes) -> None:
        created = []
        for parent in (path.parent.parent, path.parent):
            if not parent.exists():
                parent.mkdir(parents=True, exist_ok=True)
                created.append(parent)
        owner = f"{socket.gethostname()}-{os.getpid()}"
        tmp = path.with_name(f".{path.name}.{owner}-{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        for d in created:
            _fsync_dir(d.parent)

    def _record(
        self, ids: InstanceIds, path: Path, digest: str, size: int, source: str
    ) -> StoreResult:
        now = utcnow()
        calling_ae = source.split(":", 1)[1] if source.startswith("dimse:") else None
        with self.db.session() as s:
            study = s.get(Study, ids.study_instance_uid, with_for_update=True)
            if study is None:
                study = Study(
                    study_instance_uid=ids.study_instance_uid,
                    first_received_at=now,
                    last_received_at=now,
                    dirty=True,
                    calling_ae=calling_ae,
                )
                s.add(study)
                s.flush()
            series = s.get(Series, ids.series_instance_uid)
            if series is None:
                series = Series(
                    series_instance_uid=ids.series_instance_uid,
                    study_instance_uid=ids.study_instance_uid,
                    modality=ids.modality,
                    n_instances=0,
                    last_received_at=now,
                )
                s.add(series)
                s.flush()
            inst = s.get(Instance, ids.sop_instance_uid)
            if inst is not None and inst.sha256 == digest:
                return StoreResult(ids, "duplicate")
            outcome = "replaced" if inst is not None else "stored"
            if inst is None:
                inst = Instance(sop_instance_uid=ids.sop_instance_uid)
                s.add(inst)
                series.n_instances += 1
            inst.sop_class_uid = ids.sop_class_uid
            inst.series_instance_uid = ids.series_instance_uid
            inst.study_instance_uid = ids.study_instance_uid
            inst.transfer_syntax_uid = ids.transfer_syntax_uid
            inst.path = str(path)
            inst.sha256 = digest
            inst.size = size
            inst.source = source[:32]
            inst.received_at = now
            series.last_received_at = now
            study.last_received_at = now
            study.dirty = True
            if calling_ae:
                study.calling_ae = calling_ae
        log.info(
            "instance %s",
            outcome,
            extra={
                "sop_instance_uid": ids.sop_instance_uid,
                "series_instance_uid": ids.series_instance_uid,
                "study_instance_uid": ids.study_instance_uid,
                "source": source,
            },
        )
        return StoreResult(ids, outcome)

    def remove_cut_writes(self, foreign_after_s: float = 3600.0) -> int:
        """Delete temporary files of writes cut by a crash; returns how many (at start-up).

        A temporary file is never acknowledged (its instance was not yet
        stored), so removing it loses nothing a sender was told about.  Files of
        a process still alive on this host are kept (another ``cmb serve`` role
        on the same spool); those of another host only once untouched for
        ``foreign_after_s`` (a shared spool); unnamed ones (older versions) always go.
        """
        host, me = socket.gethostname(), os.getpid()
        removed = 0
        for tmp in self.root.rglob(".*.tmp"):
            m = _TMP_RE.match(tmp.name)
            if m is None:
                stale = tmp.name.endswith(".tmp") and ".dcm." in tmp.name
            elif m["host"] == host:
                stale = int(m["pid"]) == me or not _alive(int(m["pid"]))
            else:
                try:
                    stale = time.time() - tmp.stat().st_mtime > foreign_after_s
                except FileNotFoundError:
                    continue
            if stale:
                tmp.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("removed %d temporary file(s) of writes cut by a crash", removed)
        return removed

    def study_paths(self, study_instance_uid: str) -> list[Path]:
        """Every stored file of a study, sorted (the pipeline's input)."""
        from sqlalchemy import select

        with self.db.session() as s:
            rows = s.scalars(
                select(Instance.path).where(Instance.study_instance_uid == study_instance_uid)
            ).all()
        return sorted(Path(p) for p in rows)
