"""Spool.remove_cut_writes: temporary files of writes cut by a crash go at start-up, others stay."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.db.session import Database
from service.store import Spool

HEX = "0123456789abcdef" * 2


def _spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", Database(f"sqlite:///{tmp_path / 'db.sqlite'}"), 0)


def _tmp(spool: Spool, name: str, age_s: float = 0.0) -> Path:
    path = spool.root / "1.2.3" / "1.2.3.4" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half an instance")
    if age_s:
        t = time.time() - age_s
        os.utime(path, (t, t))
    return path


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def test_cut_writes_go_live_ones_stay(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    host = socket.gethostname()
    legacy = _tmp(spool, ".1.2.3.4.5.dcm.0123abcd.tmp")
    dead = _tmp(spool, f".1.2.3.4.6.dcm.{host}-{_dead_pid()}-{HEX}.tmp")
    mine = _tmp(spool, f".1.2.3.4.7.dcm.{host}-{os.getpid()}-{HEX}.tmp")  # a former me
    live = _tmp(spool, f".1.2.3.4.8.dcm.{host}-{os.getppid()}-{HEX}.tmp")
    foreign_new = _tmp(spool, f".1.2.3.4.9.dcm.other-host-12-{HEX}.tmp")
    foreign_old = _tmp(spool, f".1.2.3.4.10.dcm.other-host-12-{HEX}.tmp", age_s=7200)
    unrelated = _tmp(spool, ".notes.tmp")
    assert spool.remove_cut_writes() == 4
    assert not any(p.exists() for p in (legacy, dead, mine, foreign_old))
    assert all(p.exists() for p in (live, foreign_new, unrelated))


def test_writes_name_their_owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporary name carries host and pid (seen while the write is cut short)."""
    spool = _spool(tmp_path)
    target = spool.root / "a" / "b" / "c.dcm"
    seen: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        seen.extend(p.name for p in target.parent.glob(".*.tmp"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    spool._write(target, b"bytes")
    monkeypatch.undo()
    assert target.read_bytes() == b"bytes"
    assert seen and seen[0].startswith(f".c.dcm.{socket.gethostname()}-{os.getpid()}-")
    assert spool.remove_cut_writes() == 0
