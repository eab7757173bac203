"""Where the project finds files that are not part of the package.

``CMB_SHARED_DATA`` points at the read-only shared data folder (SynthSeg label
maps, real scanner DICOM); by default it is ``../shared/data`` next to the
project checkout.  A missing folder fails when it is used, with a pointer to
the setting, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def shared_data_dir(required: bool = True) -> Path:
    """The shared data folder (``CMB_SHARED_DATA``, default ``<project>/../shared/data``)."""
    configured = os.environ.get("CMB_SHARED_DATA")
    path = Path(configured) if configured else PROJECT_ROOT.parent / "shared" / "data"
    if required and not path.is_dir():
        raise FileNotFoundError(
            f"shared data folder {path} does not exist; set CMB_SHARED_DATA to the folder "
            "that holds synthseg/ and real_dicom/ (see README.md, 'Shared data')"
        )
    return path
