"""The pipeline stand-in of the reliability suite: tests/service/fake_pipeline plus ``SLOW``.

A series described ``SLOW`` makes the run last 2 s, so that a fault (a broker
restart, a database restart) can be injected while jobs are queued and running.
Everything else (``SLEEP_ONCE``, ``FAIL_CMB``...) is the service tests' fake.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread

from tests.service import fake_pipeline

SLOW_S = 2.0


def process(inputs: Sequence[Path], out_dir: Path, options: Any = None) -> Any:
    descriptions = {
        str(dcmread(p, stop_before_pixels=True).get("SeriesDescription", "")) for p in inputs[:1]
    }
    if "SLOW" in descriptions:
        time.sleep(SLOW_S)
    return fake_pipeline.process(inputs, out_dir, options)
