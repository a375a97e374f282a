"""`mta eval needle` and `mta eval babi`: finding facts in long contexts (the paper's multi-needle and BabiLong tests).

Both print a JSON report (accuracy per setting, the model and where it ran) and, with --out or --plot, draw a PNG.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mta.data.babi import TASKS
from mta.eval.babi import DEFAULT_LENGTHS, evaluate_babi
from mta.eval.background import Background
from mta.eval.needle import DEFAULT_DEPTHS, DEFAULT_NEEDLES, VALUE_KINDS, evaluate_needle
from mta.eval.plots import plot_babi, plot_needle
from mta.models.checkpoint import load_checkpoint
from mta.provenance import run_metadata
from mta.train import PRECISIONS, autocast_dtype, resolve_device
from mta.train.checkpoint_state import resolve_checkpoint, training_seq_len


def register(eval_sub) -> None:
    p = eval_sub.add_parser("needle", help="multi-needle retrieval in held-out text, accuracy per setting")
    _common_arguments(p)
    p.add_argument("--needles", type=int, nargs="+", default=list(DEFAULT_NEEDLES),
                   help="needle counts (default 2 4 6)")
    p.add_argument("--depths", type=float, nargs="+", default=list(DEFAULT_DEPTHS),
                   help="depths of the asked needle, fractions of the haystack (default 0 0.25 0.5 0.75 1)")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="context lengths in tokens (default: half and all of the training seq_len, else max_seq_len)")
    p.add_argument("--values", choices=tuple(VALUE_KINDS), default="numbers",
                   help="needle values: 4-digit numbers or words (default numbers)")
    p.set_defaults(func=run_needle)

    p = eval_sub.add_parser("babi", help="bAbI QA1-QA5 spread through distractor text, accuracy per task and length")
    _common_arguments(p)
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="tasks (default all five)")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="context lengths in tokens, story and distractor text together; 0: the story alone "
                        "(default: those of 0 1024 2048 4096 that fit the model)")
    p.set_defaults(func=run_babi)


def _common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint directory, or a `mta train` run directory (its newest checkpoint)")
    p.add_argument("--data", required=True, help="prepared corpus (`mta data prepare`): tokenizer and held-out text")
    p.add_argument("--split", default="val", help="split the haystack / distractor text comes from (default val)")
    p.add_argument("--domains", nargs="+", default=None, help="domains of that text (default: all)")
    p.add_argument("--samples", type=int, default=500, help="samples per setting (default 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    p.add_argument("--generate", action="store_true", help="also greedy exact match (slower: one pass per token)")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 autocast on a GPU, float32 on a CPU (default auto)")
    p.add_argument("--out", default=None, help="also write the JSON report here (and the plot beside it as .png)")
    p.add_argument("--plot", default=None, help="write the plot to this PNG (default: --out with .png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _setup(args: argparse.Namespace):
    """(checkpoint directory, model, autocast dtype, background text), all checked."""
    for name in ("samples", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name}: got {getattr(args, name)}, expected a positive integer")
    if args.seed < 0:
        raise ValueError(f"seed: got {args.seed}, expected a non-negative integer")
    checkpoint = resolve_checkpoint(args.checkpoint, "--checkpoint")
    device = resolve_device(args.device)
    background = Background.from_corpus(args.data, args.split, args.domains)
    model = load_checkpoint(checkpoint, device)
    if background.vocab_size > model.config.vocab_size:
        raise ValueError(f"data: the tokenizer has {background.vocab_size} tokens, more than the model's "
                         f"vocab_size={model.config.vocab_size}")
    return checkpoint, model, autocast_dtype(device, args.precision), background


def _finish(args: argparse.Namespace, checkpoint: Path, model, amp, result: dict, plot) -> None:
    config = model.config
    precision = "bf16 autocast" if amp is not None else "fp32"
    report = {"checkpoint": str(checkpoint), "data": str(args.data), "split": args.split, "precision": precision,
              "model": {"attention": config.attention, "parameters": model.num_parameters(),
                        "max_seq_len": config.max_seq_len, "rope_theta": config.rope_theta,
                        "training_seq_len": training_seq_len(checkpoint)},
              **result, "environment": run_metadata()}
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    figure = args.plot or (str(Path(args.out).with_suffix(".png")) if args.out else None)
    if figure:
        plot(report, figure, title=f"{checkpoint} ({config.attention})")
    print(text)


def run_needle(args: argparse.Namespace) -> None:
    checkpoint, model, amp, background = _setup(args)
    context = training_seq_len(checkpoint) or model.config.max_seq_len
    lengths = args.lengths or sorted({context // 2, context})
    result = evaluate_needle(model, background, args.needles, lengths, args.depths, args.samples, args.seed,
                             args.values, args.batch_size, amp, args.generate, model.config.max_seq_len,
                             progress=not args.no_progress)
    _finish(args, checkpoint, model, amp, result, plot_needle)


def run_babi(args: argparse.Namespace) -> None:
    checkpoint, model, amp, background = _setup(args)
    result = evaluate_babi(model, background, args.tasks, args.lengths or DEFAULT_LENGTHS, args.samples,
                           args.seed, args.batch_size, amp, args.generate, model.config.max_seq_len,
                           skip_too_long=args.lengths is None, progress=not args.no_progress)
    _finish(args, checkpoint, model, amp, result, plot_babi)
