"""The anatomy guard: a real label map is a brain; a phantom's labels are not."""

from __future__ import annotations

import numpy as np

from model.location.plausibility import MIN_THALAMUS_ML, check_anatomy
from model.types import Volume


def test_a_real_label_map_is_a_brain(parc: Volume) -> None:
    result = check_anatomy(parc)
    assert result.plausible and result.reason == "both thalami found"
    assert min(result.thalamus_ml) > 2 * MIN_THALAMUS_ML  # 7.1 and 7.4 ml on subject 17


def test_missing_or_tiny_thalami_are_not_a_brain(parc: Volume) -> None:
    labels = np.rint(parc.array)
    no_right = parc.with_array(np.where(labels == 49, 41, labels).astype(np.float32))
    result = check_anatomy(no_right)
    assert not result.plausible and result.thalamus_ml[1] == 0.0
    assert result.reason.startswith("no brain recognised: thalami")
    # a phantom labelled by intensity: a few scattered "thalamus" voxels
    phantom = np.zeros((40, 40, 40), np.float32)
    phantom[::9, ::9, ::9] = 10
    phantom[1::9, 1::9, 1::9] = 49
    assert not check_anatomy(Volume(array=phantom, affine=np.eye(4))).plausible
