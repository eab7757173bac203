"""The durable spool: each instance's bytes as received, fsynced, then recorded in the DB.

The order is the contract of the C-STORE SCP: the file is on disk (file and
directory fsynced) and its row committed before a success status leaves; a
crash at any point either loses an instance the sender was never told about, or
keeps one it was.  The fsynced file is the durable record of a new instance: on
SQLite its row is committed without a flush of its own (`relax_commit`), and
`Spool.reindex`, run when a Spool is opened, records every file whose row a
crash of the machine lost (docs/reliability.md, "Durability of ingest").  A
duplicate (same SOP Instance UID, same bytes) changes nothing; the same UID with
different bytes replaces the file, is committed durably, and marks the study
changed, so it is processed again.
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
from sqlalchemy import Integer, String, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from service.db.models import Instance, Refusal, Series, Study, UTCDateTime, utcnow
from service.db.session import Database, relax_commit

log = logging.getLogger(__name__)

#: SOP classes we store (docs/conformance.md, "Network"): MR, Enhanced MR, Legacy Converted MR.
SUPPORTED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
}

_STUDIES: Table = Study.__table__  # type: ignore[assignment]
_SERIES: Table = Series.__table__  # type: ignore[assignment]
_INSTANCES: Table = Instance.__table__  # type: ignore[assignment]
_REFUSALS: Table = Refusal.__table__  # type: ignore[assignment]

# The record's statements, built once: building a Core statement per C-STORE cost
# more CPU than executing it (docs/benchmarks.md, section 3).
_SELECT_DIGEST = select(_INSTANCES.c.sha256).where(
    _INSTANCES.c.sop_instance_uid == bindparam("b_uid")
)
_TOUCH_STUDY = (
    update(_STUDIES)
    .where(_STUDIES.c.study_instance_uid == bindparam("b_study"))
    .values(
        last_received_at=bindparam("b_now", type_=UTCDateTime()),
        dirty=True,
        calling_ae=func.coalesce(bindparam("b_ae", type_=String()), _STUDIES.c.calling_ae),
    )
)
_TOUCH_SERIES = (
    update(_SERIES)
    .where(_SERIES.c.series_instance_uid == bindparam("b_series"))
    .values(
        last_received_at=bindparam("b_now", type_=UTCDateTime()),
        n_instances=_SERIES.c.n_instances + bindparam("b_added", type_=Integer()),
    )
)
# A refused instance restarts its study's quiet time (stability.py): its sender is not done.
_HOLD_STUDY = (
    update(_STUDIES)
    .where(_STUDIES.c.study_instance_uid == bindparam("b_study"))
    .values(last_received_at=bindparam("b_now", type_=UTCDateTime()))
)
# ... and the refused instance is remembered, so that its study waits for it (stability.py).
_FORGET_REFUSAL = delete(_REFUSALS).where(_REFUSALS.c.sop_instance_uid == bindparam("b_uid"))
_INSERT_REFUSAL = insert(_REFUSALS)
_INSERT_STUDY = insert(_STUDIES)
_INSERT_SERIES = insert(_SERIES)
_INSERT_INSTANCE = insert(_INSTANCES)
_INSTANCE_COLUMNS = (
    "sop_class_uid",
    "series_instance_uid",
    "study_instance_uid",
    "transfer_syntax_uid",
    "path",
    "sha256",
    "size",
    "source",
    "received_at",
)
_UPDATE_INSTANCE = (
    update(_INSTANCES)
    .where(_INSTANCES.c.sop_instance_uid == bindparam("b_uid"))
    .values({c: bindparam(f"b_{c}", type_=_INSTANCES.c[c].type) for c in _INSTANCE_COLUMNS})
)

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

    def __init__(
        self, root: Path, db: Database, reserve_bytes: int, *, reindex: bool = True
    ) -> None:
        self.root = root
        self.db = db
        self.reserve_bytes = reserve_bytes
        root.mkdir(parents=True, exist_ok=True)
        if reindex:  # before this process writes: rows a crash lost come back first
            self.reindex()

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
        """Write ``raw`` durably and record it; returns only once both are done.

        The fsynced file is the durable record of a new instance; on SQLite its
        row is committed without waiting for the disk (`relax_commit`) and
        rebuilt from the file by `reindex` if a crash of the machine loses it.  A
        replacement (same UID, other bytes) is committed durably: its old row
        would otherwise survive a crash and hide the new file from `reindex`.
        """
        if ids.sop_class_uid not in SUPPORTED_SOP_CLASSES:
            raise NotStorableError(f"SOP class {ids.sop_class_uid} is not supported")
        digest = hashlib.sha256(raw).hexdigest()
        path = self.path_for(ids)
        # A row is only ever written after its file: without the file this is
        # no resend, and the duplicate check is left to the record's transaction.
        if path.exists() and self._recorded_digest(ids.sop_instance_uid) == digest:
            return StoreResult(ids, "duplicate")
        try:
            self.check_space(len(raw))
        except OutOfResourcesError:
            self._hold(ids)
            raise
        self._write(path, raw)
        return self._record_retrying(ids, path, digest, len(raw), source)

    def _hold(self, ids: InstanceIds) -> None:
        """An instance was refused for lack of space: restart its study's quiet time and
        remember the instance, so that the part of the study that did land is not taken for
        the whole study while its sender is still sending, nor before it sends the instance
        again (up to ``refusal_hold_s``, stability.py).  The refusal of a study of which
        nothing landed yet is remembered too (space may return between two instances);
        retention forgets old refusals.  The refusal stands if this write fails too."""
        now = utcnow()
        uid = ids.sop_instance_uid
        try:
            with self.db.engine.begin() as conn:
                conn.execute(_HOLD_STUDY, {"b_study": ids.study_instance_uid, "b_now": now})
                conn.execute(_FORGET_REFUSAL, {"b_uid": uid})
                conn.execute(
                    _INSERT_REFUSAL,
                    {
                        "sop_instance_uid": uid,
                        "study_instance_uid": ids.study_instance_uid,
                        "refused_at": now,
                    },
                )
        except SQLAlchemyError as e:
            log.warning("could not hold study after a refusal: %s", type(e).__name__)

    def _recorded_digest(self, sop_instance_uid: str) -> str | None:
        with self.db.engine.connect() as conn:
            return conn.execute(_SELECT_DIGEST, {"b_uid": sop_instance_uid}).scalar_one_or_none()

    def _record_retrying(
        self, ids: InstanceIds, path: Path, digest: str, size: int, source: str
    ) -> StoreResult:
        for attempt in range(3):
            try:
                return self._record(ids, path, digest, size, source)
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
        # The new name is durable only once its directory is fsynced (POSIX fsync
        # of the file covers its data and inode, not the entry that names it);
        # so every instance pays this one, also in a directory fsynced before.
        _fsync_dir(path.parent)
        for d in created:
            _fsync_dir(d.parent)

    def _record(
        self,
        ids: InstanceIds,
        path: Path,
        digest: str,
        size: int,
        source: str,
        *,
        relaxed: bool = True,
    ) -> StoreResult:
        """One transaction: the duplicate check, the study, series and instance rows.

        Core statements, no ORM session: this runs once per C-STORE, on the
        association's thread, before the response.
        """
        now = utcnow()
        calling_ae = source.split(":", 1)[1] if source.startswith("dimse:") else None
        uid = ids.sop_instance_uid
        with self.db.engine.begin() as conn:
            prior = conn.execute(_SELECT_DIGEST, {"b_uid": uid}).scalar_one_or_none()
            if prior == digest:
                return StoreResult(ids, "duplicate")
            if prior is None and relaxed:
                relax_commit(conn)  # before any write: the file is the durable record
            study = ids.study_instance_uid
            touched = conn.execute(
                _TOUCH_STUDY, {"b_study": study, "b_now": now, "b_ae": calling_ae}
            )
            if touched.rowcount == 0:
                conn.execute(
                    _INSERT_STUDY,
                    {
                        "study_instance_uid": study,
                        "first_received_at": now,
                        "last_received_at": now,
                        "dirty": True,
                        "calling_ae": calling_ae,
                    },
                )
            added = 1 if prior is None else 0
            series = ids.series_instance_uid
            touched = conn.execute(
                _TOUCH_SERIES, {"b_series": series, "b_now": now, "b_added": added}
            )
            if touched.rowcount == 0:
                conn.execute(
                    _INSERT_SERIES,
                    {
                        "series_instance_uid": series,
                        "study_instance_uid": study,
                        "modality": ids.modality,
                        "n_instances": added,
                        "last_received_at": now,
                    },
                )
            values = {
                "sop_class_uid": ids.sop_class_uid,
                "series_instance_uid": series,
                "study_instance_uid": study,
                "transfer_syntax_uid": ids.transfer_syntax_uid,
                "path": str(path),
                "sha256": digest,
                "size": size,
                "source": source[:32],
                "received_at": now,
            }
            conn.execute(_FORGET_REFUSAL, {"b_uid": uid})
            if prior is None:
                conn.execute(_INSERT_INSTANCE, {"sop_instance_uid": uid, **values})
            else:
                conn.execute(
                    _UPDATE_INSTANCE, {"b_uid": uid, **{f"b_{k}": v for k, v in values.items()}}
                )
        outcome = "replaced" if prior is not None else "stored"
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

    def reindex(self) -> int:
        """Record every spool file that has no row; returns how many (at start-up).

        A new instance's row is committed without waiting for the disk on SQLite
        (see `store`), so a crash of the machine may lose the rows of the last
        instances while their files, fsynced before the response, survive.
        Each such file is read again and recorded as ``recovered``; its study
        becomes dirty, so it is processed.  A file that does not parse, or does
        not belong at its place, is left alone and logged (never deleted).
        """
        files = [p for p in self.root.glob("*/*/*.dcm") if not p.name.startswith(".")]
        if not files:
            return 0
        with self.db.engine.connect() as conn:
            known = set(conn.execute(select(_INSTANCES.c.path)).scalars())
        recovered = 0
        for path in files:
            if str(path) in known:
                continue
            try:
                raw = path.read_bytes()
                ids = parse_part10(raw)
            except (OSError, NotStorableError) as e:
                log.error("spool file not re-indexed, left in place: %s: %s", path, e)
                continue
            if self.path_for(ids) != path or ids.sop_class_uid not in SUPPORTED_SOP_CLASSES:
                log.error("spool file not re-indexed, it does not belong there: %s", path)
                continue
            digest = hashlib.sha256(raw).hexdigest()
            for attempt in range(3):
                try:
                    result = self._record(ids, path, digest, len(raw), "recovered", relaxed=False)
                    break
                except IntegrityError:
                    if attempt == 2:
                        raise
            if result.outcome != "duplicate":
                recovered += 1
        if recovered:
            log.warning("re-indexed %d spool file(s) whose row a crash had lost", recovered)
        return recovered

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
        with self.db.session() as s:
            rows = s.scalars(
                select(Instance.path).where(Instance.study_instance_uid == study_instance_uid)
            ).all()
        return sorted(Path(p) for p in rows)
