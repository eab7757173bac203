"""`cmb serve`: the DICOM listener, REST API, stability monitor, outbox and (by default) worker.

One line starts a working service on one machine (SQLite, embedded worker, no
Redis): ``cmb serve --data-dir DIR --destination PACS@HOST:104``.  Every flag
is also a ``CMB_*`` environment variable (docs/settings.md); flags win.
``--role scp`` / ``--role api`` split the listener side and the REST API into
separate processes (service/runtime.py, docs/service.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the DICOM service: C-STORE listener, REST API, jobs, export to PACS",
        description="Run the service. Flags override CMB_* environment variables.",
    )
    p.add_argument(
        "--config", type=Path, help="file of CMB_NAME=value lines (environment and flags win)"
    )
    p.add_argument(
        "--role",
        choices=["all", "scp", "api"],
        help="all (default): everything; scp: DICOM listener, monitor, outbox, embedded worker "
        "(exactly one per database); api: REST API only (CMB_ROLE)",
    )
    p.add_argument("--data-dir", type=Path, help="spool, results and SQLite DB (CMB_DATA_DIR)")
    p.add_argument("--dicom-port", type=int, help="Storage SCP port, 0 = off (default 11112)")
    p.add_argument("--ae-title", help="our AE title (default CMB_AI)")
    p.add_argument(
        "--destination",
        action="append",
        metavar="AET@HOST:PORT",
        help="send results here by C-STORE (repeatable)",
    )
    p.add_argument("--api-port", type=int, help="REST API port, 0 = off (default 8000)")
    p.add_argument("--api-host", help="REST API address (default 127.0.0.1)")
    p.add_argument(
        "--stable-after",
        type=float,
        metavar="SECONDS",
        help="process a study this long after its last instance (default 60)",
    )
    p.add_argument(
        "--allow-ae",
        action="append",
        metavar="AET",
        help="calling AE title allowed to send (repeatable; none given: any AE is accepted)",
    )
    p.add_argument("--database-url", help="SQLAlchemy URL (default sqlite in --data-dir)")
    p.add_argument("--broker-url", help="Celery broker, e.g. redis://host:6379/0 (default none)")
    p.add_argument("--model", type=Path, dest="model_path", help="ONNX model (default: shipped)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading

    from service.logs import configure_logging
    from service.runtime import Service
    from service.settings import SettingsError, load_settings

    try:
        settings = load_settings(
            config=args.config,
            role=args.role,
            data_dir=args.data_dir,
            dicom_port=args.dicom_port,
            ae_title=args.ae_title,
            destinations=args.destination,
            api_port=args.api_port,
            api_host=args.api_host,
            stable_after=args.stable_after,
            allow_ae=args.allow_ae,
            database_url=args.database_url,
            broker_url=args.broker_url,
            model_path=args.model_path,
        )
    except SettingsError as e:
        print(f"cmb serve: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    service = Service(settings)
    try:
        service.start()
    except OSError as e:
        print(f"cmb serve: cannot start: {e} (is the port in use?)", file=sys.stderr)
        service.stop()
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    st = service.settings
    if st.runs_scp:
        worker = f"celery {st.broker_url}" if st.broker_url else "embedded"
    else:
        worker = f"celery {st.broker_url}" if st.broker_url else "in the scp process"
    api = f"http://{st.api_host}:{service.api_port or 'off'}"
    name = "cmb serve" if st.role == "all" else f"cmb serve ({st.role})"
    print(
        f"{name}: DICOM {st.ae_title}@{st.dicom_host}:{service.dicom_port or 'off'}, "
        f"API {api}, data {st.data_dir}, worker {worker}",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        service.stop()
    return 0
