"""The `mta` command line: `mta info`, `mta demo`, `mta backends`, `mta toy ...`, `mta data ...`, `mta train`, `mta eval ...`,
`mta convert`, `mta retrofit`."""

from __future__ import annotations

import argparse
import sys

from mta import __version__

from . import backends, data, demo, hf, info, toy, train
from . import eval as eval_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mta", description="Multi-Token Attention (arXiv 2504.00927): exact, memory-efficient, in PyTorch."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    info.register(subparsers)
    demo.register(subparsers)
    backends.register(subparsers)
    toy.register(subparsers)
    data.register(subparsers)
    train.register(subparsers)
    eval_command.register(subparsers)
    hf.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as error:
        parser.exit(2, f"mta {args.command}: error: {error}\n")
    except OSError as error:  # a full disk, a file that vanished: no usage error, but no traceback either
        parser.exit(1, f"mta {args.command}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
