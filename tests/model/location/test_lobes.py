"""Lobe derivation on a real SynthSeg label map: landmarks of known lobes."""

from __future__ import annotations

import numpy as np
import pytest

from model.location import locate
from model.location.lobes import BrainFrame, brain_frame, lobe_of
from model.location.region import region_of
from model.types import Detection, MarsCategory, Volume

from .conftest import interior_voxel, voxel_lps


@pytest.fixture(scope="module")
def frame(parc: Volume) -> BrainFrame:
    f = brain_frame(parc)
    assert f is not None
    return f


def _cortex_points(parc: Volume, frame: BrainFrame) -> tuple[np.ndarray, np.ndarray]:
    idx = np.argwhere(np.isin(np.rint(parc.array), (3, 42)))
    pts = parc.index_to_lps(idx)
    uvw = (pts - frame.origin) @ np.stack([frame.e_u, frame.e_v, frame.e_w]).T
    return pts, uvw


def _lobe(parc: Volume, frame: BrainFrame, point) -> str | None:
    reg = region_of(parc, point, 2.0)
    return lobe_of(point, reg.label, reg.hemisphere, frame, reg.distance_putamen_mm)


def test_frame_is_orthonormal_and_anatomical(frame: BrainFrame) -> None:
    m = np.stack([frame.e_u, frame.e_v, frame.e_w])
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-9)
    assert frame.e_u[0] > 0.9  # patient left = LPS +x
    assert frame.e_v[1] > 0.9  # posterior = LPS +y
    assert frame.e_w[2] > 0.9  # superior = LPS +z
    assert frame.v_front < frame.v_amygdala < 0 < frame.v_back


def test_frontal_and_occipital_poles(parc: Volume, frame: BrainFrame) -> None:
    pts, uvw = _cortex_points(parc, frame)
    front = pts[np.argsort(uvw[:, 1])[:20]]
    back = pts[np.argsort(uvw[:, 1])[-20:]]
    assert all(_lobe(parc, frame, p) == "frontal" for p in front)
    assert all(_lobe(parc, frame, p) == "occipital" for p in back)


def test_parietal_vertex_and_lateral_temporal(parc: Volume, frame: BrainFrame) -> None:
    pts, uvw = _cortex_points(parc, frame)
    u, v, w = uvw.T
    v_occ = frame.v_back - 0.2 * (frame.v_back - frame.v_front)
    vertex = (v > 0.3 * w + 15) & (v < v_occ - 15)
    top = pts[vertex][np.argsort(w[vertex])[-10:]]
    assert all(_lobe(parc, frame, p) == "parietal" for p in top)
    lateral = (w < -15) & (v > frame.v_amygdala) & (v < frame.v_amygdala + 30)
    side = pts[lateral][np.argsort(np.abs(u[lateral]))[-10:]]
    assert all(_lobe(parc, frame, p) == "temporal" for p in side)


def test_insula_is_cortex_just_lateral_of_the_putamen(parc: Volume, frame: BrainFrame) -> None:
    pts, _ = _cortex_points(parc, frame)
    put = frame.centroids[12]
    near = pts[np.linalg.norm(pts - put, axis=1) < 25]
    lobes = [_lobe(parc, frame, p) for p in near]
    assert lobes.count("insula") >= len(lobes) // 3
    assert "occipital" not in lobes


def test_boundary_band_is_undetermined(parc: Volume, frame: BrainFrame) -> None:
    # a point 30 mm above the origin, on the approximate central sulcus plane
    point = frame.origin + 30 * frame.e_w + 0.3 * 30 * frame.e_v + 40 * frame.e_u
    assert lobe_of(point, 3, "left", frame, 50.0) is None


def test_locate_sets_temporal_lobe_for_hippocampus_and_none_for_deep(parc: Volume) -> None:
    dets = [
        Detection(1, voxel_lps(parc, interior_voxel(parc, 53)), 2.0, 4.0, 0.9),
        Detection(2, voxel_lps(parc, interior_voxel(parc, 10)), 2.0, 4.0, 0.9),
    ]
    locate(dets, parc)
    assert (dets[0].mars, dets[0].lobe, dets[0].hemisphere) == (
        MarsCategory.LOBAR,
        "temporal",
        "right",
    )
    assert (dets[1].mars, dets[1].lobe, dets[1].hemisphere) == (MarsCategory.DEEP, None, "left")
    assert dets[1].region == "left thalamus" and dets[1].region_label == 10


def test_no_thalamus_no_frame() -> None:
    vol = Volume(array=np.full((8, 8, 8), 3, np.float32), affine=np.eye(4))
    assert brain_frame(vol) is None
