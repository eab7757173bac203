"""The standardized layout: write, read, load, finalize (sorted, deduplicated)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.errors import InputError
from model.types import Volume
from training.datasets.layout import finalize, load_case, read_cases, write_case


@dataclass
class _Case:
    case_id: str
    image: Volume
    labels: Volume
    record: dict[str, Any]


def _case(name: str) -> _Case:
    affine = np.diag([2.0, 0.5, 0.5, 1.0])
    affine[:3, 3] = [1.0, 2.0, 3.0]
    img = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    lab = np.zeros((4, 6, 5), np.int16)
    lab[1, 2, 2] = 1
    record = {
        "case_id": name,
        "image": f"images/{name}.nii.gz",
        "label": f"labels/{name}.nii.gz",
        "subject": 3,
        "split": "train",
        "source": "synthetic",
        "acquisition": {"sequence": "swi"},
        "cmbs": [{"label": 1}],
        "mimics": [],
    }
    return _Case(name, Volume(img, affine), Volume(lab, affine), record)  # type: ignore[arg-type]


def test_write_read_load_round_trip(tmp_path: Path) -> None:
    for name in ("b", "a", "b"):
        write_case(tmp_path, _case(name))
    assert finalize(tmp_path) == 2
    assert [r["case_id"] for r in read_cases(tmp_path)] == ["a", "b"]
    img, lab, rec = load_case(tmp_path, "a")
    src = _case("a")
    np.testing.assert_array_equal(img.array, src.image.array)
    np.testing.assert_allclose(img.affine, src.image.affine, atol=1e-6)
    assert lab.array.dtype == np.int16 and lab.array[1, 2, 2] == 1 and lab.array.sum() == 1
    assert rec == src.record
    for line in (tmp_path / "cases.jsonl").read_text().splitlines():
        json.loads(line)


def test_bad_record_and_missing_case(tmp_path: Path) -> None:
    bad = _case("x")
    del bad.record["cmbs"]
    with pytest.raises(ValueError, match="lacks"):
        write_case(tmp_path, bad)
    write_case(tmp_path, _case("y"))
    with pytest.raises(InputError):
        load_case(tmp_path, "nope")
    with pytest.raises(InputError):
        read_cases(tmp_path / "empty")
