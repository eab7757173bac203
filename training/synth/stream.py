"""An endless, deterministic stream of synthetic cases (numpy only; torch wrapper elsewhere).

Worker ``w`` of ``n`` takes seeds ``seed + w, seed + w + n, ...`` so parallel
loaders never duplicate a case and a restart with the same seed replays the
stream.  Generation costs seconds per case; ``reuse`` yields each case that
many times through ``transform`` (e.g. different random patches) and
``cache_dir`` keeps generated cases in the standardized layout so later epochs
read them back instead of regenerating.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from model.errors import InputError
from training.synth.engine import SynthCase, generate_case


def case_seeds(seed: int, worker: int = 0, n_workers: int = 1) -> Iterator[int]:
    if not 0 <= worker < n_workers:
        raise ValueError(f"worker {worker} is not in 0..{n_workers - 1}")
    return itertools.count(seed + worker, n_workers)


def _cached(cache_dir: Path, seed: int, split: str, make: Callable[[], SynthCase]) -> SynthCase:
    """Read case ``seed`` from ``cache_dir`` if present, else generate and store it."""
    from training.datasets.layout import append_record, load_case, write_images

    case_id = f"synth-{split}-{seed:08d}"
    if (cache_dir / "images" / f"{case_id}.nii.gz").is_file() and (
        cache_dir / "cases.jsonl"
    ).is_file():
        try:
            image, labels, record = load_case(cache_dir, case_id)
            from training.synth.params import SynthParams

            params = SynthParams(
                seed=seed,
                subject=int(record["subject"]),
                split=split,
                sequence=record["acquisition"]["sequence"],
            )
            return SynthCase(case_id, image, labels, record, params)
        except (InputError, KeyError, ValueError, RuntimeError):
            pass  # a half-written cache entry is regenerated below
    case = make()
    write_images(cache_dir, case)
    append_record(cache_dir, case.record)
    return case


def iter_cases(
    seed: int,
    *,
    worker: int = 0,
    n_workers: int = 1,
    split: str = "train",
    sequence: str = "mixed",
    params_override: dict[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
) -> Iterator[SynthCase]:
    """Cases of one worker's share of the stream (``limit`` cases, or forever)."""
    seeds = case_seeds(seed, worker, n_workers)
    if limit is not None:
        seeds = itertools.islice(seeds, limit)
    for s in seeds:

        def make(s: int = s) -> SynthCase:
            return generate_case(s, split=split, sequence=sequence, params_override=params_override)

        yield _cached(Path(cache_dir), s, split, make) if cache_dir else make()


def iter_samples(
    seed: int,
    transform: Callable[[SynthCase], Any],
    *,
    reuse: int = 1,
    **kwargs: Any,
) -> Iterator[Any]:
    """``transform(case)`` ``reuse`` times per case, for every case of the stream."""
    if reuse < 1:
        raise ValueError("reuse must be >= 1")
    for case in iter_cases(seed, **kwargs):
        for _ in range(reuse):
            yield transform(case)
