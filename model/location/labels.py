"""FreeSurfer labels of the parcellation and how each maps to MARS, as data.

The parcellation (our ONNX network or FreeSurfer's ``mri_synthseg``) predicts
the 33 SynthSeg 2.0 labels below (FreeSurfer ids).  Every label carries its
name, its hemisphere, a tissue ``kind`` that the rules and the region logic
read, and its MARS category:

=====================  =================================================  ===============
kind                   labels                                             MARS
=====================  =================================================  ===============
``cortex``             3, 42 (cerebral cortex)                            lobar
``mesial_temporal``    17, 18, 53, 54 (hippocampus, amygdala)             lobar (temporal)
``cerebral_wm``        2, 41 (cerebral white matter)                      deep *or* lobar,
                                                                          from distances
                                                                          (see region.py)
``deep_nucleus``       10-13, 26, 28, 49-52, 58, 60 (thalamus, caudate,   deep
                       putamen, pallidum, accumbens, ventral DC)
``infratentorial``     7, 8, 16, 46, 47 (cerebellum WM/cortex, brainstem) infratentorial
``ventricle``          4, 5, 14, 15, 43, 44                               none (CSF)
``csf``                24 (extra-cerebral / sulcal CSF)                   none (CSF)
``background``         0                                                  none
=====================  =================================================  ===============
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from model.types import MarsCategory


class TissueKind(StrEnum):
    BACKGROUND = "background"
    CORTEX = "cortex"
    MESIAL_TEMPORAL = "mesial_temporal"
    CEREBRAL_WM = "cerebral_wm"
    DEEP_NUCLEUS = "deep_nucleus"
    INFRATENTORIAL = "infratentorial"
    VENTRICLE = "ventricle"
    CSF = "csf"


@dataclass(frozen=True)
class LabelInfo:
    id: int
    name: str
    hemisphere: str | None  # "left", "right" or None (midline / not lateralised)
    kind: TissueKind
    mars: MarsCategory | None  # None: decided from distances (WM) or not brain tissue

    @property
    def is_parenchyma(self) -> bool:
        """Brain tissue (not background, not CSF, not ventricle)."""
        return self.kind not in (TissueKind.BACKGROUND, TissueKind.VENTRICLE, TissueKind.CSF)

    @property
    def is_fluid(self) -> bool:
        return self.kind in (TissueKind.VENTRICLE, TissueKind.CSF)


_L, _R = "left", "right"
_K = TissueKind
_M = MarsCategory

#: The SynthSeg 2.0 segmentation labels, in the channel order of our network.
LABELS: tuple[LabelInfo, ...] = (
    LabelInfo(0, "background", None, _K.BACKGROUND, None),
    LabelInfo(2, "left cerebral white matter", _L, _K.CEREBRAL_WM, None),
    LabelInfo(3, "left cerebral cortex", _L, _K.CORTEX, _M.LOBAR),
    LabelInfo(4, "left lateral ventricle", _L, _K.VENTRICLE, None),
    LabelInfo(5, "left inferior lateral ventricle", _L, _K.VENTRICLE, None),
    LabelInfo(7, "left cerebellum white matter", _L, _K.INFRATENTORIAL, _M.INFRATENTORIAL),
    LabelInfo(8, "left cerebellum cortex", _L, _K.INFRATENTORIAL, _M.INFRATENTORIAL),
    LabelInfo(10, "left thalamus", _L, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(11, "left caudate", _L, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(12, "left putamen", _L, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(13, "left pallidum", _L, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(14, "3rd ventricle", None, _K.VENTRICLE, None),
    LabelInfo(15, "4th ventricle", None, _K.VENTRICLE, None),
    LabelInfo(16, "brain-stem", None, _K.INFRATENTORIAL, _M.INFRATENTORIAL),
    LabelInfo(17, "left hippocampus", _L, _K.MESIAL_TEMPORAL, _M.LOBAR),
    LabelInfo(18, "left amygdala", _L, _K.MESIAL_TEMPORAL, _M.LOBAR),
    LabelInfo(24, "CSF", None, _K.CSF, None),
    LabelInfo(26, "left accumbens area", _L, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(28, "left ventral DC", _L, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(41, "right cerebral white matter", _R, _K.CEREBRAL_WM, None),
    LabelInfo(42, "right cerebral cortex", _R, _K.CORTEX, _M.LOBAR),
    LabelInfo(43, "right lateral ventricle", _R, _K.VENTRICLE, None),
    LabelInfo(44, "right inferior lateral ventricle", _R, _K.VENTRICLE, None),
    LabelInfo(46, "right cerebellum white matter", _R, _K.INFRATENTORIAL, _M.INFRATENTORIAL),
    LabelInfo(47, "right cerebellum cortex", _R, _K.INFRATENTORIAL, _M.INFRATENTORIAL),
    LabelInfo(49, "right thalamus", _R, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(50, "right caudate", _R, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(51, "right putamen", _R, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(52, "right pallidum", _R, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(53, "right hippocampus", _R, _K.MESIAL_TEMPORAL, _M.LOBAR),
    LabelInfo(54, "right amygdala", _R, _K.MESIAL_TEMPORAL, _M.LOBAR),
    LabelInfo(58, "right accumbens area", _R, _K.DEEP_NUCLEUS, _M.DEEP),
    LabelInfo(60, "right ventral DC", _R, _K.DEEP_NUCLEUS, _M.DEEP),
)

BY_ID: dict[int, LabelInfo] = {info.id: info for info in LABELS}
LABEL_IDS: tuple[int, ...] = tuple(info.id for info in LABELS)

#: Left label -> right label (and back): used for left/right flips and symmetry rules.
LEFT_RIGHT: dict[int, int] = {
    2: 41, 3: 42, 4: 43, 5: 44, 7: 46, 8: 47, 10: 49, 11: 50, 12: 51, 13: 52,
    17: 53, 18: 54, 26: 58, 28: 60,
}  # fmt: skip
MIRROR: dict[int, int] = {**LEFT_RIGHT, **{r: left for left, r in LEFT_RIGHT.items()}}

# Label groups the location logic refers to by meaning.
CORTEX = frozenset({3, 42})
CEREBRAL_WM = frozenset({2, 41})
LATERAL_VENTRICLES = frozenset({4, 5, 43, 44})
VENTRICLES = frozenset({4, 5, 14, 15, 43, 44})
FLUID = frozenset({4, 5, 14, 15, 24, 43, 44})
DEEP_NUCLEI = frozenset({10, 11, 12, 13, 26, 28, 49, 50, 51, 52, 58, 60})
THALAMUS = {"left": 10, "right": 49}
PUTAMEN = {"left": 12, "right": 51}
PALLIDUM = {"left": 13, "right": 52}
CEREBELLUM_WM = {"left": 7, "right": 46}  # holds the dentate nuclei
HIPPOCAMPUS_AMYGDALA = frozenset({17, 18, 53, 54})
THIRD_VENTRICLE = 14


def info(label: int) -> LabelInfo:
    """The :class:`LabelInfo` of a FreeSurfer id; unknown ids count as background."""
    return BY_ID.get(int(label), LABELS[0])


def name(label: int) -> str:
    found = BY_ID.get(int(label))
    return found.name if found else f"label {int(label)}"
