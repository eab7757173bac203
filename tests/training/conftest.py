"""Fixtures of the candidate-classifier tests: a test U-Net and tiny layouts with mimics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.onnx_factory import make_test_model
from tests.helpers.tiny_cmb_layout import TinyCase, make_case
from training.datasets.layout import finalize, write_case


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # gain 20: the tiny cases' spheres reach ~1 after z-scoring with the air around the head
    return make_test_model(tmp_path_factory.mktemp("unet") / "unet.onnx", gain=20.0)


def _layout_with_mimics(out: Path, split: str, seed0: int) -> Path:
    """Tiny cases with three dark spheres of which the truth lists two: one mimic each."""
    for n in range(3):
        case = make_case(seed0 + n, 3, split)
        mimic = case.record["cmbs"].pop()
        labels = np.where(case.labels.array == mimic["label"], 0, case.labels.array)
        write_case(
            out, TinyCase(case.case_id, case.image, case.labels.with_array(labels), case.record)
        )
    finalize(out)
    return out


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return (
        _layout_with_mimics(root / "train", "train", 0),
        _layout_with_mimics(root / "val", "val", 50),
    )
