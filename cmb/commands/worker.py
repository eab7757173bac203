"""`cmb worker`: a Celery worker that runs detection jobs from the Redis queue.

Start one per GPU (or per machine) next to a `cmb serve` that shares the same
database (``CMB_DATABASE_URL``, PostgreSQL), data directory (a shared
filesystem) and broker (``CMB_BROKER_URL``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worker",
        help="run a Celery worker for detection jobs (needs CMB_BROKER_URL and a shared DB)",
    )
    p.add_argument(
        "--config", type=Path, help="file of CMB_NAME=value lines (environment and flags win)"
    )
    p.add_argument("--data-dir", type=Path, help="shared data directory (CMB_DATA_DIR)")
    p.add_argument("--database-url", help="SQLAlchemy URL shared with cmb serve")
    p.add_argument("--broker-url", help="Celery broker, e.g. redis://host:6379/0")
    p.add_argument("--concurrency", type=int, help="jobs at once (default 1, e.g. 1 per GPU)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="inference device")
    p.add_argument("--model", type=Path, dest="model_path", help="ONNX model (default: shipped)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import socket
    import sys

    from service.db.session import Database
    from service.logs import configure_logging
    from service.settings import SettingsError, load_settings, settings_environment
    from service.tasks import make_celery

    overrides = {
        "data_dir": args.data_dir,
        "database_url": args.database_url,
        "broker_url": args.broker_url,
        "worker_concurrency": args.concurrency,
        "device": args.device,
        "model_path": args.model_path,
    }
    try:
        settings = load_settings(config=args.config, **overrides)
    except SettingsError as e:
        print(f"cmb worker: {e}", file=sys.stderr)
        return 2
    if not settings.broker_url:
        print(
            "cmb worker: no broker: set CMB_BROKER_URL or --broker-url (e.g. redis://host:6379/0)",
            file=sys.stderr,
        )
        return 2
    # The tasks read their settings from the environment: hand the merged result down.
    os.environ.update(settings_environment(settings))
    configure_logging(settings.log_format, settings.log_level)
    Database(settings.db_url).dispose()  # migrate the schema once, before the pool forks
    app = make_celery(settings)
    app.worker_main(
        [
            "worker",
            f"--concurrency={settings.worker_concurrency}",
            f"--queues={settings.queue}",
            f"--hostname=cmb-{os.getpid()}@{socket.gethostname()}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return 0
