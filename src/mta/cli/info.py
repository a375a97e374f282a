"""`mta info`: versions, the device, and which backends of the op can run here."""

from __future__ import annotations

import argparse
import json

from mta.provenance import environment


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="versions, device and available backends")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    report = environment()
    if args.json:
        print(json.dumps(report, indent=2))
        return
    width = max(map(len, report))
    for key, value in report.items():
        shown = ", ".join(value) if isinstance(value, list) else ("not installed" if value is None else value)
        print(f"{key:>{width}}: {shown}")
