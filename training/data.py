"""Training data: preprocessed cases (cached) and a patch dataset with foreground oversampling.

Cases come from folders in the standardized layout (``training.datasets.layout``:
``DIR/images/<case>.nii.gz``, ``DIR/labels/<case>.nii.gz`` instance labels,
``DIR/cases.jsonl``).  Each case is put through ``model.preprocess.prepare``
(the code inference runs) with the model's plan, and its instance labels are
resampled onto the same grid with nearest-neighbour interpolation.  The result
is cached as ``.npy`` files and memory-mapped, so a pool of cases costs little
RAM and DataLoader workers share the pages.

Patches: with probability ``fg_fraction`` a patch is centred (with jitter) on a
microbleed chosen uniformly among the *instances* of the pool, so tiny CMBs are
sampled as often as large ones; otherwise it is centred on a random voxel of
the head's bounding box (where the veins and mimics that the network must
learn to reject are).  Every patch is a pure function of (seed, epoch, index),
which makes runs reproducible and lets DDP ranks draw disjoint patches.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from model.onnx_model import ModelMetadata
from model.preprocess import prepare, resample_like
from model.types import Volume
from training.errors import TrainingInputError

log = logging.getLogger(__name__)

CACHE_FORMAT = "1"


@dataclass(frozen=True)
class CaseRef:
    """One case of a layout folder: where it is and its record (a cases.jsonl line)."""

    root: Path
    case_id: str
    record: dict[str, Any]

    @property
    def n_cmbs(self) -> int:
        return len(self.record.get("cmbs") or [])


@dataclass(frozen=True)
class PreparedCase:
    """A case on the model grid: normalized image, binary target, CMB centres (voxels)."""

    case_id: str
    image: npt.NDArray[np.float32]  # [D, H, W], memory-mapped
    target: npt.NDArray[np.uint8]  # [D, H, W] 0/1
    centers: npt.NDArray[np.float64]  # [n_cmb, 3] voxel (k, j, i) on the model grid
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # head bounding box


def _record_dict(record: Any) -> dict[str, Any]:
    if isinstance(record, dict):
        return record
    for attr in ("to_json", "to_dict", "as_dict"):
        fn = getattr(record, attr, None)
        if callable(fn):
            out = fn()
            if isinstance(out, dict):
                return out
    raise TypeError(f"cannot read a case record of type {type(record).__name__}")


def list_cases(roots: Iterable[str | Path]) -> list[CaseRef]:
    """Every case of the given layout folders, in a stable order."""
    from training.datasets.layout import read_cases

    out: list[CaseRef] = []
    for root in roots:
        path = Path(root)
        if not (path / "cases.jsonl").is_file():
            raise FileNotFoundError(f"{path} is not a dataset folder (no cases.jsonl)")
        for rec in read_cases(path):
            d = _record_dict(rec)
            out.append(CaseRef(root=path, case_id=str(d["case_id"]), record=d))
    return out


def load_volumes(ref: CaseRef) -> tuple[Volume, Volume]:
    """(image, instance labels) of a case, on its source grid."""
    from training.datasets.layout import load_case

    loaded = load_case(ref.root, ref.case_id)
    image = getattr(loaded, "image", None)
    labels = getattr(loaded, "labels", None)
    if image is None and isinstance(loaded, tuple):
        image, labels = loaded[0], loaded[1]
    if not isinstance(image, Volume) or not isinstance(labels, Volume):
        raise TypeError(f"load_case({ref.root}, {ref.case_id}) did not give image and labels")
    return image, labels


def data_hash(refs: Sequence[CaseRef]) -> str:
    """SHA-256 over the case records (ids, acquisition, CMBs): identifies a training set."""
    digest = hashlib.sha256()
    for ref in sorted(refs, key=lambda r: r.case_id):
        digest.update(json.dumps(ref.record, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def head_bbox(image: npt.NDArray[np.float32]) -> tuple[tuple[int, int], ...]:
    """Bounding box of voxels brighter than 5% of the robust range (the head, not the air)."""
    lo, hi = np.percentile(image[::2, ::2, ::2], [1.0, 99.0])
    mask = image > lo + 0.05 * (hi - lo)
    if not mask.any():
        return tuple((0, int(s)) for s in image.shape)
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.flatnonzero(mask.any(axis=other))
        out.append((int(nz[0]), int(nz[-1]) + 1))
    return tuple(out)


def _cache_key(ref: CaseRef, metadata: ModelMetadata) -> str:
    image = ref.root / "images" / f"{ref.case_id}.nii.gz"
    stamp = image.stat().st_mtime_ns if image.exists() else 0
    blob = json.dumps(
        [
            CACHE_FORMAT,
            str(ref.root.resolve()),
            ref.case_id,
            stamp,
            list(metadata.spacing_mm),
            metadata.normalization,
            metadata.input_filter,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_case(ref: CaseRef, metadata: ModelMetadata, cache_dir: Path) -> PreparedCase:
    """Preprocess one case (or read it from the cache) and memory-map it."""
    folder = cache_dir / f"{ref.case_id}-{_cache_key(ref, metadata)}"
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        image, labels = load_volumes(ref)
        prepared = prepare(image, metadata)
        lab = resample_like(labels, prepared, order=0).array
        target = (lab > 0.5).astype(np.uint8)
        centers = [
            prepared.lps_to_index(np.asarray(c["center_lps_mm"], dtype=np.float64))
            for c in ref.record.get("cmbs") or []
        ]
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "image.npy", prepared.array.astype(np.float32))
        np.save(folder / "target.npy", target)
        np.save(folder / "centers.npy", np.asarray(centers, dtype=np.float64).reshape(-1, 3))
        bbox = head_bbox(prepared.array)
        tmp = folder / "meta.json.tmp"
        tmp.write_text(json.dumps({"case_id": ref.case_id, "bbox": bbox}))
        tmp.replace(meta_file)  # written last: a half-written cache entry is never used
    meta = json.loads(meta_file.read_text())
    bb = meta["bbox"]
    return PreparedCase(
        case_id=ref.case_id,
        image=np.load(folder / "image.npy", mmap_mode="r"),
        target=np.load(folder / "target.npy", mmap_mode="r"),
        centers=np.load(folder / "centers.npy"),
        bbox=((bb[0][0], bb[0][1]), (bb[1][0], bb[1][1]), (bb[2][0], bb[2][1])),
    )


def prepare_cases(
    refs: Sequence[CaseRef],
    metadata: ModelMetadata,
    cache_dir: Path,
    progress: Callable[[Iterable[CaseRef]], Iterable[CaseRef]] | None = None,
    workers: int = 1,
) -> list[PreparedCase]:
    """Every case prepared (or read from the cache), in the order of ``refs``.

    ``workers`` > 1 prepares in threads: SimpleITK's resampling and most of
    numpy's work release the GIL, and a growing pool (``data.rescan``) must not
    hold the training loop while a generator adds hundreds of cases.
    """
    if workers < 1:
        raise TrainingInputError(f"workers must be >= 1, got {workers}")
    items: Iterable[CaseRef] = progress(refs) if progress else refs
    if workers == 1:
        return [prepare_case(ref, metadata, cache_dir) for ref in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda ref: prepare_case(ref, metadata, cache_dir), items))


class PoolPreparer:
    """Preprocesses a growing pool's new cases in background threads (``data.rescan``).

    The training loop hands over every case it finds (:meth:`add`, cases already
    seen are ignored) and takes what is ready at each epoch start
    (:meth:`collect`) instead of waiting for the whole rescan: a generator that
    adds hundreds of cases a minute then never stalls a GPU.  Cases join the
    pool in the order they were added, so a slow case holds back the ones after
    it until the next epoch; one that fails to preprocess raises from
    :meth:`collect`, as it would have in the loop.
    """

    def __init__(self, metadata: ModelMetadata, cache_dir: Path, workers: int = 1) -> None:
        if workers < 1:
            raise TrainingInputError(f"workers must be >= 1, got {workers}")
        self._metadata, self._cache_dir = metadata, cache_dir
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prepare")
        self._seen: set[tuple[str, str]] = set()
        self._pending: list[tuple[CaseRef, Future[PreparedCase]]] = []
        self._ready: list[tuple[CaseRef, PreparedCase]] = []

    @staticmethod
    def _key(ref: CaseRef) -> tuple[str, str]:
        return str(ref.root), ref.case_id

    def include(self, refs: Sequence[CaseRef], cases: Sequence[PreparedCase]) -> None:
        """Cases prepared already (the pool the run started with)."""
        for ref, case in zip(refs, cases, strict=True):
            self._seen.add(self._key(ref))
            self._ready.append((ref, case))

    def add(self, refs: Iterable[CaseRef]) -> int:
        """Queue the cases not seen before; returns how many were queued."""
        queued = 0
        for ref in refs:
            if self._key(ref) in self._seen:
                continue
            self._seen.add(self._key(ref))
            job = self._executor.submit(prepare_case, ref, self._metadata, self._cache_dir)
            self._pending.append((ref, job))
            queued += 1
        return queued

    def collect(self) -> bool:
        """Move the finished cases at the head of the queue into the pool; True if it grew."""
        done = 0
        while done < len(self._pending) and self._pending[done][1].done():
            done += 1
        for ref, job in self._pending[:done]:
            self._ready.append((ref, job.result()))
        del self._pending[:done]
        return done > 0

    @property
    def refs(self) -> list[CaseRef]:
        return [ref for ref, _ in self._ready]

    @property
    def cases(self) -> list[PreparedCase]:
        return [case for _, case in self._ready]

    @property
    def waiting(self) -> int:
        """Cases queued and not in the pool yet."""
        return len(self._pending)

    def close(self) -> None:
        """Stop: queued cases that have not started are dropped (the cache keeps the rest)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def crop(
    array: npt.NDArray[Any], center: Sequence[int], size: Sequence[int], fill: float = 0.0
) -> npt.NDArray[Any]:
    """A ``size`` box of ``array`` around ``center``, padded with ``fill`` outside the array."""
    out = np.full(tuple(size), fill, dtype=array.dtype)
    src, dst = [], []
    for c, s, n in zip(center, size, array.shape, strict=True):
        start = int(c) - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = array[tuple(src)]
    return out


class PatchDataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """``length`` random patches per epoch; item ``i`` of epoch ``e`` is fixed by (seed, e, i)."""

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        patch_size: Sequence[int],
        length: int,
        *,
        fg_fraction: float = 0.5,
        fg_jitter: int = 16,
        seed: int = 0,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if not cases:
            raise TrainingInputError("PatchDataset needs at least one case")
        self.cases = list(cases)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.length = int(length)
        self.fg_fraction = float(fg_fraction)
        self.fg_jitter = int(fg_jitter)
        self.seed = int(seed)
        self.transform = transform
        self.epoch = 0
        # (case index, centre) of every microbleed of the pool
        self.instances = [
            (n, c) for n, case in enumerate(self.cases) for c in np.asarray(case.centers)
        ]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def sample_center(self, rng: np.random.Generator) -> tuple[int, tuple[int, int, int]]:
        if self.instances and rng.random() < self.fg_fraction:
            n, c = self.instances[int(rng.integers(len(self.instances)))]
            jitter = rng.integers(-self.fg_jitter, self.fg_jitter + 1, size=3)
            center = np.round(c).astype(int) + jitter
            return n, (int(center[0]), int(center[1]), int(center[2]))
        n = int(rng.integers(len(self.cases)))
        bbox = self.cases[n].bbox
        center2 = [int(rng.integers(lo, max(hi, lo + 1))) for lo, hi in bbox]
        return n, (center2[0], center2[1], center2[2])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item_seed = np.random.SeedSequence([self.seed, self.epoch, int(index)])
        rng = np.random.default_rng(item_seed)
        n, center = self.sample_center(rng)
        case = self.cases[n]
        sample: dict[str, Any] = {
            "image": crop(case.image, center, self.patch_size)[None].astype(np.float32),
            "label": crop(case.target, center, self.patch_size)[None].astype(np.float32),
        }
        if self.transform is not None:
            aug_seed = int(item_seed.generate_state(1)[0])
            np.random.seed(aug_seed)
            torch.manual_seed(aug_seed)
            set_state = getattr(self.transform, "set_random_state", None)
            if callable(set_state):
                set_state(seed=aug_seed)
            sample = self.transform(sample)
        return {
            "image": torch.as_tensor(np.asarray(sample["image"]), dtype=torch.float32),
            "label": torch.as_tensor(np.asarray(sample["label"]), dtype=torch.float32),
        }
