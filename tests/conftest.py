"""Suite-wide test settings.

pydicom's writing validation is strict for the whole suite (as highdicom's
suite does): every dataset we create must have valid values for its VRs.
Reading stays lenient, because real scanner files (../shared/data/real_dicom)
carry the small violations that real PACS traffic carries too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom import config as pydicom_config

pydicom_config.settings.writing_validation_mode = pydicom_config.RAISE


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests that need it skip only when it is absent."""
    from model.paths import shared_data_dir

    path = shared_data_dir(required=False)
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not present (set CMB_SHARED_DATA)")
    return path


# Under CI (CI=true) every peer the suite needs is installed by scripts/test.sh,
# so a test that skips because a tool or service is missing would hide a broken
# install step: there, such a skip is a failure.  Only what no CI machine has
# (a GPU) may skip.
CI_ALLOWED_SKIPS = ("needs onnxruntime-gpu and a GPU", "this machine has CUDA")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes") or not report.skipped:
        return
    reason = (
        str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    )
    if not any(allowed in reason for allowed in CI_ALLOWED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where every test peer must be installed: {reason}"
