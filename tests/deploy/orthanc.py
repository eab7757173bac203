"""Start Debian's Orthanc with the configuration from deploy/orthanc, templated to loopback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.service.conftest import REPO, Proc, free_port, wait_for

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
