"""Speed of the stacked toy trainer (issue 3): ms per step of a stack of R runs, eager and under torch.compile.

Table 1's 36 runs must each finish inside one device call, so what a step of the stack costs decides how many
steps the reproduction can afford. For each architecture and --compile mode (mta.train.toy.COMPILE_MODES), one
stack of --runs runs of the paper's toy model (docs/spec.md §5; N = 5, variant "all", seeds 0 … R-1, batch 64, bf16
autocast on a GPU) trains --warmup steps untimed (compilation, CUDA-graph recording, AdamW state), then --steps
timed steps with one synchronisation at the end. ms/step is for the whole stack, ms/run-step that ÷ R;
"× eager" is the eager stack's ms/step over this one's, in the same process. --profile-steps K profiles K more
steps per row (profiling.profile_calls: aten launches and the ops with the most GPU time per step).
--lone times one run trained alone (mta.train.toy, as `experiments/toy_table1.py --lone` runs each) instead.

    python benchmarks/toy_stack_speed.py                       # → results/perf/toy_stack_speed.json
    python benchmarks/toy_stack_speed.py --lone --out results/perf/toy_lone_speed.json
    python benchmarks/toy_stack_speed.py --quick --out /tmp/toy_speed.json   # CPU smoke run: tiny models
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

from profiling import fill_defaults, first_line, profile_calls, synchronize, write_json_atomic
from mta.train import COMPILE_MODES, ToyRun, ToyStack, ToyTrainConfig

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "perf" / "toy_stack_speed.json"
FULL = {"runs": 18, "steps": 50, "warmup": 10, "model": {}}
QUICK = {"runs": 2, "steps": 2, "warmup": 1, "model": {"dim": 16, "n_layers": 1}}


def stack_configs(arch: str, mode: str, args: argparse.Namespace) -> list[ToyTrainConfig]:
    task = dict(n_block=5, variant="all") if not args.quick else dict(n_block=3, variant="all", num_blocks=4,
                                                                        batch_size=4, eval_samples=4)
    return [ToyTrainConfig(arch=arch, seed=seed, compile=mode, device=args.device, data="tensor",
                           model=dict(args.model), **task) for seed in range(args.runs)]


def measure(arch: str, mode: str, args: argparse.Namespace) -> dict:
    """One row: the stack's (or with --lone, the lone run's) ms/step after the warm-up, or "error" with the reason."""
    row = {"arch": arch, "compile": mode, "runs": args.runs}
    try:
        with tempfile.TemporaryDirectory() as work:
            configs = stack_configs(arch, mode, args)
            if args.lone:
                trainer = ToyRun(configs[0], Path(work) / "r0")
                step = trainer.train_step
            else:
                trainer = ToyStack(configs, [Path(work) / f"r{i}" for i in range(len(configs))], None)

                def step() -> None:
                    trainer.train_step(configs[0].lr)

            warm_start = time.perf_counter()
            for _ in range(args.warmup):
                step()
            synchronize(trainer.device)
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            synchronize(trainer.device)
            elapsed = time.perf_counter() - started
            if args.profile_steps:
                row["profile"] = profile_calls(step, args.profile_steps, trainer.device)
            for run in getattr(trainer, "runs", []):
                run.log.close()
        row.update(status="ok", warmup_s=started - warm_start, ms_per_step=elapsed / args.steps * 1e3,
                   ms_per_run_step=elapsed / args.steps * 1e3 / args.runs)
    except Exception as error:  # one failing mode must not cost the others
        traceback.print_exc()
        row.update(status="error", reason=f"{type(error).__name__}: {first_line(error)}")
    return row


def add_ratios(rows: list[dict]) -> None:
    eager = {r["arch"]: r for r in rows if r["compile"] == "off" and r["status"] == "ok"}
    for row in rows:
        base = eager.get(row["arch"])
        row["speedup_vs_eager"] = base["ms_per_step"] / row["ms_per_step"] if base and row["status"] == "ok" else None


def main(argv: list[str] | None = None) -> dict:
    from mta.provenance import run_metadata

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", choices=("transformer", "mta"), default=["transformer", "mta"])
    parser.add_argument("--modes", nargs="+", choices=COMPILE_MODES, default=list(COMPILE_MODES))
    parser.add_argument("--runs", type=int, help=f"runs per stack (default {FULL['runs']}; 1 with --lone)")
    parser.add_argument("--lone", action="store_true", help="time one run trained alone instead of a stack")
    parser.add_argument("--steps", type=int, help=f"timed steps (default {FULL['steps']})")
    parser.add_argument("--warmup", type=int, help=f"untimed steps first (default {FULL['warmup']})")
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="after the timed steps, profile this many more and record the top ops (default 0: off)")
    parser.add_argument("--quick", action="store_true", help=f"tiny CPU smoke run: {QUICK}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    if args.lone:
        args.runs = 1
    fill_defaults(args, defaults)
    if args.quick and args.device == "auto":
        args.device = "cpu"
    modes = ["off", *[m for m in args.modes if m != "off"]]  # eager first: the baseline of every ratio
    settings = {key: getattr(args, key) for key in ("runs", "lone", "steps", "warmup", "device", "model")}
    results = {"meta": run_metadata(), "settings": settings, "rows": []}
    for arch in args.archs:
        for mode in modes:
            results["rows"].append(measure(arch, mode, args))
            print(json.dumps(results["rows"][-1]), flush=True)
            add_ratios(results["rows"])
            write_json_atomic(args.out, results)  # after every row: a run cut short keeps what it measured
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
