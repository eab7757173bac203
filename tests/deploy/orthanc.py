"""Start Debian's Orthanc with the configuration from deploy/orthanc, templated to loopback."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.dcmtk import send
from tests.service.conftest import API_KEY, REPO, Proc, _listening, free_port, wait_for
from tests.service.study_factory import PhantomStudy, write_model, write_phantom_study

DEPLOY = REPO / "deploy" / "orthanc"
#: Where Debian's orthanc-dicomweb package puts the plugin.
DICOMWEB_PLUGINS = (
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    Path("/usr/lib/orthanc/libOrthancDicomWeb.so.1.7"),
)


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )


class Orthanc:
    """A running Orthanc: its ports, REST helpers and log."""

    def __init__(self, proc: Proc, dicom_port: int, http_port: int) -> None:
        self.proc = proc
        self.dicom_port = dicom_port
        self.url = f"http://127.0.0.1:{http_port}"

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, timeout=10)
        r.raise_for_status()
        return r.json()

    def series_modalities(self) -> dict[str, str]:
        """SeriesInstanceUID -> Modality of every series Orthanc holds."""
        out = {}
        for series in self.get("/series?expand"):
            tags = series["MainDicomTags"]
            out[tags["SeriesInstanceUID"]] = tags.get("Modality", "")
        return out

    def log(self) -> str:
        return self.proc.output()


def write_config(
    tmp: Path, dicom_port: int, http_port: int, cmb_port: int, stable_age: int = 2
) -> Path:
    """deploy/orthanc/orthanc.json with loopback ports, a temp storage dir and local paths."""
    config = json.loads((DEPLOY / "orthanc.json").read_text())
    storage = tmp / "orthanc-db"
    storage.mkdir(parents=True, exist_ok=True)
    config.update(
        StorageDirectory=str(storage),
        IndexDirectory=str(storage),
        DicomPort=dicom_port,
        HttpPort=http_port,
        RemoteAccessAllowed=False,
        StableAge=stable_age,
        LuaScripts=[str(DEPLOY / "autoroute.lua")],
        Plugins=[str(p) for p in DICOMWEB_PLUGINS if p.exists()][:1],
    )
    config["DicomModalities"]["cmb"].update(Host="127.0.0.1", Port=cmb_port)
    path = tmp / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def start_orthanc(procs: Callable[..., Proc], tmp: Path, cmb_port: int) -> Orthanc:
    binary = orthanc_binary()
    if binary is None:
        raise RuntimeError("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    dicom_port, http_port = free_port(), free_port()
    config = write_config(tmp, dicom_port, http_port, cmb_port)
    proc = procs([binary, str(config)], tmp / "orthanc.log")
    orthanc = Orthanc(proc, dicom_port, http_port)

    def up() -> bool:
        if proc.p.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {proc.output()[-3000:]}")
        try:
            return httpx.get(orthanc.url + "/system", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, "Orthanc to answer", every=0.2)
    return orthanc


def storescu(folder: Path, port: int, calling: str, called: str = "ORTHANC") -> None:
    """Send a folder to Orthanc as the scanner ``calling`` would (must succeed)."""
    send(folder, port, calling=calling, called=called)


def start_serve(
    procs: Callable[..., Proc], tmp_path: Path, dicom_port: int, destination: str
) -> str:
    """`cmb serve` as deploy/ runs it (CMB_* environment + flags); returns the API URL."""
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMB_")}
    env.update(
        CMB_API_KEYS=API_KEY,
        CMB_POLL_INTERVAL_S="0.2",
        CMB_DISK_RESERVE_MB="0",
        CMB_DEVICE="cpu",
        CMB_THREADS="1",
        CMB_LOCATION="off",  # the phantom is no brain
        CMB_EXPORT_BACKOFF_S="0.5",
        CMB_LOG_FORMAT="text",
    )
    model = write_model(tmp_path / "model.onnx")
    cmd = [
        sys.executable,
        "-m",
        "cmb.cli",
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--dicom-port",
        str(dicom_port),
        "--ae-title",
        "CMB_AI",
        "--destination",
        destination,
        "--api-port",
        str(api_port),
        "--stable-after",
        "1",
        "--allow-ae",
        "ORTHANC",
        "--model",
        str(model),
    ]
    proc = procs(cmd, tmp_path / "serve.log", env)
    api = f"http://127.0.0.1:{api_port}"

    def up() -> bool:
        if proc.p.poll() is not None:
            pytest.fail(f"cmb serve exited: {proc.output()[-3000:]}")
        try:
            return _listening(dicom_port) and httpx.get(api + "/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "cmb serve to listen", every=0.25)
    return api


def processed_study(
    procs: Callable[..., Proc], tmp_path: Path
) -> tuple[Orthanc, str, PhantomStudy, dict[str, str]]:
    """Orthanc + `cmb serve` + a phantom study sent by storescu, waited until SEG and SR are in.

    Returns (orthanc, service API URL, the study, Modality -> Orthanc series id).
    """
    cmb_port = free_port()
    orthanc = start_orthanc(procs, tmp_path, cmb_port)
    api = start_serve(procs, tmp_path, cmb_port, f"ORTHANC@127.0.0.1:{orthanc.dicom_port}")
    study = write_phantom_study(tmp_path / "study")
    storescu(study.root, orthanc.dicom_port, calling="MRI_SCANNER")

    def results() -> dict[str, str]:
        ids = {
            s["MainDicomTags"].get("Modality", ""): s["ID"] for s in orthanc.get("/series?expand")
        }
        return ids if {"SEG", "SR"} <= ids.keys() else {}

    return orthanc, api, study, wait_for(results, 240, "SEG and SR to arrive in Orthanc", every=0.5)
