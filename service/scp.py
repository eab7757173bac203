"""The Storage SCP: C-ECHO and C-STORE of MR instances into the durable spool.

Statuses (docs/conformance.md, "Network"): 0x0000 stored (or an identical
duplicate); 0xA700 free disk below the reserve; 0xA900 the data set's SOP class
does not match the request; 0xC210 the data set cannot be decoded; 0xC211 any
other fault while storing.  A handler never raises: the association lives on.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from service import metrics
from service.logs import redact_values
from service.settings import Settings
from service.store import (
    SUPPORTED_SOP_CLASSES,
    NotStorableError,
    OutOfResourcesError,
    Spool,
    parse_part10,
)

log = logging.getLogger(__name__)

#: Transfer syntaxes accepted for the image SOP classes: every one that the pipeline can
#: decode (pydicom + pylibjpeg); instances are stored in the syntax they arrived in.
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 and 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
]

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_SOP_CLASS_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_PROCESSING_FAILURE = 0xC211


class StorageSCP:
    """A pynetdicom listener in its own threads; `start()` returns at once, `stop()` joins."""

    def __init__(self, settings: Settings, spool: Spool) -> None:
        self.settings = settings
        self.spool = spool
        self.server: ThreadedAssociationServer | None = None

    def build_ae(self) -> AE:
        st = self.settings
        ae = AE(ae_title=st.ae_title)
        ae.add_supported_context(Verification)
        for uid in SUPPORTED_SOP_CLASSES:
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        ae.require_calling_aet = list(st.allow_ae)
        ae.require_called_aet = True
        ae.maximum_associations = 32
        ae.acse_timeout = st.dimse_timeout_s
        ae.dimse_timeout = st.dimse_timeout_s
        ae.network_timeout = st.dimse_timeout_s
        return ae

    def _ssl_context(self) -> ssl.SSLContext | None:
        st = self.settings
        if st.tls_cert is None or st.tls_key is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(st.tls_cert), str(st.tls_key))
        if st.tls_ca is not None:
            ctx.load_verify_locations(str(st.tls_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def start(self) -> int:
        """Start listening; returns the bound port (useful with port 0 in tests)."""
        handlers = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        ae = self.build_ae()
        server = ae.start_server(
            (self.settings.dicom_host, self.settings.dicom_port),
            block=False,
            evt_handlers=handlers,  # type: ignore[arg-type]
            ssl_context=self._ssl_context(),
        )
        if server is None:
            raise RuntimeError("pynetdicom did not return a server for block=False")
        if self.settings.allow_hosts:
            allowed = set(self.settings.allow_hosts)

            def verify(request: Any, client_address: Any) -> bool:
                ok = client_address[0] in allowed
                if not ok:
                    metrics.ASSOCIATIONS_REJECTED.inc()
                    log.warning("connection refused", extra={"peer": client_address[0]})
                return ok

            server.verify_request = verify  # type: ignore[method-assign]
        self.server = server
        port = int(server.server_address[1])
        log.info(
            "storage SCP listening",
            extra={
                "ae_title": self.settings.ae_title,
                "port": port,
                "allow_ae": ",".join(self.settings.allow_ae) or "*",
            },
        )
        return port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # Handlers -------------------------------------------------------------------
    def _on_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def _on_rejected(self, event: evt.Event) -> None:
        metrics.ASSOCIATIONS_REJECTED.inc()
        log.warning(
            "association rejected",
            extra={
                "calling_ae": event.assoc.requestor.ae_title,
                "peer": event.assoc.requestor.address,
            },
        )

    def _on_store(self, event: evt.Event) -> int:
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        try:
            return self._store(event, calling_ae)
        except Exception:  # the contract: a fault is a status, never a dead association
            log.exception("C-STORE handler fault", extra={"calling_ae": calling_ae})
            metrics.INSTANCES_RECEIVED.labels("dimse", "error").inc()
            return STATUS_PROCESSING_FAILURE

    def _store(self, event: evt.Event, calling_ae: str) -> int:
        request = cast(C_STORE, event.request)
        # The bytes as received, with a file meta: what the spool writes, and the one
        # decode this handler does (identifiers only, not the pixel data).
        raw = bytes(event.encoded_dataset(include_meta=True))
        try:
            ids = parse_part10(raw)
        except NotStorableError as e:
            log.warning(
                "cannot decode data set: %s",
                redact_values(str(e)),  # the exception may quote a (garbled) element value
                extra={"calling_ae": calling_ae},
            )
            metrics.INSTANCES_RECEIVED.labels("dimse", "undecodable").inc()
            return STATUS_CANNOT_UNDERSTAND
        if ids.sop_class_uid != str(request.AffectedSOPClassUID) or ids.sop_instance_uid != str(
            request.AffectedSOPInstanceUID
        ):
            metrics.INSTANCES_RECEIVED.labels("dimse", "mismatch").inc()
            return STATUS_SOP_CLASS_MISMATCH
        try:
            result = self.spool.store(raw, ids, source=f"dimse:{calling_ae}")
        except OutOfResourcesError as e:
            log.error("refusing instance: %s", e)
            metrics.INSTANCES_RECEIVED.labels("dimse", "out_of_resources").inc()
            return STATUS_OUT_OF_RESOURCES
        metrics.INSTANCES_RECEIVED.labels("dimse", result.outcome).inc()
        return STATUS_SUCCESS
