"""The streaming form: worker shares, reuse, cache, and the torch wrapper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.synth.stream import case_seeds, iter_cases, iter_samples

pytestmark = pytest.mark.slow

SMALL = {
    "pixel_spacing_mm": (1.0, 1.0),
    "slice_thickness_mm": 3.0,
    "n_medullary_veins": 10,
    "n_cortical_veins": 5,
    "mimics": (),
}


def test_worker_seed_shares_are_disjoint() -> None:
    a = [next(s) for s in [case_seeds(10, 0, 3)] for _ in range(4)]
    b = [next(s) for s in [case_seeds(10, 1, 3)] for _ in range(4)]
    assert a == [10, 13, 16, 19] and b == [11, 14, 17, 20]
    with pytest.raises(ValueError):
        case_seeds(0, 3, 3)


def test_reuse_and_cache_replay(tmp_path: Path) -> None:
    ids = list(
        iter_samples(
            5, lambda c: c.case_id, reuse=2, limit=1, params_override=SMALL, sequence="t2star"
        )
    )
    assert ids == ["synth-train-00000005"] * 2
    first = next(iter_cases(7, limit=1, cache_dir=tmp_path, params_override=SMALL, sequence="swi"))
    again = next(iter_cases(7, limit=1, cache_dir=tmp_path, params_override=SMALL, sequence="swi"))
    np.testing.assert_allclose(again.image.array, first.image.array, rtol=1e-6)
    np.testing.assert_array_equal(again.labels.array, first.labels.array)
    assert (tmp_path / "cases.jsonl").is_file()


def test_torch_dataset_yields_tensors() -> None:
    torch = pytest.importorskip("torch")
    from training.synth.torch_dataset import SynthStreamDataset

    ds = SynthStreamDataset(3, sequence="t2star", params_override=SMALL, limit_per_worker=1)
    sample = next(iter(torch.utils.data.DataLoader(ds, batch_size=None)))
    assert sample["image"].dtype == torch.float32 and sample["image"].ndim == 4
    assert sample["labels"].shape == sample["image"].shape[1:]
