"""The radiologists' view in a real browser: prebuilt OHIF + Orthanc DICOMweb + headless Chromium.

* :func:`ohif_dist` finds the prebuilt viewer of the npm package ``@ohif/app``
  (``CMB_OHIF_DIST``, else a cache folder filled once with ``npm pack``).
* :class:`ViewerServer` serves it with ``deploy/ohif/app-config.js`` and proxies
  ``/dicom-web`` and ``/wado`` to Orthanc: one origin, like deploy/nginx/viewer.conf.
* :class:`Chromium` drives Debian's ``chromium`` over the DevTools protocol.
"""

from __future__ import annotations

import base64
import itertools
import json
import mimetypes
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import websocket

OHIF_VERSION = "3.13.2"
REPO = Path(__file__).resolve().parents[2]
APP_CONFIG = REPO / "deploy" / "ohif" / "app-config.js"


def ohif_dist() -> Path | None:
    """The prebuilt OHIF ``dist/`` folder, fetched with ``npm pack`` on first use."""
    configured = os.environ.get("CMB_OHIF_DIST")
    if configured:
        return Path(configured) if (Path(configured) / "index.html").is_file() else None
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cmb-detect"
    dist = cache / f"ohif-app-{OHIF_VERSION}" / "dist"
    if (dist / "index.html").is_file():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        done = subprocess.run(
            [npm, "pack", f"@ohif/app@{OHIF_VERSION}", "--pack-destination", tmp],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            return None
        [tgz] = Path(tmp).glob("*.tgz")
        target = Path(tmp) / "unpacked"
        with tarfile.open(tgz) as tar:
            tar.extractall(target, filter="data")
        try:
            (target / "package").rename(dist.parent)
        except OSError:
            # another test process (pytest-xdist) unpacked it first: use theirs
            if not (dist / "index.html").is_file():
                raise
    return dist


class ViewerServer:
    """OHIF's files, our app-config.js, and Orthanc's DICOMweb on one loopback origin."""

    def __init__(self, dist: Path, orthanc_url: str) -> None:
        self.dist = dist
        self.orthanc_url = orthanc_url
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ViewerServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        client = httpx.Client(timeout=60)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                self.send_header("Cross-Origin-Resource-Policy", "same-origin")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path.startswith(("/dicom-web/", "/wado")):
                    headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept",)}
                    r = client.get(server.orthanc_url + self.path, headers=headers)
                    ctype = r.headers.get("content-type", "application/octet-stream")
                    self._send(r.status_code, r.content, ctype)
                    return
                if path == "/app-config.js":
                    self._send(200, APP_CONFIG.read_bytes(), "application/javascript")
                    return
                file = (server.dist / path.lstrip("/")).resolve()
                if not file.is_file() or server.dist.resolve() not in file.parents:
                    file = server.dist / "index.html"  # the viewer's own routes (/viewer?...)
                ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                if file.suffix == ".wasm":
                    ctype = "application/wasm"
                elif file.suffix in (".js", ".mjs"):
                    ctype = "application/javascript"
                self._send(200, file.read_bytes(), ctype)

        return Handler


class Chromium:
    """Headless Chromium with software WebGL, driven over the DevTools protocol."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 900) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise RuntimeError("chromium is not installed")
        self.log = profile.parent / "chromium.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu-sandbox",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
                "--ignore-gpu-blocklist",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"chromium did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [
            t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"
        ]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60)
        self._ids = itertools.count(1)
        self.console: list[str] = []
        self.call("Runtime.enable")
        self.call("Page.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"]["args"]
                self.console.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in args)
                )
            elif msg.get("method") == "Runtime.exceptionThrown":
                self.console.append(json.dumps(msg["params"]["exceptionDetails"])[:500])
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    def goto(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def js(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
        self._log.close()
