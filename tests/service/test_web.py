"""The web page in headless Chromium: job list, result page with key images and overlays."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.runtime import Service
from service.settings import Settings
from tests.service.conftest import KEY, free_port, wait_for
from tests.service.study_factory import write_model, write_phantom_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]


@pytest.fixture
def served(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[Service]:
    model = write_model(tmp_path / "model.onnx")
    settings = make_settings(
        api_port=free_port(),
        dicom_port=0,
        pipeline="model.pipeline:process",
        model_path=model,
        location="off",  # the phantom is no brain
        device="cpu",
        threads=1,
    )
    svc = Service(settings)
    svc.start()
    base = f"http://127.0.0.1:{settings.api_port}"
    wait_for(lambda: _up(base), 30, "the API")
    yield svc
    svc.stop()


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--disable-dev-shm-usage",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def test_result_page_in_chromium(served: Service, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{served.settings.api_port}"
    study = write_phantom_study(tmp_path / "study")
    files = [("files", (p.name, p.read_bytes())) for p in sorted(study.root.rglob("*.dcm"))]
    r = httpx.post(base + "/studies", headers={"X-API-Key": KEY}, files=files, timeout=60)
    assert r.status_code == 202, r.text
    job_id = r.json()["studies"][0]["job_id"]
    wait_for(
        lambda: (
            httpx.get(f"{base}/jobs/{job_id}", headers={"X-API-Key": KEY}).json()["state"]
            in ("succeeded", "failed")
        ),
        120,
        "the job",
    )
    url = f"{base}/ui/jobs/{job_id}?api_key={KEY}"

    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "MARS summary: 3 microbleed(s)" in dom.stdout
    assert dom.stdout.count('<img alt="microbleed') == 3

    # Without the key, the page is refused.
    assert "a valid API key is required" in _chromium("--dump-dom", f"{base}/ui").stdout

    shot = tmp_path / "page.png"
    run = _chromium(
        "--virtual-time-budget=10000", f"--screenshot={shot}", "--window-size=1100,1000", url
    )
    assert shot.is_file(), run.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1000, 1100)
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    grey = (
        (np.abs(pixels[..., 0] - pixels[..., 1]) < 8)
        & (pixels[..., 0] > 40)
        & (pixels[..., 0] < 215)
    )
    assert red.sum() > 20, "no red detection outlines in the key images"
    assert grey.sum() > 5000, "no grey MR key images on the page"
