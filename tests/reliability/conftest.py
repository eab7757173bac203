"""Shared fixtures of the reliability suite: services, peers, log capture, figures.

Every log record of the in-process services and every log file of a started
subprocess is kept; at the end of the session none may contain the patient
name, ID or birth date of the studies the suite sends (`PHI`).  The figures
(faults survived, inputs tried, data lost, duplicates, recovery times) are
collected in `FIGURES` and written as JSON to ``$CMB_RELIABILITY_FIGURES``
when set (docs/reliability.md is written from that file).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from service.logs import JsonFormatter
from service.scu import associate
from service.settings import Settings
from tests.service.conftest import (
    API_KEY,
    KEY,
    REPO,
    Proc,
    _listening,
    free_port,
    quick_settings,
    services,
    wait_for,
)
from tests.service.dicom_factory import mr_dataset

__all__ = [
    "API_KEY",
    "KEY",
    "PHI",
    "REPO",
    "Proc",
    "free_port",
    "listening",
    "services",  # the fixture, shared with tests/service
    "wait_for",
]

#: Patient name, ID and birth date of every study the suite sends (tests/service/dicom_factory).
PHI = ("Secret^Patient", "PID-SECRET-42", "19450101", "Secret")
RELIABILITY_PIPELINE = "tests.reliability.pipeline:process"
MR = "1.2.840.10008.5.1.4.1.1.4"

listening = _listening


class Figures:
    """What the suite measured; one entry per fault scenario and per input channel."""

    def __init__(self) -> None:
        self.faults: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, dict[str, Any]] = {}
        self.other: dict[str, Any] = {}

    def fault(self, name: str, **values: Any) -> None:
        self.faults[name] = values

    def input(self, name: str, **values: Any) -> None:
        self.inputs[name] = values

    def as_json(self) -> dict[str, Any]:
        return {"faults": self.faults, "inputs": self.inputs, "other": self.other}


FIGURES = Figures()


class LogCapture(logging.Handler):
    """Keeps every record (JSON-formatted, as `cmb serve` writes it) and the raw record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self.files: list[Path] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        try:
            self.lines.append(self.format(record))
        except Exception as e:  # a record that cannot be formatted is itself a finding
            self.lines.append(f"UNFORMATTABLE {record.name}: {e}")


LOGS = LogCapture()


@pytest.fixture(scope="session", autouse=True)
def _capture_and_scan_logs() -> Iterator[LogCapture]:
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(LOGS)
    root.setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # as service.logs configures it
    yield LOGS
    root.removeHandler(LOGS)
    root.setLevel(old_level)
    texts, leaks = scan_logs()
    FIGURES.other["log_lines_scanned"] = len(texts)
    FIGURES.other["log_lines_with_patient_data"] = len(leaks)
    out = os.environ.get("CMB_RELIABILITY_FIGURES")
    if out:
        Path(out).write_text(json.dumps(FIGURES.as_json(), indent=2, default=str))


def scan_logs() -> tuple[list[str], list[str]]:
    """Every log line captured so far, and those that carry patient data.

    The assertion is tests/reliability/test_zz_logs.py, the last test of the suite.
    """
    texts = list(LOGS.lines)
    for path in LOGS.files:
        if path.is_file():
            texts.extend(path.read_text(errors="replace").splitlines())
    return texts, [line for line in texts if any(secret in line for secret in PHI)]


def watch_log(path: Path) -> Path:
    """Register a subprocess log file for the end-of-session patient-data scan."""
    LOGS.files.append(path)
    return path


@pytest.fixture
def fast_dir() -> Iterator[Path]:
    """A folder in /dev/shm (tmpfs) when there is one: fsync is free there, tests stay fast."""
    import tempfile

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="cmb-rel-", dir=base))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**kw: Any) -> Settings:
        ours = {"pipeline": RELIABILITY_PIPELINE, "log_format": "json", "allow_ae": ["PACS"]}
        return quick_settings(tmp_path, **{**ours, **kw})

    return make


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(args, watch_log(log), env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


class Destination:
    """A dcmtk storescp that keeps every received object in its own file (+uf)."""

    def __init__(self, ae: str, port: int, folder: Path) -> None:
        self.ae = ae
        self.port = port
        self.folder = folder

    @property
    def address(self) -> str:
        return f"{self.ae}@127.0.0.1:{self.port}"

    def received(self) -> list[tuple[str, int]]:
        """(SOP Instance UID, arrival time ns) of every object received, oldest first."""
        out = []
        for p in self.folder.iterdir():
            if p.is_file() and not p.name.startswith("."):
                try:
                    uid = str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                except Exception:  # a file still being written: counted on the next look
                    continue
                out.append((uid, p.stat().st_mtime_ns))
        return sorted(out, key=lambda t: t[1])


@pytest.fixture
def destination(tmp_path: Path, procs: Callable[..., Proc]) -> Callable[..., Destination]:
    """Factory: start (now or later) a storescp on a fixed port."""
    if shutil.which("storescp") is None:
        pytest.skip("dcmtk storescp is not installed")
    port = free_port()
    folder = tmp_path / "dest"
    folder.mkdir()
    dest = Destination("DEST", port, folder)

    def start(run: bool = True) -> Destination:
        if run:
            procs(
                ["storescp", "+uf", "-aet", dest.ae, "-od", str(folder), str(port)],
                tmp_path / f"storescp-{time.monotonic_ns()}.log",
            )
            wait_for(lambda: listening(port), 10, "storescp to listen")
        return dest

    return start


def study_datasets(
    n: int, *, description: str = "SWI", study_uid: str | None = None, size: int = 8
) -> list[Dataset]:
    """One series of ``n`` small MR slices (known fake patient data) for sending."""
    from pydicom.uid import generate_uid

    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    return [
        mr_dataset(study_uid, series_uid, i, description=description, size=size) for i in range(n)
    ]


def scu_ae(calling: str = "PACS") -> AE:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(MR)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    return ae


def send(
    port: int, datasets: list[Dataset], calling: str = "PACS", abort_after: int | None = None
) -> list[int | None]:
    """C-STORE each dataset on one association; the status of each (None: no answer)."""
    assoc = associate(scu_ae(calling), "127.0.0.1", port, ae_title="CMB_AI")
    if not assoc.is_established:
        raise ConnectionError(f"association to port {port} not established")
    statuses: list[int | None] = []
    try:
        for i, ds in enumerate(datasets):
            if abort_after is not None and i == abort_after:
                assoc.abort()
                return statuses
            st = assoc.send_c_store(ds)
            statuses.append(getattr(st, "Status", None))
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def python_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMB_")}
    env.update(PYTHONPATH=str(REPO), CMB_LOG_FORMAT="json", CMB_LOG_LEVEL="INFO")
    env.update(extra)
    return env


def kill_group(p: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with its own session (and its children)."""
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)


PY = sys.executable
