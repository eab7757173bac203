"""One load sender (run in its own process): C-STORE small MR slices for a bounded time."""

from __future__ import annotations

import socket
import time

from pydicom.uid import generate_uid
from pynetdicom import AE

from service.scu import associate
from tests.service.dicom_factory import mr_dataset


def send_for(port: int, seconds: float, index: int) -> dict[str, object]:
    """Send on one association until ``seconds`` pass; latencies (s) and statuses per C-STORE."""
    study, series = generate_uid(), generate_uid()
    latencies: list[float] = []
    statuses: list[int | None] = []
    sent: list[str] = []
    ae = AE(ae_title="PACS")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    assoc = associate(ae, "127.0.0.1", port, ae_title="CMB_AI")
    if not assoc.is_established:
        return {"index": index, "error": "association refused", "latencies": [], "acked": []}
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        ds = mr_dataset(study, series, i, size=64)
        i += 1
        t0 = time.perf_counter()
        st = assoc.send_c_store(ds)
        latencies.append(time.perf_counter() - t0)
        status = getattr(st, "Status", None)
        statuses.append(status)
        if status == 0:
            sent.append(str(ds.SOPInstanceUID))
    assoc.release()
    return {"index": index, "latencies": latencies, "statuses": statuses, "acked": sent}
