"""Fixtures of the deployment tests: subprocesses (Orthanc, storescp, cmb serve) torn down."""

from __future__ import annotations

from tests.service.conftest import procs

__all__ = ["procs"]
