"""Deterministic UIDs for the outputs of one analysis.

A rerun of the same model on the same source series must *replace* its
earlier results in the PACS, not add a second copy beside them: PACS and
viewers de-duplicate by SOP Instance UID.  Every UID we create is therefore a
pure function of (source Series Instance UID, model sha256, output kind,
index), written in the ``2.25.<decimal of a 128-bit hash>`` form of PS3.5
§B.2 (UUID-derived UIDs, no registered root needed).

A different model (a new sha256) yields different UIDs on purpose: results of
two model versions are two different documents.
"""

from __future__ import annotations

import hashlib

__all__ = ["OutputUids", "derived_uid"]


def derived_uid(*parts: object) -> str:
    """A ``2.25.`` UID (at most 64 characters) that depends only on ``parts``."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    # 128 bits as in a UUID: the decimal has at most 39 digits, "2.25." + 39 = 44 chars.
    value = int.from_bytes(digest[:16], "big")
    return f"2.25.{value}"


class OutputUids:
    """The UIDs of every object derived from one (source series, model) pair."""

    def __init__(self, source_series_uid: str, model_sha256: str) -> None:
        if not source_series_uid:
            raise ValueError("source_series_uid must not be empty")
        if not model_sha256:
            raise ValueError("model_sha256 must not be empty")
        self.source_series_uid = source_series_uid
        self.model_sha256 = model_sha256

    def _uid(self, *parts: object) -> str:
        return derived_uid("cmb-detect", self.source_series_uid, self.model_sha256, *parts)

    def series(self, kind: str) -> str:
        """Series Instance UID of the output series of ``kind`` (seg, sr, pdf, sc)."""
        return self._uid(kind, "series")

    def instance(self, kind: str, index: int = 1) -> str:
        """SOP Instance UID of instance ``index`` (1-based) of the ``kind`` series."""
        return self._uid(kind, "instance", index)

    def tracking(self, detection_id: int) -> str:
        """Tracking Unique Identifier of one CMB (shared by its SEG segment and SR groups)."""
        return self._uid("tracking", detection_id)

    def summary_tracking(self) -> str:
        """Tracking Unique Identifier of the study-level "CMB summary" group."""
        return self._uid("tracking", "summary")

    def device(self) -> str:
        """Device UID of the algorithm: one per model file, whatever the input."""
        return derived_uid("cmb-detect", "device", self.model_sha256)
