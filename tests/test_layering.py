"""The package layering of ARCHITECTURE.md, enforced.

import-linter checks the static imports (contracts in pyproject.toml); the
second test imports every module of `model` and `service` in a fresh
interpreter and checks that torch was never loaded, which also catches
imports hidden inside functions that run at import time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports (import-linter) is not installed; install the test extra")
    proc = subprocess.run(
        [exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


def test_runtime_packages_do_not_load_torch() -> None:
    code = """
import importlib, pkgutil, sys
import model, service
for pkg in (model, service):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if ".migrations" in info.name:
            continue
        importlib.import_module(info.name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "monai", "training"})
print(",".join(bad))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"model/service loaded: {proc.stdout.strip()}"
