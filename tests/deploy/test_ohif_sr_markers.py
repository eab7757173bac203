"""The radiologist's view of our TID 1500 SR: OHIF draws one marker per CMB, on the CMB.

Same deployed path as test_ohif_viewer.py (storescu -> Orthanc -> autoroute -> `cmb serve` ->
SEG + SR back into Orthanc); OHIF opens the study with our SR.  OHIF 3.13's SR extension
merges the groups of one tracking UID and draws the first SCOORD it meets; it crashed
("reading 'ReferencedSOPSequence'") on a measurement group without any image region, which
is why the study-level findings are TID 1500 "Qualitative Evaluations" and each CMB's circle
group comes first (docs/dicom-outputs.md).  From a screenshot: the viewer lists one
measurement per CMB, no exception was thrown, and a marker (strongly coloured pixels) is drawn
around the projected centre of the CMB on the displayed slice.  Set CMB_SAVE_SCREENSHOTS=1 to
refresh docs/images/ohif-sr-markers.png.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.deploy.orthanc import processed_study
from tests.deploy.test_ohif_viewer import CMB_CENTRES, DISMISS, pytestmark  # noqa: F401
from tests.deploy.viewer import Chromium, ViewerServer, ohif_dist
from tests.service.conftest import REPO, Proc, wait_for
from tests.service.study_factory import SPACING

DOC_IMAGE = REPO / "docs" / "images" / "ohif-sr-markers.png"

SR_VIEWPORT = """(() => {
  if (typeof services === 'undefined' || !services.cornerstoneViewportService) return null;
  const sr = services.displaySetService.getActiveDisplaySets().find(d => d.Modality === 'SR');
  if (!sr || !sr.isLoaded || !sr.measurements) return null;
  const vps = services.viewportGridService.getState().viewports;
  const ids = vps instanceof Map ? [...vps.keys()] : Object.keys(vps);
  const vp = services.cornerstoneViewportService.getCornerstoneViewport(ids[0]);
  if (!vp || !vp.getCurrentImageId || !vp.getCurrentImageId()) return null;
  const r = vp.canvas.getBoundingClientRect();
  const cam = vp.getCamera();
  const centres = %s;
  return JSON.stringify({
    rect: [r.left, r.top, r.width, r.height],
    focal: cam.focalPoint, normal: cam.viewPlaneNormal,
    measurements: sr.measurements.map(m => [m.TrackingIdentifier, m.graphicType]),
    canvas: centres.map(c => vp.worldToCanvas(c)),
    canvasY1: centres.map(c => vp.worldToCanvas([c[0], c[1] + 1, c[2]])),
  });
})()"""


def saturated(png: Path, rect: list[float]) -> np.ndarray:
    """Mask of strongly coloured pixels (annotation strokes) inside the viewport."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    mask = rgb.max(axis=-1) - rgb.min(axis=-1) > 80
    inside = np.zeros_like(mask)
    x0, y0, w, h = (round(v) for v in rect)
    inside[y0 + 2 : y0 + h - 2, x0 + 2 : x0 + w - 2] = True
    return mask & inside


def sr_state(browser: Chromium) -> dict[str, Any] | None:
    browser.js(DISMISS)
    centres = json.dumps([list(map(float, c)) for c in CMB_CENTRES])
    text = browser.js(SR_VIEWPORT % centres)
    return json.loads(text) if text else None


@pytest.mark.timeout(900)
def test_ohif_draws_a_marker_per_cmb_from_our_sr(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    dist = ohif_dist()
    if dist is None:
        pytest.skip("no prebuilt OHIF: set CMB_OHIF_DIST or install npm (npm pack @ohif/app)")
    orthanc, _, study, ids = processed_study(procs, tmp_path)
    sr_uid = orthanc.get(f"/series/{ids['SR']}")["MainDicomTags"]["SeriesInstanceUID"]
    shot = tmp_path / "sr.png"

    with ViewerServer(dist, orthanc.url) as server:
        (tmp_path / "profile").mkdir()
        browser = Chromium(tmp_path / "profile")
        try:
            browser.goto(
                f"{server.url}/viewer?StudyInstanceUIDs={study.study_instance_uid}"
                f"&initialSeriesInstanceUID={sr_uid}"
            )
            state = wait_for(lambda: sr_state(browser), 180, "OHIF to load the SR", 1.0)

            def marker_drawn() -> bool:
                browser.js(DISMISS)
                return int(saturated(browser.screenshot(shot), state["rect"]).sum()) > 20

            wait_for(marker_drawn, 60, "the SR markers to be drawn", 1.0)
            time.sleep(1.0)  # one more frame: the dismissed banners fade out
            state = sr_state(browser) or state  # the camera once OHIF jumped to the marker
            browser.screenshot(shot)
            errors = [c for c in browser.console if "ReferencedSOPSequence" in c]
        finally:
            browser.close()
            if os.environ.get("CMB_SAVE_SCREENSHOTS") == "1" and shot.exists():
                DOC_IMAGE.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, DOC_IMAGE)
    (tmp_path / "state.json").write_text(json.dumps(state))

    assert not errors, errors
    # One measurement per phantom CMB, each drawn from its circle on the source slice.
    assert sorted(m[0] for m in state["measurements"]) == [
        f"CMB {n}" for n in range(1, len(CMB_CENTRES) + 1)
    ]
    assert {m[1] for m in state["measurements"]} == {"CIRCLE"}

    # The CMB in the displayed plane, and where cornerstone puts it on screen.
    depth = [abs(float(np.dot(c - state["focal"], state["normal"]))) for c in CMB_CENTRES]
    n = int(np.argmin(depth))
    assert depth[n] <= SPACING[0], f"no CMB in the displayed slice (distances {depth})"
    x0, y0 = state["rect"][:2]
    cx, cy = x0 + state["canvas"][n][0], y0 + state["canvas"][n][1]
    px_per_mm = abs(state["canvasY1"][n][1] - state["canvas"][n][1]) or abs(
        state["canvasY1"][n][0] - state["canvas"][n][0]
    )
    mask = saturated(shot, state["rect"])
    ys, xs = np.nonzero(mask)
    dist_mm = np.hypot(xs - cx, ys - cy) / px_per_mm
    # A circle of the CMB's diameter (phantom radius ~2 mm) around its centre: coloured
    # strokes within 4 mm of the centre, but none at the centre itself (a ring, not a blob).
    ring = (dist_mm > 0.5) & (dist_mm < 4.0)
    assert ring.sum() > 20, f"no marker around the CMB at ({cx:.0f}, {cy:.0f})"
    assert (dist_mm <= 0.5).sum() < 0.2 * ring.sum()
    near_x, near_y = xs[ring], ys[ring]
    assert abs(near_x.mean() - cx) < 1.0 * px_per_mm and abs(near_y.mean() - cy) < 1.0 * px_per_mm
