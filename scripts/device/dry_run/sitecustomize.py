"""Dry runs of the lease scripts (scripts/device/dry_run.sh): refuse to import what the lease
image lacks.

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``; this one puts a finder first
on the import path that raises ImportError for every top-level package named in ``CMB_BLOCK``
(comma separated), as a machine without the package would.
"""

import importlib.abc
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

_BLOCKED = frozenset(filter(None, os.environ.get("CMB_BLOCK", "").split(",")))


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        name: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if name.split(".")[0] in _BLOCKED:
            raise ImportError(f"{name} is not on the lease image (blocked for a dry run)")
        return None


sys.meta_path.insert(0, _Blocker())
