"""dcmtk's ``storescu`` as the tests run it: a real DICOM peer sending to a listener on
127.0.0.1 (ours, or Orthanc in tests/deploy)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

#: send every file below a folder (scan directories, recurse)
FOLDER = ("+sd", "+r")


def storescu(
    path: Path,
    port: int,
    *,
    calling: str = "PACS",
    called: str = "CMB_AI",
    options: Sequence[str] = FOLDER,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``storescu`` once (``options`` before the address: ``FOLDER`` for a folder, ``()``
    for one file, ``("-xr",)`` to propose RLE); the caller reads the outcome."""
    cmd = ["storescu", *options, "-aet", calling, "-aec", called, "127.0.0.1", str(port), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def send(path: Path, port: int, *, calling: str = "PACS", called: str = "CMB_AI") -> None:
    """A folder sent by :func:`storescu` that must succeed (its output in the failure message)."""
    run = storescu(path, port, calling=calling, called=called)
    assert run.returncode == 0, run.stdout + run.stderr
