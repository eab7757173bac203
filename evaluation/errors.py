"""Errors of the evaluation package (user-facing, so subclasses of ``model.errors``)."""

from __future__ import annotations

from collections.abc import Iterable

from model.errors import InputError


class EvaluationInputError(InputError):
    """Predictions or truth that cannot be read or do not fit together."""


class UnpairedCasesError(EvaluationInputError):
    """Cases present on one side only; the message lists every id."""

    def __init__(self, missing_pred: Iterable[str], missing_truth: Iterable[str]) -> None:
        self.missing_pred = sorted(missing_pred)
        self.missing_truth = sorted(missing_truth)
        parts = []
        if self.missing_pred:
            parts.append(
                f"{len(self.missing_pred)} truth case(s) without prediction: "
                + ", ".join(self.missing_pred)
            )
        if self.missing_truth:
            parts.append(
                f"{len(self.missing_truth)} predicted case(s) without truth: "
                + ", ".join(self.missing_truth)
            )
        super().__init__("; ".join(parts))
