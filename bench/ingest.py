"""Ingest: our Storage SCP against a minimal pynetdicom SCP, dcmtk storescp and Orthanc.

Run: ``nice -n 5 .venv/bin/python -m bench.ingest [--quick]``

Every receiver gets the same study from dcmtk ``storescu`` (one association
per sender, all files on one command line), with 1 and with 4 concurrent
senders (the study split into 4 disjoint parts), started fresh on an empty
folder for every measurement; the time runs from the first ``storescu``
start to the exit of the last one (every C-STORE answered, so every
instance is stored).  Receivers run round-robin in every repeat.

Fair configuration (see docs/benchmarks.md, "Ingest"): dcmtk (storescu,
storescp, and the dcmtk inside Orthanc) is run with ``TCP_NODELAY=1`` in its
environment.  The Debian dcmtk 3.6.7 build leaves Nagle's algorithm on unless
that variable is set, and dcmtk writes each DIMSE response as two small
``write`` calls (a 12-byte PDU/PDV header, then the command); the second waits
for the ACK of the first, which the peer delays by ~40 ms: ~50 ms per
instance, whatever the receiver does.  The ``*_as_installed`` rows show that
default once (1 sender).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import REPO, Recorder, phantom, ratio, stats

NODELAY = {"TCP_NODELAY": "1"}
KINDS = ("minimal", "ours", "storescp", "orthanc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_study(folder: Path, n: int, rows: int) -> list[Path]:
    from model.series_writer import write_series

    volume = phantom((n, rows, rows), (1.0, 0.9, 0.9), n_spots=0)
    return write_series(volume, folder, flavour="siemens_swi")


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    env.update(extra)
    return env


def _wait(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def receiver(kind: str, folder: Path, nodelay: bool) -> Iterator[tuple[str, int]]:
    """Start one receiver on a fresh folder; yields (called AE title, port)."""
    port = free_port()
    folder.mkdir(parents=True)
    env = _env(NODELAY if nodelay else {})
    log = open(folder / "receiver.log", "w")  # noqa: SIM115 - closed in finally
    proc: subprocess.Popen[Any]
    if kind in ("ours", "minimal"):
        cmd = [sys.executable, "-m", "bench.ingest_receivers", kind, str(port), str(folder / "d")]
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True
        )
        if proc.stdout is None or proc.stdout.readline().strip() != "READY":
            proc.kill()
            raise RuntimeError(f"{kind} receiver failed, see {folder / 'receiver.log'}")
        aet = "CMB_AI" if kind == "ours" else "MINIMAL"
    elif kind == "storescp":
        (folder / "d").mkdir()
        cmd = ["storescp", "-od", str(folder / "d"), "+xa", "-aet", "STORESCP", str(port)]
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        _wait(lambda: _port_open(port), "storescp")
        aet = "STORESCP"
    elif kind == "orthanc":
        http = free_port()
        (folder / "d").mkdir()
        config = {
            "Name": "bench",
            "StorageDirectory": str(folder / "d"),
            "IndexDirectory": str(folder / "d"),
            "DicomAet": "ORTHANC",
            "DicomPort": port,
            "HttpPort": http,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [],
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        proc = subprocess.Popen(
            ["Orthanc", str(folder / "orthanc.json")], env=env, stdout=log, stderr=log
        )

        def ready() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/system", timeout=0.5)
                return _port_open(port)
            except OSError:
                return False

        _wait(ready, "Orthanc")
        aet = "ORTHANC"
    else:
        raise ValueError(f"unknown receiver {kind!r}")
    try:
        yield aet, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def send(files: list[Path], aet: str, port: int, senders: int, nodelay: bool) -> float:
    """storescu x ``senders`` in parallel (disjoint parts); seconds until all exited."""
    parts = [files[i::senders] for i in range(senders)]
    env = _env(NODELAY if nodelay else {})
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aet", "BENCH", "-aec", aet, "127.0.0.1", str(port), *map(str, part)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for part in parts
    ]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.perf_counter() - t0
    bad = [
        e.decode(errors="replace")[-500:]
        for p, e in zip(procs, errors, strict=True)
        if p.returncode
    ]
    if bad:
        raise RuntimeError(f"storescu failed: {bad[0]}")
    return elapsed


def count_received(kind: str, folder: Path) -> int:
    root = folder / "d"
    if kind == "orthanc":  # Orthanc's storage holds attachments without suffix + its index
        return sum(1 for p in root.rglob("*") if p.is_file() and len(p.name) == 36)
    if kind == "storescp":  # storescp names files MR.<SOPInstanceUID>
        return sum(1 for p in root.rglob("*") if p.is_file())
    return sum(1 for p in root.rglob("*.dcm") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--instances", type=int)
    parser.add_argument("--study", type=Path, help="send this folder of .dcm files instead")
    parser.add_argument(
        "--receivers",
        nargs="+",
        choices=KINDS,
        default=list(KINDS),
        help="receivers to measure (minimal is always included: the ratios need it)",
    )
    args = parser.parse_args(argv)
    kinds = tuple(k for k in KINDS if k == "minimal" or k in args.receivers)
    for tool in (
        "storescu",
        *(t for k, t in (("storescp", "storescp"), ("orthanc", "Orthanc")) if k in kinds),
    ):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (apt: dcmtk, orthanc)")

    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    n = args.instances or (12 if quick else 452)
    rows = 64 if quick else 256
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    if args.study:
        files = sorted(args.study.glob("*.dcm"))
    else:
        files = make_study(tmp / "study", n, rows)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    rec = Recorder("ingest", quick)
    sender_counts = (1, 4)
    rec.params = {
        "instances": len(files),
        "study_mb": round(size_mb, 1),
        "instance_shape": [rows, rows],
        "receivers": {
            k: v
            for k, v in {
                "minimal": "pynetdicom AE, handler writes received bytes (no fsync)",
                "ours": "service.scp.StorageSCP + Spool: file + fsync + dir fsync, then the SQLite "
                "row (new instance: commit without flush, WAL synchronous=NORMAL; see "
                "docs/reliability.md)",
                "storescp": "dcmtk storescp -od DIR +xa (no fsync)",
                "orthanc": "Orthanc defaults (SQLite index, SyncStorageArea true), plugins off",
            }.items()
            if k in kinds
        },
        "sender": "dcmtk storescu, one association per sender, TCP_NODELAY=1",
        "senders": sender_counts,
        "repeats": repeats,
    }
    times: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    run = 0
    for rep in range(repeats):
        for kind in kinds:
            for senders in sender_counts:
                folder = tmp / f"rx{run}"
                run += 1
                with receiver(kind, folder, nodelay=True) as (aet, port):
                    t = send(files, aet, port, senders, nodelay=True)
                key = f"{kind}_{senders}sender{'s' if senders > 1 else ''}"
                times.setdefault(key, []).append(t)
                counts[key] = count_received(kind, folder)
                shutil.rmtree(folder / "d", ignore_errors=True)
        if rep == 0:  # the as-installed default (Nagle on), once
            for kind in (k for k in ("storescp", "orthanc") if k in kinds):
                folder = tmp / f"rx{run}"
                run += 1
                with receiver(kind, folder, nodelay=False) as (aet, port):
                    t = send(files, aet, port, 1, nodelay=False)
                times.setdefault(f"{kind}_as_installed_1sender", []).append(t)
                counts[f"{kind}_as_installed_1sender"] = count_received(kind, folder)
                shutil.rmtree(folder / "d", ignore_errors=True)
        print(f"repeat {rep + 1}/{repeats}:", {k: round(v[-1], 2) for k, v in times.items()})
    rec.results["seconds"] = {k: stats(v) for k, v in times.items()}
    rec.results["instances_per_s_median"] = {
        k: len(files) / stats(v)["median"] for k, v in times.items()
    }
    rec.results["received_instances"] = counts
    rec.results["speed_ratio_vs_minimal"] = {
        k: ratio(times[f"minimal_{k.split('_', 1)[1]}"], v)
        for k, v in times.items()
        if "as_installed" not in k and not k.startswith("minimal")
    }
    if "ours" in kinds:
        rec.results["target_ours_ge_0.5x_minimal"] = {
            s: rec.results["speed_ratio_vs_minimal"][f"ours_{s}"]["of_medians"] >= 0.5
            for s in ("1sender", "4senders")
        }
        rec.results["ours_store_steps_median_ms"] = store_breakdown(files[:100], tmp / "breakdown")
        print("our store steps (median ms):", rec.results["ours_store_steps_median_ms"])
    print(f"wrote {rec.write(args.out)}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def store_breakdown(files: list[Path], folder: Path) -> dict[str, float]:
    """Where our SCP's time per instance goes: the Spool's steps timed one by one (ms).

    In-process, no network: parse the identifiers (pydicom, as the handler
    does), sha256, the durable write (file + fsync + rename + directory fsync)
    and the database record (SQLite, one transaction per instance with the
    duplicate check; a new instance's commit does not wait for the disk).
    """
    import hashlib

    from service.db.session import Database
    from service.settings import load_settings
    from service.store import Spool, parse_part10

    settings = load_settings(data_dir=folder, api_port=0, dicom_port=0)
    folder.mkdir(parents=True, exist_ok=True)
    spool = Spool(settings.spool_dir, Database(settings.db_url), reserve_bytes=0)
    steps: dict[str, list[float]] = {"parse": [], "sha256": [], "write_fsync": [], "db_record": []}
    for f in files:
        raw = f.read_bytes()
        t0 = time.perf_counter()
        ids = parse_part10(raw)  # as the SCP's handler does
        t1 = time.perf_counter()
        digest = hashlib.sha256(raw).hexdigest()
        t2 = time.perf_counter()
        path = spool.path_for(ids)
        spool._write(path, raw)
        t3 = time.perf_counter()
        spool._record(ids, path, digest, len(raw), "dimse:BENCH")
        t4 = time.perf_counter()
        for k, a, b in (("parse", t0, t1), ("sha256", t1, t2), ("write_fsync", t2, t3)):
            steps[k].append(b - a)
        steps["db_record"].append(t4 - t3)
    return {k: 1000.0 * sorted(v)[len(v) // 2] for k, v in steps.items()}


if __name__ == "__main__":
    raise SystemExit(main())
