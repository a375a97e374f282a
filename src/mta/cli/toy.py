"""`mta toy generate | train | sweep | eval`: the toy task of the paper's Table 1 (docs/spec.md §5)."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

from mta.data import toy
from mta.eval.toy import evaluate_toy
from mta.models.checkpoint import CheckpointError, load_checkpoint
from mta.ops import BACKENDS
from mta.train import checkpoint_state as ckpt

from .paths import output_directory
from mta.train import (ARCHS, COMPILE_MODES, DATA_SOURCES, PRECISIONS, ToyTrainConfig, autocast_dtype, resolve_device,
                       train_toy, train_toy_stack)

# Public for scripts that train toy runs with `mta toy train`'s flags (experiments/toy_reach.py) or name runs as
# `mta toy sweep` does (experiments/toy_table1.py).
__all__ = ["add_train_arguments", "register", "sweep_run_name", "task_mismatch", "train_config_from_args"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `toy` command to ``subparsers``; return its parser (sub-commands hang off ``toy_command``)."""
    parser = subparsers.add_parser("toy", help="toy task of the paper's Table 1 (docs/spec.md §5)")
    toy_sub = parser.add_subparsers(dest="toy_command", required=True)
    _register_generate(toy_sub)
    _register_train(toy_sub)
    _register_sweep(toy_sub)
    _register_eval(toy_sub)
    return parser


def _register_generate(toy_sub) -> None:
    p = toy_sub.add_parser("generate", help="write toy-task samples as JSONL")
    p.add_argument("--n-block", type=int, default=5, help="letters per block (N in the paper)")
    p.add_argument("--n-query", type=int, default=2, help="query letters (L in the paper)")
    p.add_argument(
        "--variant", choices=toy.VARIANTS, default="all", help="label: whole target block, first or last letter"
    )
    p.add_argument("--samples", type=int, required=True, help="number of samples")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--num-blocks", type=int, default=None, help="blocks per sample (default: the most that fit 319 characters)"
    )
    p.add_argument("--out", required=True, help="output .jsonl file")
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> None:
    samples = toy.generate(args.n_block, args.n_query, args.variant, args.samples, args.seed, args.num_blocks)
    toy.write_jsonl(samples, args.out)
    print(f"wrote {len(samples)} samples to {args.out}")


def _register_train(toy_sub) -> None:
    p = toy_sub.add_parser("train", help="train a toy-task model (the paper's settings unless overridden)")
    p.add_argument("--arch", choices=ARCHS, default="mta")
    add_train_arguments(p, ToyTrainConfig())
    p.add_argument("--out", required=True, type=output_directory,
                   help="run directory: metrics.jsonl, checkpoint, result.json")
    add_resume_arguments(p, "the run", "--out (its checkpoints/ directory)")
    p.set_defaults(func=_train)


def add_resume_arguments(parser: argparse.ArgumentParser, what: str, where: str) -> None:
    """Add --resume and --resume-or-start (mutually exclusive) for continuing `what` from the training state in
    `where`."""
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help=f"continue {what} from the training state that a time cap, Ctrl-C or SIGTERM left in "
                             f"{where}, with the same settings; an error if there is none")
    resume.add_argument("--resume-or-start", action="store_true",
                        help=f"as --resume, but start {what} afresh when there is no training state (for job "
                             "scripts that rerun one command until it is done)")


def add_train_arguments(parser: argparse.ArgumentParser, defaults: ToyTrainConfig, sweep: bool = False) -> None:
    """Add the task, optimiser, evaluation and model flags of a toy run, with `defaults` as their defaults.

    sweep: --variant, --n-block and --seed take several values (`mta toy sweep` trains every combination).
    `train_config_from_args` turns the parsed flags back into a ToyTrainConfig.
    """
    d = defaults
    model = d.model_config()
    def several(value):
        return dict(nargs="+", default=[value]) if sweep else dict(default=value)

    task = parser.add_argument_group("task")
    task.add_argument("--variant", choices=toy.VARIANTS, help=f"label (default {d.variant})", **several(d.variant))
    task.add_argument("--n-block", type=int, help=f"letters per block, N (default {d.n_block})", **several(d.n_block))
    task.add_argument("--n-query", type=int, default=d.n_query, help=f"query letters, L (default {d.n_query})")
    # The paper's default depends on --n-block and --n-query, so it is resolved after parsing.
    paper_blocks = d.num_blocks == toy.default_num_blocks(d.n_block, d.n_query)
    task.add_argument("--num-blocks", type=int, default=None if paper_blocks else d.num_blocks,
                      help="blocks per sample (default: " + ("the most that fit 319 characters, as the paper)"
                                                             if paper_blocks else f"{d.num_blocks})"))
    task.add_argument("--seed", type=int, help=f"model init and training stream (default {d.seed})",
                      **several(d.seed))
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--steps", type=int, default=d.steps, help=f"most training steps (default {d.steps})")
    optim.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    optim.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr:g})")
    optim.add_argument("--warmup", type=int, default=d.warmup,
                       help=f"linear warmup steps, then constant (default {d.warmup})")
    optim.add_argument("--betas", type=float, nargs=2, default=d.betas, metavar=("BETA1", "BETA2"),
                       help=f"AdamW betas (default {d.betas[0]:g} {d.betas[1]:g})")
    optim.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"(default {d.weight_decay:g})")
    optim.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (default: off)")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval-every", type=int, default=d.eval_every, help=f"steps (default {d.eval_every})")
    evaluation.add_argument("--eval-samples", type=int, default=d.eval_samples,
                            help=f"held-out samples (default {d.eval_samples})")
    evaluation.add_argument("--eval-seed", type=int, default=None, help="held-out set seed (default: seed + 1000)")
    evaluation.add_argument("--patience", type=int, default=d.patience,
                            help=f"stop after this many evaluations in a row at 0%% error (default {d.patience})")
    evaluation.add_argument("--log-every", type=int, default=d.log_every,
                            help=f"steps between metrics lines (default {d.log_every})")
    arch = parser.add_argument_group("model (overrides of the toy presets)")
    arch.add_argument("--dim", type=int, default=model.dim, help=f"model width D (default {model.dim})")
    arch.add_argument("--layers", type=int, default=model.n_layers, help=f"(default {model.n_layers})")
    arch.add_argument("--heads", type=int, default=model.n_heads, help=f"(default {model.n_heads})")
    arch.add_argument("--dropout", type=float, default=model.dropout,
                      help=f"attention-weight dropout (default {model.dropout:g})")
    arch.add_argument("--kernel", type=int, nargs=2, metavar=("C_Q", "C_K"), default=None,
                      help="MTA pre-softmax q-k kernel (default: the preset's, 2 9)")
    arch.add_argument("--backend", choices=BACKENDS, default=model.backend,
                      help=f"mta_attention backend (default {model.backend})")
    run = parser.add_argument_group("where")
    run.add_argument("--device", default=d.device, help="auto (a GPU if there is one), cpu, cuda, cuda:N")
    run.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                     help="auto: bf16 autocast on a GPU, float32 on a CPU (default auto)")
    run.add_argument("--data", choices=DATA_SOURCES, default=d.data,
                     help="training batches: python (one sample at a time), tensor (a batch at once on the device) "
                          "or auto (tensor on a GPU, python on a CPU; default)")
    run.add_argument("--compile", choices=COMPILE_MODES, default=d.compile,
                     help="torch.compile the training loss: off (default), default (fused kernels) or "
                          "reduce-overhead (also CUDA graphs)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--max-minutes", type=float, default=None,
                     help="wall-time cap: runs still going are evaluated, saved and stopped (default: none)")


def train_config_from_args(args: argparse.Namespace, arch: str, **task) -> ToyTrainConfig:
    """The ToyTrainConfig of flags added by `add_train_arguments`, for architecture `arch`; `task` (variant,
    n_block, seed) overrides the flags of the same name."""
    model = dict(dim=args.dim, n_layers=args.layers, n_heads=args.heads, dropout=args.dropout, backend=args.backend)
    if args.kernel is not None and arch == "mta":
        model["pre_kernel"] = tuple(args.kernel)
    # Every other field has a flag of its name (add_train_arguments); the model flags go into `model`.
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(ToyTrainConfig)
             if f.name not in ("arch", "model")}
    return ToyTrainConfig(**{**flags, "betas": tuple(args.betas), **task}, arch=arch, model=model)


def _train(args: argparse.Namespace) -> None:
    config = train_config_from_args(args, args.arch)
    try:
        result = train_toy(config, args.out, progress=not args.no_progress, max_minutes=args.max_minutes,
                           resume=args.resume or args.resume_or_start, missing_ok=args.resume_or_start)
    except KeyboardInterrupt:
        _interrupted(args.out)
    except CheckpointError as error:
        raise SystemExit(f"mta toy train: {error}") from None
    if result["stopped"] == "interrupted":
        _interrupted(args.out)
    summary = {key: result[key] for key in ("arch", "variant", "n_block", "n_query", "seed", "steps", "stopped",
                                            "best_sequence_error_pct", "final_sequence_error_pct",
                                            "final_token_error_pct", "elapsed_s", "device")}
    print(json.dumps(summary, indent=2))


def _interrupted(out: str) -> None:
    """Say what an interrupted run left in `out` and exit with status 130."""
    state = ckpt.latest_checkpoint(out)
    resume = (f"its training state is in {state}, and --resume goes on from there" if state is not None else
              "no training state was saved (it was stopped inside a step), so --resume cannot continue it")
    print(f"interrupted: metrics, result.json and the model checkpoint are in {out}; {resume}", file=sys.stderr)
    raise SystemExit(130)


def _register_sweep(toy_sub) -> None:
    p = toy_sub.add_parser("sweep", help="train every combination of variants, block lengths and seeds at once",
                           description="Train every (variant, N, seed) combination as one stack in one process "
                                       "(mta.train.toy_stack): the runs share a device and every kernel launch. "
                                       "Each run writes OUT/<arch>-N<n>-<variant>-s<seed>/ as `mta toy train` does.")
    p.add_argument("--arch", choices=ARCHS, default="mta")
    add_train_arguments(p, ToyTrainConfig(), sweep=True)
    p.add_argument("--out", required=True, type=output_directory, help="directory of the run directories")
    add_resume_arguments(p, "the sweep", "its run directories (their checkpoints/ directories)")
    p.set_defaults(func=_sweep)


def sweep_run_name(arch: str, n_block: int, variant: str, seed: int) -> str:
    """The run directory name of one sweep run, e.g. mta-N5-all-s42."""
    return f"{arch}-N{n_block}-{variant}-s{seed}"


def _sweep(args: argparse.Namespace) -> None:
    settings = list(itertools.product(dict.fromkeys(args.n_block), dict.fromkeys(args.variant),
                                      dict.fromkeys(args.seed)))
    configs = [train_config_from_args(args, args.arch, n_block=n, variant=v, seed=s) for n, v, s in settings]
    out_dirs = [Path(args.out) / sweep_run_name(args.arch, n, v, s) for n, v, s in settings]
    try:
        results = train_toy_stack(configs, out_dirs, progress=not args.no_progress, max_minutes=args.max_minutes,
                                  resume=args.resume or args.resume_or_start, missing_ok=args.resume_or_start)
    except KeyboardInterrupt:
        _sweep_interrupted(args.out, out_dirs)
    except CheckpointError as error:
        raise SystemExit(f"mta toy sweep: {error}") from None
    if any(result["stopped"] == "interrupted" for result in results):
        _sweep_interrupted(args.out, out_dirs)
    for out_dir, result in zip(out_dirs, results):
        print(f"{out_dir.name}: {result['stopped']} at step {result['steps']}, "
              f"final sequence error {result['final_sequence_error_pct']}%")


def _sweep_interrupted(out: str, out_dirs: list[Path]) -> None:
    """Say what an interrupted sweep left in its run directories `out_dirs` (under `out`) and exit with status 130."""
    states = [state for state in map(ckpt.latest_checkpoint, out_dirs) if state is not None]
    resume = (f"the training states of {len(states)} runs are in {out}/*/{ckpt.CHECKPOINTS_DIR}/ "
              f"({', '.join(sorted({state.name for state in states}))}), and --resume goes on from there" if states else
              "no training state was saved (it was stopped inside a step), so --resume cannot continue it")
    print(f"interrupted: each run's metrics, result.json and model checkpoint are in {out}/<run>/; {resume}",
          file=sys.stderr)
    raise SystemExit(130)


def _register_eval(toy_sub) -> None:
    p = toy_sub.add_parser("eval", help="teacher-forced error of a checkpoint on a JSONL file")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint directory (e.g. a `toy train` --out), or a `mta train` run directory (its "
                        "newest checkpoint)")
    p.add_argument("--data", required=True, help='JSONL file, one {"src": ..., "tgt": ...} per line')
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16 = autocast (default fp32)")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> None:
    if not Path(args.data).is_file():
        raise ValueError(f"--data: {args.data} is not a file (expected JSONL samples, e.g. from `mta toy generate`)")
    device = resolve_device(args.device)
    model = load_checkpoint(ckpt.resolve_checkpoint(args.checkpoint, "--checkpoint"), device)
    samples = toy.read_jsonl(args.data)
    mismatch = task_mismatch(Path(args.checkpoint) / "result.json", samples)
    if mismatch:
        print(f"warning: --data is not the task the checkpoint was trained on ({mismatch})", file=sys.stderr)
    result = evaluate_toy(model, samples, args.batch_size, autocast_dtype(device, args.precision))
    print(json.dumps(result))


def task_mismatch(result_file: Path, samples: list[dict]) -> str:
    """How `samples` differ from the task of the run whose result.json is `result_file` (block length N, target
    length of the variant, query length L), e.g. "N: trained 5, data 3"; "" if they agree or there is no
    result.json (a checkpoint that is not a toy run's)."""
    if not result_file.is_file():
        return ""
    run = json.loads(result_file.read_text(encoding="utf-8"))
    trained = {"N": run["n_block"], "target length": run["n_block"] if run["variant"] == "all" else 1,
               "L": run["n_query"]}
    differences = []
    for name, expected in trained.items():
        found = sorted({_task_shape(sample)[name] for sample in samples})
        if found != [expected]:
            differences.append(f"{name}: trained {expected}, data {', '.join(map(str, found))}")
    return "; ".join(differences)


def _task_shape(sample: dict) -> dict:
    blocks, _, query = sample["src"].partition(toy.QUERY_SEP)
    return {"N": len(blocks.split(toy.BLOCK_SEP)[0]), "target length": len(sample["tgt"]), "L": len(query)}
