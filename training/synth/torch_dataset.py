"""torch ``IterableDataset`` over the synthetic stream (the only synth module that imports torch).

Each DataLoader worker generates its own share of seeds (see
:mod:`training.synth.stream`); ``transform`` turns a `SynthCase` into the
training sample (typically: the shared ``model.preprocess`` resampling and
normalization, then random patches), and is called ``reuse`` times per case.
Without a transform a sample is ``{"image": [1, K, J, I] float32, "labels":
[K, J, I] int64, "affine": [4, 4] float64, "case_id": str}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from training.synth.engine import SynthCase
from training.synth.stream import iter_samples


def default_transform(case: SynthCase) -> dict[str, Any]:
    return {
        "image": torch.from_numpy(case.image.array.copy()).unsqueeze(0),
        "labels": torch.from_numpy(case.labels.array.astype("int64")),
        "affine": torch.from_numpy(case.image.affine.copy()),
        "case_id": case.case_id,
    }


class SynthStreamDataset(IterableDataset):
    """Endless synthetic samples; deterministic per (seed, worker count)."""

    def __init__(
        self,
        seed: int,
        *,
        split: str = "train",
        sequence: str = "mixed",
        transform: Callable[[SynthCase], Any] | None = None,
        reuse: int = 1,
        cache_dir: str | Path | None = None,
        params_override: dict[str, Any] | None = None,
        limit_per_worker: int | None = None,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.split = split
        self.sequence = sequence
        self.transform = transform or default_transform
        self.reuse = reuse
        self.cache_dir = cache_dir
        self.params_override = params_override
        self.limit_per_worker = limit_per_worker

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return iter_samples(
            self.seed,
            self.transform,
            reuse=self.reuse,
            worker=worker,
            n_workers=n_workers,
            split=self.split,
            sequence=self.sequence,
            params_override=self.params_override,
            cache_dir=self.cache_dir,
            limit=self.limit_per_worker,
        )
