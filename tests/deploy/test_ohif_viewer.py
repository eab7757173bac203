"""The radiologist's view: OHIF (prebuilt `@ohif/app`) over Orthanc's DICOMweb in headless Chromium.

A phantom study goes the deployed way (storescu -> Orthanc -> autoroute.lua -> `cmb serve` ->
SEG + SR back into Orthanc); OHIF, configured by deploy/ohif/app-config.js, opens the study
with our SEG.  From screenshots: the overlay is drawn in the segment's colour exactly where
cornerstone projects a phantom CMB centre, and with the overlay hidden the same pixels are dark
(the microbleed itself).  Set CMB_SAVE_SCREENSHOTS=1 to refresh docs/images/ohif-seg-overlay.png.
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

from tests.deploy.orthanc import orthanc_binary, processed_study
from tests.deploy.viewer import Chromium, ViewerServer, ohif_dist
from tests.service.conftest import REPO, Proc, wait_for
from tests.service.study_factory import SPACING

pytestmark = [
    pytest.mark.network,
    pytest.mark.slow,
    pytest.mark.skipif(orthanc_binary() is None, reason="Orthanc is not installed"),
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
    pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed"),
]
DOC_IMAGE = REPO / "docs" / "images" / "ohif-seg-overlay.png"
#: The phantom's CMB centres in LPS mm (tests/service/study_factory.py: voxel (k, j, i)).
AFFINE = np.diag([*SPACING, 1.0])
AFFINE[:3, 3] = [-24.0, -24.0, -20.0]
CMB_CENTRES = [(AFFINE @ [*c, 1.0])[:3] for c in ([8, 16, 16], [10, 32, 30], [14, 20, 36])]

DISMISS = """(() => { const done = [];
  for (const el of document.querySelectorAll('button, a, span, div')) {
    const t = (el.innerText || '').trim();
    if (el.children.length === 0 && ['Skip all', 'Confirm and hide'].includes(t)) {
      el.click(); done.push(t);
    }
  } return done; })()"""

VIEWPORT = """(() => {
  if (typeof services === 'undefined' || !services.cornerstoneViewportService) return null;
  const cvs = services.cornerstoneViewportService;
  const vp = cvs.getCornerstoneViewport('default');
  if (!vp || !vp.getCurrentImageId || !vp.getCurrentImageId()) return null;
  const segs = services.segmentationService.getSegmentations();
  if (!segs.length) return null;
  const r = vp.canvas.getBoundingClientRect();
  const cam = vp.getCamera();
  const centres = %s;
  return JSON.stringify({
    rect: [r.left, r.top, r.width, r.height],
    focal: cam.focalPoint, normal: cam.viewPlaneNormal,
    segmentation: segs[0].segmentationId,
    canvas: centres.map(c => vp.worldToCanvas(c)),
    canvasY1: centres.map(c => vp.worldToCanvas([c[0], c[1] + 1, c[2]])),
  });
})()"""


def coloured(png: Path, rect: list[float]) -> np.ndarray:
    """Mask of strongly coloured (yellow/orange overlay) pixels inside the viewport."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mask = (r > 110) & (g > 90) & (b < 0.6 * g) & (r - b > 70)
    inside = np.zeros_like(mask)
    x0, y0, w, h = (round(v) for v in rect)
    inside[y0 + 2 : y0 + h - 2, x0 + 2 : x0 + w - 2] = True
    return mask & inside


def gray(png: Path) -> np.ndarray:
    return np.asarray(Image.open(png).convert("L")).astype(float)


def viewport_state(browser: Chromium) -> dict[str, Any] | None:
    browser.js(DISMISS)
    centres = json.dumps([list(map(float, c)) for c in CMB_CENTRES])
    text = browser.js(VIEWPORT % centres)
    return json.loads(text) if text else None


@pytest.mark.timeout(900)  # bounded waits below add up to ~9 min on a loaded machine
def test_ohif_draws_our_seg_over_the_microbleed(procs: Callable[..., Proc], tmp_path: Path) -> None:
    dist = ohif_dist()
    if dist is None:
        pytest.skip("no prebuilt OHIF: set CMB_OHIF_DIST or install npm (npm pack @ohif/app)")
    orthanc, _, study, ids = processed_study(procs, tmp_path)
    seg_uid = orthanc.get(f"/series/{ids['SEG']}")["MainDicomTags"]["SeriesInstanceUID"]

    with ViewerServer(dist, orthanc.url) as server:
        (tmp_path / "profile").mkdir()
        browser = Chromium(tmp_path / "profile")
        try:
            browser.goto(
                f"{server.url}/viewer?StudyInstanceUIDs={study.study_instance_uid}"
                f"&initialSeriesInstanceUID={seg_uid}"
            )
            state = wait_for(lambda: viewport_state(browser), 180, "OHIF to load the SEG", 1.0)
            on = tmp_path / "seg_on.png"

            def overlay_drawn() -> bool:
                browser.js(DISMISS)
                return int(coloured(browser.screenshot(on), state["rect"]).sum()) > 20

            wait_for(overlay_drawn, 60, "the SEG overlay to be drawn", 1.0)
            time.sleep(1.0)  # one more frame: the dismissed banners fade out
            browser.screenshot(on)
            # The camera as drawn: OHIF may move to the segment's slice after it first
            # reports a viewport (later on a loaded machine), so read it again now.
            state = wait_for(lambda: viewport_state(browser), 30, "the viewport state", 0.5)

            # Hide every segment: the same view without the overlay.
            browser.js(
                "(() => { for (const i of [1, 2, 3]) services.segmentationService"
                f".setSegmentVisibility('default', '{state['segmentation']}', i, false); }})()"
            )
            off = tmp_path / "seg_off.png"
            wait_for(
                lambda: int(coloured(browser.screenshot(off), state["rect"]).sum()) == 0,
                30,
                "the overlay to disappear",
                0.5,
            )
        finally:
            browser.close()
            if os.environ.get("CMB_SAVE_SCREENSHOTS") == "1" and (tmp_path / "seg_on.png").exists():
                DOC_IMAGE.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tmp_path / "seg_on.png", DOC_IMAGE)

    # Which phantom CMB lies in the displayed plane, and where cornerstone puts it on screen.
    depth = [abs(float(np.dot(c - state["focal"], state["normal"]))) for c in CMB_CENTRES]
    n = int(np.argmin(depth))
    assert depth[n] <= SPACING[0], f"no CMB in the displayed slice (distances {depth})"
    x0, y0 = state["rect"][:2]
    cx, cy = x0 + state["canvas"][n][0], y0 + state["canvas"][n][1]
    px_per_mm = abs(state["canvasY1"][n][1] - state["canvas"][n][1]) or abs(
        state["canvasY1"][n][0] - state["canvas"][n][0]
    )
    assert px_per_mm > 5, "the phantom should be magnified to fill the viewport"

    mask = coloured(on, state["rect"])
    ys, xs = np.nonzero(mask)
    # The overlay is one blob, centred on the CMB, about the CMB's size (radius 2 mm).
    assert abs(xs.mean() - cx) < 1.5 * px_per_mm and abs(ys.mean() - cy) < 1.5 * px_per_mm
    assert (xs.max() - xs.min()) / px_per_mm < 8 and (ys.max() - ys.min()) / px_per_mm < 8
    # Under the overlay the image is the dark microbleed: darker than the viewport around it.
    image = gray(off)
    x, y, w, h = (round(v) for v in state["rect"])
    background = np.median(image[y : y + h, x : x + w])
    assert image[mask].mean() < background - 20, (image[mask].mean(), background)
