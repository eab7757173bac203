"""Structured logging: one JSON object per line, UIDs only.

Patient name, ID and birth date must never reach a log line: the service logs
Study/Series/SOP Instance UIDs, job ids and AE titles, and the formatter drops
any ``extra`` key that names a patient attribute as a second line of defence.

pydicom's warnings and log records quote raw element values ("Invalid value
for VR UI: '...'"), and a garbled element can hold the patient's name.
`install_redaction` (called by `configure_logging`, by `Service.start` and in
every embedded job process) routes Python warnings into logging and rewrites
every record of the ``pydicom`` and ``py.warnings`` loggers as it is created,
with each quoted value replaced by ``<value redacted>``: the reason (VR, tag,
length) stays, the value goes, whatever handler then writes the record.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_FORBIDDEN = {
    "patient_name",
    "patient_id",
    "patientname",
    "patientid",
    "birth_date",
    "patient_birth_date",
    "patientbirthdate",
}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

#: Quoted values as pydicom and Python's repr write them: 'x', "x", b'x', b"x".
#: An opening quote after a letter is an apostrophe ("dataset's"), not a value.
_QUOTED = re.compile(r"(?<!\w)(?:b?'(?:[^'\\]|\\.)*'" + r'|b?"(?:[^"\\]|\\.)*")', re.DOTALL)
#: Loggers whose records may quote element values (prefixes: their children too).
_REDACTED_LOGGERS = ("pydicom", "py.warnings")


def redact_values(text: str) -> str:
    """``text`` with every quoted value (a DICOM element value, a bytes repr) replaced."""
    return _QUOTED.sub("<value redacted>", text)


def _redacts(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in _REDACTED_LOGGERS)


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    if _redacts(record.name):
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # bad %-args: keep the template only
            message = str(record.msg)
        record.msg, record.args = redact_values(message), None
    return record


class _RedactingFactory:
    """A LogRecord factory that redacts records of `_REDACTED_LOGGERS` as they are created."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        return _redact_record(self.inner(*args, **kwargs))


def install_redaction() -> None:
    """Redact element values from pydicom's log records and Python warnings (idempotent).

    A record factory rather than a handler filter, so that it holds for every
    handler, including ones added later (a test's capture, Celery's).
    """
    logging.captureWarnings(True)
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(factory))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_") or key.lower() in _FORBIDDEN:
                continue
            payload[key] = (
                value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
            )
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Route the root logger to stderr in the chosen format (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    install_redaction()
    # pynetdicom logs whole datasets at DEBUG (patient data): keep it at WARNING.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # highdicom narrates every module it copies: noise at INFO.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
