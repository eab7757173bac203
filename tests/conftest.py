"""Suite-wide test settings.

pydicom's writing validation is strict for the whole suite (as highdicom's
suite does): every dataset we create must have valid values for its VRs.
Reading stays lenient, because real scanner files (../shared/data/real_dicom)
carry the small violations that real PACS traffic carries too.
"""

from __future__ import annotations

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
