"""The `cmb` command line: a thin dispatcher over the Python APIs.

Each sub-command lives in ``cmb/commands/<name>.py`` and defines
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
``(args) -> int``.  Heavy packages are imported inside ``func`` so that
``cmb --help`` stays fast and a base install (no torch) can run every command
that does not train.

Exit codes: 0 success; 1 an expected failure (one-line reason on stderr; the
model package's ``CmbError`` subclasses choose a more specific code, see
docs/cli.md); 2 bad usage; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from cmb import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmb", description="Cerebral microbleed detection: DICOM in, DICOM SEG + SR out."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"cmb.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from model.errors import CmbError

    try:
        return int(args.func(args) or 0)
    except CmbError as e:
        print(f"cmb {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"cmb {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
