"""A progress bar for pipeline stages, shown on stderr (tqdm)."""

from __future__ import annotations

import sys
from typing import Any


class StageProgress:
    """Callable ``(stage, done, total)`` that drives one tqdm bar per stage."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._bar = tqdm(total=total, desc=stage, unit="win", leave=False, file=sys.stderr)
            self._stage = stage
        if self._bar is not None:
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self._stage = None
