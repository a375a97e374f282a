"""Why MTA's 2×9 kernel misses N = 8, on a CPU: the toy task's error by reach for several q–k kernel widths.

The reach of a sample (mta.data.toy.answer_reach) is how many letters the furthest query letter sits from the
first target letter within the target block. A pre-softmax q–k kernel c_k keys wide scores a key by the query
letters at most (c_k − 1) // 2 letters away, so the key-window explanation of the N = 8 gap (docs/results/toy.md,
"the key window's reach") predicts errors at the reaches above that and few below. This trains, at a CPU-sized setting of N = 8
"first" (6 blocks, D 64, 2 layers, lr 1e-3, 3,000 steps, as the demo shrinks N = 3), a Transformer and MTA with
each kernel of --kernels, and writes each run's result.json plus its evaluation curve to
results/toy_reach/<arch>[-k<c_q>x<c_k>]-s<seed>.json, with the final error by reach.

    python experiments/toy_reach.py                       # Transformer, MTA 2×5, 2×9, 2×15; seed 42 (~23 min, 2 CPU cores)
    python experiments/toy_reach.py --seeds 43 --skip-done
    python experiments/toy_reach.py --kernels 2x9 -- --steps 6000   # more `mta toy train` flags after --

(--kernels sets each MTA run's kernel; a --kernel after -- is overridden.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "experiments"))

from mta.cli.toy import add_train_arguments, train_config_from_args  # noqa: E402
from mta.layers import check_kernel_size  # noqa: E402
from mta.train import ToyTrainConfig, train_toy  # noqa: E402
from toy_table1 import collect  # noqa: E402

DEFAULT_OUT = ROOT / "results" / "toy_reach"
# N = 8 "first" shrunk for a CPU the way the demo shrinks N = 3: 6 blocks (58 tokens), D 64, 2 layers, lr 1e-3.
# The defaults of the flags after --; each run sets its own architecture and kernel (the transformer here only
# keeps the narrow-kernel warning for the MTA runs that have one).
SETTING = ToyTrainConfig(
    arch="transformer",
    variant="first",
    n_block=8,
    n_query=2,
    num_blocks=6,
    steps=3000,
    batch_size=64,
    lr=1e-3,
    warmup=100,
    eval_every=500,
    eval_samples=500,
    model=dict(dim=64, n_layers=2),
)


def kernel(text: str) -> tuple[int, int]:
    """"2x9" -> (2, 9), checked as ModelConfig checks a pre_kernel."""
    try:
        c_q, c_k = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C_QxC_K such as 2x9, got {text!r}") from None
    try:
        return check_kernel_size("kernel", (c_q, c_k))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_name(arch: str, seed: int, pre_kernel: tuple[int, int] | None) -> str:
    return f"{arch}-s{seed}" if pre_kernel is None else f"{arch}-k{pre_kernel[0]}x{pre_kernel[1]}-s{seed}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", type=kernel, nargs="+", default=[(2, 5), (2, 9), (2, 15)],
                        help="MTA q-k kernels as C_QxC_K (default 2x5 2x9 2x15)")
    parser.add_argument("--no-transformer", action="store_true", help="MTA runs only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--skip-done", action="store_true", help="leave out the runs that have a result in --out")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results (default {DEFAULT_OUT})")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mta-toy-reach"),
                        help="run directories (metrics, checkpoints)")
    argv = sys.argv[1:] if argv is None else argv
    own, train_flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(own)
    train_parser = argparse.ArgumentParser(prog="toy_reach.py ... --")
    add_train_arguments(train_parser, SETTING)
    train_args = train_parser.parse_args(train_flags)

    runs = [("transformer", None)] * (not args.no_transformer) + [("mta", k) for k in args.kernels]
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for arch, pre_kernel in runs:
            name = run_name(arch, seed, pre_kernel)
            if args.skip_done and (args.out / f"{name}.json").exists():
                print(f"{name}: done, skipped")
                continue
            train_args.kernel = pre_kernel
            config = train_config_from_args(train_args, arch, seed=seed)
            print(f"{name}: training", flush=True)
            train_toy(config, args.work_dir / name, progress=not train_args.no_progress)
            result = collect(name, args.work_dir / name, args.out)
            by_reach = " ".join(f"{row['reach']}:{row['sequence_error_pct']:.0f}%"
                                for row in result["final_sequence_error_pct_by_reach"])
            print(f"{name}: {result['final_sequence_error_pct']:.1f}% error at step {result['steps']}; "
                  f"by reach {by_reach}", flush=True)


if __name__ == "__main__":
    main()
