"""REST: credentials on every data route, path traversal, zip bombs, oversized uploads,
schemathesis.

The app runs in this process (FastAPI TestClient, no socket): the same code as
behind `cmb serve`'s uvicorn, without the port juggling.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error

from service.api.app import create_app
from service.db.session import Database
from service.settings import Settings
from service.store import Spool
from tests.reliability.conftest import FIGURES, KEY, study_datasets
from tests.reliability.fuzz import encode

OPEN_ROUTES = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/",
}
MAX_UPLOAD_MB = 1.0


@pytest.fixture
def app(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[FastAPI]:
    settings = make_settings(dicom_port=0, max_upload_mb=MAX_UPLOAD_MB)
    db = Database(settings.db_url)
    spool = Spool(settings.spool_dir, db, 0)
    application = create_app(settings, db, spool)
    application.state.spool_root = settings.spool_dir
    application.state.data_dir = settings.data_dir
    yield application
    db.dispose()


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def data_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route but the open ones, path parameters filled in."""
    out: list[tuple[str, str]] = []
    for route in app.routes:
        path = getattr(route, "path", None)
        methods = getattr(route, "methods", None) or set()
        if not path or path in OPEN_ROUTES:
            continue
        filled = re.sub(r"\{[^}]+\}", "x1", path)
        out.extend((m, filled) for m in sorted(methods - {"HEAD", "OPTIONS"}))
    return out


def test_every_data_route_needs_a_valid_key(app: FastAPI, client: TestClient) -> None:
    routes = data_routes(app)
    schema_paths = set(app.openapi()["paths"])
    assert {"/studies", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/results/{kind}"} <= schema_paths
    assert len(routes) >= 7
    tried = 0
    let_in = []
    for method, path in routes:
        for headers in (
            {},
            {"X-API-Key": "wrong-key-0123456789"},
            {"Authorization": "Bearer wrong-key-0123456789"},
            {"X-API-Key": KEY[:-1]},
            {"Authorization": f"Basic {KEY}"},
        ):
            r = client.request(method, path, headers=headers, follow_redirects=False)
            tried += 1
            if r.status_code not in (401, 403):
                let_in.append((method, path, headers, r.status_code))
    FIGURES.input("rest_credentials", routes=len(routes), requests=tried, let_in=len(let_in))
    assert not let_in, let_in


def test_path_traversal_in_file_names_stays_in_the_spool(
    app: FastAPI, client: TestClient, tmp_path: Path
) -> None:
    ds1, ds2 = study_datasets(2)
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("../../../../../../tmp/cmb-evil-member.dcm", encode(ds2))
        zf.writestr("/etc/cmb-evil-absolute.dcm", encode(ds2))
    r = client.post(
        "/studies",
        headers={"X-API-Key": KEY},
        files=[
            ("files", ("../../../../../../tmp/cmb-evil.dcm", encode(ds1), "application/dicom")),
            ("files", ("../../evil.zip", bundle.getvalue(), "application/zip")),
        ],
    )
    assert r.status_code == 202, r.text
    assert r.json()["stored"] == 2
    spool_root: Path = app.state.spool_root
    data_dir: Path = app.state.data_dir
    for name in ("cmb-evil.dcm", "cmb-evil-member.dcm"):
        assert not (Path("/tmp") / name).exists()
    assert not Path("/etc/cmb-evil-absolute.dcm").exists()
    written = [p for p in data_dir.rglob("*") if p.is_file() and p.suffix == ".dcm"]
    assert len(written) == 2
    assert all(spool_root in p.parents for p in written)
    assert not [p for p in tmp_path.rglob("*evil*")]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_zip_bomb_is_refused_within_bounded_memory(client: TestClient) -> None:
    inflated_mb = 192
    bomb = io.BytesIO()
    with (
        zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("bomb.dcm", "w") as member,
    ):
        chunk = b"\0" * 2**20
        for _ in range(inflated_mb):
            member.write(chunk)
    assert len(bomb.getvalue()) < MAX_UPLOAD_MB * 2**20  # the upload itself is small
    before = peak_rss_mb()
    r = client.post(
        "/studies",
        headers={"X-API-Key": KEY},
        files=[("files", ("bomb.zip", bomb.getvalue(), "application/zip"))],
    )
    growth = peak_rss_mb() - before
    FIGURES.input(
        "zip_bomb",
        inflated_mb=inflated_mb,
        status=r.status_code,
        peak_rss_growth_mb=round(growth, 1),
    )
    assert r.status_code in (400, 413)
    assert growth < 100, f"peak memory grew by {growth:.0f} MB for a {inflated_mb} MB bomb"


def test_oversized_upload_with_content_length_is_413(client: TestClient) -> None:
    big = b"\0" * int(2 * MAX_UPLOAD_MB * 2**20)
    r = client.post(
        "/studies",
        headers={"X-API-Key": KEY},
        files=[("files", ("big.dcm", big, "application/dicom"))],
    )
    assert r.status_code == 413
    r = client.post(
        "/dicomweb/studies",
        headers={
            "X-API-Key": KEY,
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=x',
        },
        content=big,
    )
    assert r.status_code == 413


def test_oversized_chunked_upload_is_413(client: TestClient) -> None:
    boundary = "cmbboundary"
    ds = study_datasets(1)[0]
    payload = encode(ds) + b"\0" * int(2 * MAX_UPLOAD_MB * 2**20)

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.dcm"\r\n'
            "Content-Type: application/dicom\r\n\r\n"
        ).encode()
        for i in range(0, len(payload), 2**16):
            yield payload[i : i + 2**16]
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/studies",
        headers={"X-API-Key": KEY, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body(),
    )
    assert r.status_code == 413, r.status_code


def test_schemathesis_against_our_openapi(app: FastAPI) -> None:
    """Generated requests (with a valid key) from our own OpenAPI: never a 5xx."""
    from hypothesis import HealthCheck, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    calls = [0]

    for op in schema.get_all_operations():
        operation = op.ok()  # type: ignore[union-attr]
        strategy_test = settings(
            max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )(_given(operation, calls, failures))
        strategy_test()
    FIGURES.input(
        "schemathesis",
        operations=len(list(schema.get_all_operations())),
        requests=calls[0],
        server_errors=len(failures),
    )
    assert calls[0] > 0
    assert not failures, failures[:5]


def _given(operation: object, calls: list[int], failures: list[str]) -> Callable[[], None]:
    from hypothesis import given

    @given(case=operation.as_strategy())  # type: ignore[attr-defined]
    def run(case: schemathesis.Case) -> None:
        calls[0] += 1
        response = case.call(headers={"X-API-Key": KEY})
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except Exception as e:
            failures.append(f"{case.method} {case.path}: {str(e)[:200]}")

    return run
