"""`mta convert` (native checkpoint <-> transformers directory) and `mta retrofit` (Llama -> MTA); both need
transformers 5.x (the [hf] extra)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mta.models.checkpoint import CONFIG_FILE
from mta.models.presets import MTA_KERNEL
from mta.train.checkpoint_state import resolve_checkpoint

from .paths import new_output_directory, output_directory


def register(subparsers) -> None:
    convert = subparsers.add_parser(
        "convert", help="convert between a native checkpoint and a transformers (save_pretrained) directory")
    convert.add_argument("--from", dest="source", required=True,
                         help="a native checkpoint (model.safetensors + config.json), a training run directory (its "
                              "newest checkpoints/step-…) or a transformers MTA directory; the direction follows "
                              "from it")
    convert.add_argument("--out", required=True, type=output_directory, help="directory to write the other format into")
    convert.add_argument("--overwrite", action="store_true", help="write into --out even if it holds files")
    convert.set_defaults(func=run_convert)

    retrofit = subparsers.add_parser(
        "retrofit", help="turn a transformers LlamaForCausalLM into an MTA model with the same logits")
    retrofit.add_argument("--from", dest="source", required=True, help="a LlamaForCausalLM save_pretrained directory")
    retrofit.add_argument("--out", required=True, type=output_directory,
                          help="directory for the MTAForCausalLM (save_pretrained)")
    retrofit.add_argument("--mta-layers", type=_layers, default=None, metavar="I,J,...",
                          help="0-based layers with q–k convolutions (default: 2,6,10,… as the paper)")
    kernel = ",".join(map(str, MTA_KERNEL))
    retrofit.add_argument("--pre-kernel", type=_kernel, default=MTA_KERNEL, metavar="CQ,CK",
                          help=f"pre-softmax kernel (c_q, c_k) or 'none' (default {kernel})")
    retrofit.add_argument("--post-kernel", type=_kernel, default=MTA_KERNEL, metavar="CQ,CK",
                          help=f"post-softmax kernel (c_q, c_k) or 'none' (default {kernel})")
    retrofit.add_argument("--no-head-mix", dest="head_mix", action="store_false",
                          help="no head mixing (default: full mixing before and after softmax in every layer)")
    retrofit.add_argument("--group-norm", action="store_true", help="per-head RMSNorm (changes the logits)")
    retrofit.add_argument("--gate", action="store_true", help="scalar sigmoid gate per head (changes the logits)")
    retrofit.set_defaults(func=run_retrofit)


def run_convert(args: argparse.Namespace) -> None:
    new_output_directory(args.out, args.overwrite)
    convert = _hf_module("convert")
    source = Path(args.source)
    if (source / CONFIG_FILE).is_file() and convert.checkpoint_format(source) == "hf":
        convert.hf_to_native(source, args.out)
        written = "native"
    else:
        source = resolve_checkpoint(source, "--from")
        convert.native_to_hf(source, args.out)
        written = "hf"
    print(json.dumps({"from": str(source), "out": args.out, "format": written}))


def run_retrofit(args: argparse.Namespace) -> None:
    retrofit = _hf_module("retrofit")
    model = retrofit.retrofit_directory(args.source, args.out, mta_layers=args.mta_layers, pre_kernel=args.pre_kernel,
                                        post_kernel=args.post_kernel, head_mix=args.head_mix,
                                        group_norm=args.group_norm, gate=args.gate)
    config = model.config
    print(json.dumps({"from": args.source, "out": args.out, "qk_conv_layers": config.qk_conv_layers,
                      "pre_kernel": config.pre_kernel, "post_kernel": config.post_kernel,
                      "head_mix": args.head_mix, "group_norm": config.group_norm, "gate": config.gate,
                      "same_function": not (config.group_norm or config.gate)}))


def _hf_module(name: str):
    """mta.models.<name>, with a missing transformers reported as a usage error."""
    import importlib

    try:
        return importlib.import_module(f"mta.models.{name}")
    except ImportError as error:
        raise ValueError(str(error)) from None


def _layers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices, got {text!r}") from None


def _kernel(text: str) -> tuple[int, int] | None:
    if text.lower() == "none":
        return None
    try:
        c_q, c_k = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CQ,CK (e.g. 6,11) or 'none', got {text!r}") from None
    return c_q, c_k
