"""No element value (a patient name in a garbled element) in pydicom's logs or warnings."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator

import pydicom
import pytest
from pydicom.uid import generate_uid

from service.logs import JsonFormatter, install_redaction, redact_values
from tests.service.dicom_factory import mr_dataset

NAME = "Zyxwv^Qwerty"


def test_redact_values_keeps_the_reason_and_drops_the_value() -> None:
    text = (
        "Invalid value for VR UI: '1.2.3\\x00Zyxwv^Qwerty' at b'\\x9a' "
        'or "Zyxwv" (the dataset\'s tag)'
    )
    out = redact_values(text)
    assert "Zyxwv" not in out and "\\x9a" not in out
    assert out.startswith("Invalid value for VR UI: <value redacted> at <value redacted>")
    assert out.endswith("(the dataset's tag)")


def _stretched() -> bytes:
    """A file whose SOP Class UID value runs over the patient's name (as a garbled length)."""
    ds = mr_dataset(generate_uid(), generate_uid(), 0)
    ds.PatientName = NAME
    ds.SOPClassUID = f"1.2.840.10008.5.1.4.1.1.4 {NAME} " * 3  # too long, not a UID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def capture() -> Iterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


def test_pydicom_records_and_warnings_are_redacted(capture: _Capture) -> None:
    install_redaction()
    install_redaction()  # idempotent: one factory, not two
    ds = pydicom.dcmread(io.BytesIO(_stretched()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytest's recorder would hold the warning itself
        _ = ds.SOPClassUID  # validation warns and logs (logger "pydicom"), quoting the value
    # What logging.captureWarnings makes of a warning (the routing: see the next tests).
    logging.getLogger("py.warnings").warning("x.py:1: UserWarning: bad PN '%s'", NAME)
    assert any('"logger": "pydicom"' in line for line in capture.lines)
    assert any('"logger": "py.warnings"' in line for line in capture.lines)
    assert not [line for line in capture.lines if "Zyxwv" in line]


def test_other_loggers_are_untouched(capture: _Capture) -> None:
    install_redaction()
    logging.getLogger("service.test").info("job %s failed: '%s'", "j1", "keep me")
    assert "'keep me'" in capture.lines[-1]


def test_a_fresh_process_writes_no_value_to_stderr() -> None:
    """A process that installs the redaction first: its stderr carries no element value."""
    code = (
        "import io, logging, warnings, pydicom\n"
        "from service.logs import install_redaction\n"
        "install_redaction()\n"
        "logging.basicConfig()\n"
        "warnings.simplefilter('always')\n"
        "ds = pydicom.dcmread(io.BytesIO(open(0, 'rb').read()))\n"
        "print(ds.SOPClassUID[:5])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=_stretched(), capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()
    assert b"value redacted" in out.stderr
    assert b"Zyxwv" not in out.stderr
