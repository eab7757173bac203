"""The Python receivers of the ingest benchmark, each run as its own process.

``python -m bench.ingest_receivers ours|minimal PORT DIR`` prints ``READY`` once
listening and serves until killed.

* ``ours``: the product's Storage SCP (``service.scp.StorageSCP``) with its
  spool (file written + fsync + directory fsync) and SQLite record before the
  response, exactly as ``cmb serve`` runs it (logging not configured: the
  per-instance INFO line costs ~0.2 ms, docs/benchmarks.md section 3).
* ``minimal``: a pynetdicom SCP with the same presentation contexts whose
  handler only writes the received bytes to a file (no fsync, no parsing
  beyond what pynetdicom does): the upper bound of a pynetdicom-based SCP.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any


def run_minimal(port: int, folder: Path) -> None:
    from pynetdicom import AE, evt

    from service.scp import TRANSFER_SYNTAXES
    from service.store import SUPPORTED_SOP_CLASSES

    folder.mkdir(parents=True, exist_ok=True)
    counter = iter(range(10**9))

    def on_store(event: Any) -> int:
        raw = event.encoded_dataset(include_meta=True)
        (folder / f"{next(counter):08d}.dcm").write_bytes(bytes(raw))
        return 0x0000

    ae = AE(ae_title="MINIMAL")
    for uid in SUPPORTED_SOP_CLASSES:
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    ae.maximum_associations = 32
    ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])


def run_ours(port: int, folder: Path) -> None:
    from service.db.session import Database
    from service.scp import StorageSCP
    from service.settings import load_settings
    from service.store import Spool

    settings = load_settings(
        data_dir=folder, dicom_host="127.0.0.1", dicom_port=port, ae_title="CMB_AI", api_port=0
    )
    folder.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    spool = Spool(settings.spool_dir, db, reserve_bytes=0)
    StorageSCP(settings, spool).start()


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 3 or args[0] not in ("ours", "minimal"):
        print("usage: python -m bench.ingest_receivers ours|minimal PORT DIR", file=sys.stderr)
        return 2
    kind, port, folder = args[0], int(args[1]), Path(args[2])
    (run_ours if kind == "ours" else run_minimal)(port, folder)
    print("READY", flush=True)
    threading.Event().wait()  # serve until killed
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
