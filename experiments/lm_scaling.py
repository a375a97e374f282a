"""Multi-GPU scaling of language-model training (issue 5): the same run on 1, 2, 4 … processes under torchrun,
with the same global batch, so that the loss curves should agree and only the throughput changes.

For each world size K in --world-sizes, one `torchrun --standalone --nproc-per-node K -m mta.train` run (FSDP2
per block on GPUs, DDP on a CPU unless `--parallel` says otherwise) with batch_size = --global-batch / K per rank.
The runs draw different batches (a batch is a function of seed, step and rank), so their curves agree in
distribution, not token for token. Then OUT/scaling.json holds, per K: the steady tokens/s (from the metrics
after --skip-steps, past compilation and warm-up), its ratio to K = 1 and the scaling efficiency (ratio / K),
the final training loss and validation perplexity, and the loss curve; `benchmarks/render_docs.py` renders it.

    python experiments/lm_scaling.py --data data/corpus --preset small-mta --world-sizes 1 2 4 --global-batch 32 \\
        -- --set steps=300 --set warmup=30 --set lr=1e-3 --set seq_len=512 --set log_every=10 --set eval_every=300
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "results" / "lm" / "scaling.json"


def steady_tokens_per_s(metrics: list[dict], skip_steps: int) -> float | None:
    """Tokens per second between the first training line past `skip_steps` and the last one (None if fewer than
    two such lines)."""
    lines = [m for m in metrics if "loss" in m and m["step"] > skip_steps]
    if len(lines) < 2:
        return None
    first, last = lines[0], lines[-1]
    return (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"])


def summarise(world_size: int, per_rank_batch: int, run_dir: Path, skip_steps: int, wall_s: float) -> dict:
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    train = [m for m in metrics if "loss" in m]
    val = [m for m in metrics if "val_mean_ppl" in m]
    config = json.loads((run_dir / "train_config.json").read_text())
    return {"world_size": world_size, "per_rank_batch": per_rank_batch, "parallel": config["parallel"],
            "tokens_per_s": steady_tokens_per_s(metrics, skip_steps), "wall_s": wall_s,
            "final_loss": train[-1]["loss"] if train else None,
            "val_mean_ppl": val[-1]["val_mean_ppl"] if val else None,
            "curve": [[m["step"], m["loss"]] for m in train]}


def add_ratios(runs: list[dict]) -> None:
    """tokens/s over the smallest world size's, and that ratio per process added (1 = linear scaling)."""
    base = min(runs, key=lambda r: r["world_size"])
    for run in runs:
        measured = run["tokens_per_s"] is not None and base["tokens_per_s"]
        run["speedup"] = run["tokens_per_s"] / base["tokens_per_s"] if measured else None
        run["efficiency"] = (run["speedup"] * base["world_size"] / run["world_size"]
                             if run["speedup"] is not None else None)


def main(argv: list[str] | None = None) -> int:
    from mta.provenance import run_metadata

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a corpus written by `mta data prepare`")
    parser.add_argument("--preset", default="small-mta", help="model preset (default small-mta)")
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2], help="processes per run (default 1 2)")
    parser.add_argument("--global-batch", type=int, required=True,
                        help="sequences per step over all processes; each world size must divide it")
    parser.add_argument("--parallel", choices=("auto", "ddp", "fsdp"), default="auto",
                        help="auto: FSDP2 on GPUs, DDP on a CPU (default)")
    parser.add_argument("--skip-steps", type=int, default=20,
                        help="steps left out of the tokens/s (compilation, warm-up; default 20)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs") / "lm-scaling", help="run directories")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results JSON (default results/lm/scaling.json)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: more `mta train` flags for every run")
    args = parser.parse_args(argv)
    train_extra = [a for a in args.train_args if a != "--"]
    for world_size in args.world_sizes:
        if world_size < 1 or args.global_batch % world_size:
            parser.error(f"--world-sizes: {world_size} does not divide --global-batch {args.global_batch}")
    args.work_dir.mkdir(parents=True, exist_ok=True)

    runs = []
    for world_size in args.world_sizes:
        run_dir, per_rank = args.work_dir / f"w{world_size}", args.global_batch // world_size
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world_size),
                   "-m", "mta.train", "--preset", args.preset, "--data", args.data, "--out", str(run_dir),
                   "--parallel", args.parallel, "--no-progress", *train_extra, "--set", f"batch_size={per_rank}"]
        print(f"world size {world_size}: {per_rank} sequences per process", flush=True)
        started = time.perf_counter()
        with open(args.work_dir / f"w{world_size}.log", "w") as log:
            finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
        if finished.returncode:
            print(f"world size {world_size}: FAILED ({finished.returncode}), see {log.name}", flush=True)
            return 1
        runs.append(summarise(world_size, per_rank, run_dir, args.skip_steps, time.perf_counter() - started))
    add_ratios(runs)
    results = {"meta": run_metadata(), "preset": args.preset, "global_batch": args.global_batch,
               "skip_steps": args.skip_steps, "train_args": train_extra, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    for run in runs:
        print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
    print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
