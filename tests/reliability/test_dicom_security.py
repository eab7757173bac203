"""DICOM: unknown calling AE titles, foreign SOP classes and transfer syntaxes, TLS.

The TLS certificates (a CA, the server's and a client's) are made by the
openssl command line for each run.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from service.runtime import Service
from service.scu import associate
from service.settings import Settings
from tests.reliability.conftest import FIGURES, MR, scu_ae, send, study_datasets

pytestmark = pytest.mark.network
CT = "1.2.840.10008.5.1.4.1.1.2"


def test_unknown_calling_ae_and_wrong_called_ae_are_refused(
    services: Callable[[Settings], Service], make_settings: Callable[..., Settings]
) -> None:
    svc = services(make_settings(allow_ae=["PACS"]))
    port = svc.dicom_port or 0
    refused = 0
    for calling, called in (("STRANGER", "CMB_AI"), ("PACS2", "CMB_AI"), ("PACS", "OTHER_AI")):
        assoc = associate(scu_ae(calling), "127.0.0.1", port, ae_title=called)
        assert not assoc.is_established, (calling, called)
        assert assoc.is_rejected
        refused += 1
    assert send(port, study_datasets(1)) == [0x0000]
    FIGURES.input("dicom_ae_titles", tried=3, refused=refused)


def test_foreign_sop_class_and_transfer_syntax_are_not_accepted(
    services: Callable[[Settings], Service], make_settings: Callable[..., Settings]
) -> None:
    svc = services(make_settings())
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CT)
    ae.add_requested_context(MR, ["1.2.3.4.5"])  # no such transfer syntax
    ae.add_requested_context(Verification)
    assoc = associate(ae, "127.0.0.1", svc.dicom_port or 0, ae_title="CMB_AI")
    assert assoc.is_established
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    rejected = {cx.abstract_syntax for cx in assoc.rejected_contexts}
    assoc.release()
    assert accepted == {Verification}
    assert {CT, MR} <= rejected


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path / "pki"
    d.mkdir()
    p = {n: d / n for n in ("ca.key", "ca.pem", "srv.key", "srv.pem", "cli.key", "cli.pem")}
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=cmb-test-ca",
        "-keyout",
        str(p["ca.key"]),
        "-out",
        str(p["ca.pem"]),
    )
    for who, cn in (("srv", "localhost"), ("cli", "PACS")):
        csr = d / f"{who}.csr"
        ext = d / f"{who}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            str(p[f"{who}.key"]),
            "-out",
            str(csr),
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(p["ca.pem"]),
            "-CAkey",
            str(p["ca.key"]),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(p[f"{who}.pem"]),
        )
    return p


def _tls_echo(port: int, pki: dict[str, Path], *, tls: bool, client_cert: bool) -> bool:
    ae = scu_ae()
    ae.acse_timeout = ae.network_timeout = 5
    tls_args = None
    if tls:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca.pem"]))
        if client_cert:
            ctx.load_cert_chain(str(pki["cli.pem"]), str(pki["cli.key"]))
        tls_args = (ctx, "localhost")
    assoc = associate(ae, "127.0.0.1", port, ae_title="CMB_AI", tls_args=tls_args)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def test_tls_with_client_certificates(
    services: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
    pki: dict[str, Path],
) -> None:
    svc = services(
        make_settings(tls_cert=pki["srv.pem"], tls_key=pki["srv.key"], tls_ca=pki["ca.pem"])
    )
    port = svc.dicom_port or 0
    assert _tls_echo(port, pki, tls=True, client_cert=True)
    assert not _tls_echo(port, pki, tls=True, client_cert=False)
    assert not _tls_echo(port, pki, tls=False, client_cert=False)
    FIGURES.input("dicom_tls", tried=3, refused=2)
