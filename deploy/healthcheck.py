"""Container health check of the cmb-detect images (Dockerfile HEALTHCHECK).

* ``cmb serve`` containers: GET ``/healthz`` on the REST API (``--api-port`` or
  ``CMB_API_PORT``); with the API off or in role ``scp`` (``--role`` /
  ``CMB_ROLE``, which serves no HTTP), a TCP connection to the DICOM port.
* ``cmb worker`` containers: a Celery ping addressed to this container's worker
  (``cmb worker`` names itself ``cmb-<pid>@<hostname>``), through ``CMB_BROKER_URL``.

Exit 0 healthy, 1 unhealthy (with the reason on stderr), as Docker expects.
Standard library only, except for the worker ping, which uses the service's own
Celery app and settings.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from pathlib import Path


def cmb_processes() -> list[tuple[int, list[str]]]:
    """(pid, argv) of every `cmb ...` process in this container."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if any(Path(a).name == "cmb" or a == "cmb.cli" for a in args[:3]):
            found.append((int(entry.name), args))
    return sorted(found)


def option(argv: list[str], flag: str, env: str, default: str) -> str:
    """A `cmb serve` option as the process got it: flag, else environment, else default."""
    for i, arg in enumerate(argv[:-1]):
        if arg == flag:
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return os.environ.get(env, default)


def check_serve(argv: list[str]) -> str | None:
    port = option(argv, "--api-port", "CMB_API_PORT", "8000")
    role = option(argv, "--role", "CMB_ROLE", "all")
    if port == "0" or role == "scp":
        dicom = int(option(argv, "--dicom-port", "CMB_DICOM_PORT", "11112"))
        if dicom == 0:
            return None  # nothing listens: the process being alive is all there is to check
        try:
            with socket.create_connection(("127.0.0.1", dicom), timeout=4):
                return None
        except OSError as e:
            return f"DICOM port {dicom} refuses connections: {e}"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as r:
            return None if r.status == 200 else f"/healthz answered {r.status}"
    except OSError as e:
        return f"/healthz unreachable: {e}"


def check_worker(pid: int) -> str | None:
    from service.settings import load_settings
    from service.tasks import make_celery

    app = make_celery(load_settings())
    name = f"cmb-{pid}@{socket.gethostname()}"
    replies = app.control.ping(destination=[name], timeout=4)
    return None if replies else f"Celery worker {name} did not answer a ping"


def main() -> int:
    procs = cmb_processes()
    if not procs:
        print("no cmb process is running", file=sys.stderr)
        return 1
    pid, argv = procs[0]
    problem = check_worker(pid) if "worker" in argv else check_serve(argv)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
