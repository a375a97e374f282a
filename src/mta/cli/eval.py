"""`mta eval ppl`: perplexity of a checkpoint on every domain of a dataset, and their mean (the paper's Table 2);
`mta eval needle` and `mta eval babi` (mta.cli.eval_longctx)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mta.eval.ppl import evaluate_ppl, load_split
from mta.models.checkpoint import load_checkpoint
from mta.train import PRECISIONS, autocast_dtype, resolve_device
from mta.train.checkpoint_state import resolve_checkpoint, training_seq_len

from . import eval_longctx


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint")
    eval_sub = parser.add_subparsers(dest="eval_command", required=True)
    p = eval_sub.add_parser("ppl", help="perplexity per domain and their mean, as JSON")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint directory, or a `mta train` run directory (its newest checkpoint)")
    p.add_argument("--data", required=True, help="dataset directory (manifest.json from `mta data prepare`)")
    p.add_argument("--split", default="val", help="split to score (default val)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="window length (default: the training run's seq_len, else the model's max_seq_len)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--windows", type=int, default=None, help="evenly spread windows per domain (default: all)")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 autocast on a GPU, float32 on a CPU (default auto)")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_ppl)
    eval_longctx.register(eval_sub)


def run_ppl(args: argparse.Namespace) -> None:
    for name in ("seq_len", "batch_size", "windows"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"{name}: got {getattr(args, name)}, expected a positive integer")
    checkpoint = resolve_checkpoint(args.checkpoint, "--checkpoint")
    device = resolve_device(args.device)
    model = load_checkpoint(checkpoint, device)
    split = load_split(args.data, args.split)
    if split.vocab_size > model.config.vocab_size:
        raise ValueError(f"data: vocabulary of {split.vocab_size} tokens, larger than the model's "
                         f"{model.config.vocab_size}")
    seq_len = args.seq_len or training_seq_len(checkpoint) or model.config.max_seq_len
    result = evaluate_ppl(model, split, seq_len, args.batch_size, args.windows, device,
                          autocast_dtype(device, args.precision), progress=not args.no_progress)
    report = {"checkpoint": str(checkpoint), "data": str(args.data), "split": args.split, "seq_len": seq_len,
              **result}
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
