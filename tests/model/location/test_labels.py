from __future__ import annotations

import numpy as np

from model.location import labels as lt
from model.location.labels import TissueKind
from model.types import MarsCategory


def test_table_holds_the_33_synthseg_labels(shared_data) -> None:
    ids = np.load(
        shared_data / "synthseg/data/labels_classes_priors/synthseg_segmentation_labels_2.0.npy"
    )
    assert set(lt.LABEL_IDS) == {int(i) for i in ids}
    assert len(set(lt.LABEL_IDS)) == 33


def test_mirror_is_an_involution_between_hemispheres() -> None:
    for a, b in lt.MIRROR.items():
        assert lt.MIRROR[b] == a
        assert {lt.info(a).hemisphere, lt.info(b).hemisphere} == {"left", "right"}
        assert lt.info(a).kind is lt.info(b).kind


def test_mars_mapping_by_kind() -> None:
    expected = {
        TissueKind.CORTEX: MarsCategory.LOBAR,
        TissueKind.MESIAL_TEMPORAL: MarsCategory.LOBAR,
        TissueKind.DEEP_NUCLEUS: MarsCategory.DEEP,
        TissueKind.INFRATENTORIAL: MarsCategory.INFRATENTORIAL,
        TissueKind.CEREBRAL_WM: None,  # from distances
        TissueKind.VENTRICLE: None,
        TissueKind.CSF: None,
        TissueKind.BACKGROUND: None,
    }
    for info in lt.LABELS:
        assert info.mars is expected[info.kind], info


def test_unknown_label_is_background() -> None:
    assert lt.info(507).kind is TissueKind.BACKGROUND
    assert lt.name(507) == "label 507"
