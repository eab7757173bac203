"""Structured logging: one JSON object per line, UIDs only.

Patient name, ID and birth date must never reach a log line: the service logs
Study/Series/SOP Instance UIDs, job ids and AE titles, and the formatter drops
any ``extra`` key that names a patient attribute as a second line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
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
    # pynetdicom logs whole datasets at DEBUG (patient data): keep it at WARNING.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # highdicom narrates every module it copies: noise at INFO.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
