"""`mta train`: train a language model with the paper's recipe (docs/spec.md §3).

The same command runs on one device or many: `torchrun --nproc-per-node K -m mta.train --preset ... --data ...
--out ...` (FSDP2 on GPUs, DDP with `--parallel ddp` or on CPUs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from mta.models import list_presets
from mta.train import PARALLEL, LMTrainConfig, train_lm
from mta.train.checkpoint_state import latest_checkpoint

from .paths import output_directory

_FIXED = {"preset", "data", "model"}


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a language model (the paper's recipe unless overridden)",
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_keys_help())
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", required=True, choices=list_presets(), metavar="NAME",
                        help=f"model preset, one of {', '.join(list_presets())}")
    parser.add_argument("--data", required=True, help="dataset directory (manifest.json from `mta data prepare`)")
    parser.add_argument("--out", required=True, type=output_directory,
                        help="run directory: train_config.json, metrics.jsonl, checkpoints/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training key or model.<field> (repeatable; keys below)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue from the newest readable checkpoint in --out; an error if there is none")
    resume.add_argument("--resume-or-start", action="store_true",
                        help="as --resume, but start the run afresh when --out holds no checkpoint (for job scripts "
                             "that rerun one command until the run is done)")
    parser.add_argument("--init-from", default=None, metavar="DIR",
                        help="start from the weights of this checkpoint or run directory (fine-tuning, e.g. longer "
                             "contexts); fresh optimiser and schedule")
    parser.add_argument("--parallel", choices=PARALLEL, default=None,
                        help="under torchrun: auto (FSDP2 on GPUs, DDP on CPUs), ddp or fsdp")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> None:
    assignments = list(args.set)
    if args.parallel is not None:
        assignments.append(f"parallel={args.parallel}")
    if args.compile:
        assignments.append("compile=true")
    if args.init_from is not None:
        assignments.append(f"init_from={json.dumps(args.init_from)}")
    config = LMTrainConfig.from_overrides(args.preset, args.data, assignments)
    try:
        summary = train_lm(config, args.out, resume=args.resume or args.resume_or_start,
                           progress=not args.no_progress, missing_ok=args.resume_or_start)
    except KeyboardInterrupt:
        latest = latest_checkpoint(args.out)
        print(f"interrupted: --resume goes on from the newest checkpoint, {latest}" if latest else
              "interrupted before the first checkpoint: nothing to resume", file=sys.stderr)
        raise SystemExit(130) from None
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every rank returns the same summary
        print(json.dumps(summary))
    if summary["stopped"] == "interrupted":
        print(f"interrupted at step {summary['step']}: checkpoint {summary['checkpoint']} written; --resume goes on "
              "from there", file=sys.stderr)
        raise SystemExit(130)


def main(argv: list[str] | None = None) -> int:
    """`python -m mta.train ...` (what torchrun launches): the arguments of `mta train`."""
    parser = argparse.ArgumentParser(prog="python -m mta.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_keys_help())
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except ValueError as error:
        parser.exit(2, f"mta train: error: {error}\n")
    except OSError as error:
        parser.exit(1, f"mta train: error: {error}\n")
    return 0


def _keys_help() -> str:
    """The --set keys and their defaults, read off LMTrainConfig."""
    lines = ["--set keys (default):"]
    for field in dataclasses.fields(LMTrainConfig):
        if field.name not in _FIXED:
            lines.append(f"  {field.name} ({json.dumps(field.default)})")
    lines.append("  model.<field>: any ModelConfig field of the preset, e.g. model.dim=512")
    return "\n".join(lines)
