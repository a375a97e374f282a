"""Reproduce the paper's Table 1 (toy task): both architectures × N ∈ {5, 8} × {all, first, last} × 3 seeds.

Every run is one `mta toy train` process with the paper's model and protocol (spec §5) and early stopping once
the held-out error has been 0 at three consecutive evaluations. Runs go concurrently, spread round-robin over the
visible GPUs (many small runs share one GPU). `--max-minutes` caps the batch's wall time, so that it fits in the
time one has: at the cap every run still going gets SIGINT, saves its checkpoint and result.json (`stopped:
"interrupted"`, with the steps it reached and its last evaluation) and exits.

For each run, results/toy/<arch>-N<n>-<variant>-s<seed>.json holds result.json (errors, steps, device, versions,
commit) plus its evaluation curve. Checkpoints stay in the scratch directory (--work-dir), not in the repository.

    python experiments/toy_table1.py --max-minutes 8                         # all 36 runs
    python experiments/toy_table1.py --archs mta --n-blocks 5 --seeds 42     # a subset
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "results" / "toy"


def run_name(arch: str, n_block: int, variant: str, seed: int) -> str:
    return f"{arch}-N{n_block}-{variant}-s{seed}"


def launch(arch, n_block, variant, seed, gpu, args) -> tuple[str, subprocess.Popen, Path]:
    name = run_name(arch, n_block, variant, seed)
    run_dir = args.work_dir / name
    command = [sys.executable, "-m", "mta", "toy", "train", "--arch", arch, "--n-block", str(n_block),
               "--n-query", str(args.n_query), "--variant", variant, "--seed", str(seed), "--steps", str(args.steps),
               "--out", str(run_dir), "--no-progress", *args.extra]
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / "train.log", "w")
    return name, subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), run_dir


def collect(name: str, run_dir: Path, out_dir: Path) -> dict | None:
    """Copy result.json plus the evaluation curve from metrics.jsonl into out_dir/<name>.json."""
    result_file = run_dir / "result.json"
    if not result_file.exists():
        return None
    result = json.loads(result_file.read_text())
    curve = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "eval_sequence_error_pct" in record:
            curve.append({key: record[key] for key in ("step", "eval_sequence_error_pct", "eval_token_error_pct", "elapsed_s")})
    result["curve"] = curve
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def wait_until(process: subprocess.Popen, deadline: float | None) -> int:
    """Wait for `process`; past `deadline` interrupt it (it then saves its state) and wait for it to exit."""
    if deadline is not None:
        try:
            return process.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
    return process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["transformer", "mta"])
    parser.add_argument("--n-blocks", type=int, nargs="+", default=[5, 8])
    parser.add_argument("--variants", nargs="+", default=["all", "first", "last"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--n-query", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-time cap of the batch")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs to spread runs over (default: all visible)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mta-toy-table1"))
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `mta toy train` flags")
    args = parser.parse_args()
    args.extra = [a for a in args.extra if a != "--"]
    if args.gpus is None:
        import torch

        args.gpus = torch.cuda.device_count()
    args.out.mkdir(parents=True, exist_ok=True)

    settings = list(itertools.product(args.archs, args.n_blocks, args.variants, args.seeds))
    runs = [launch(*setting, index % args.gpus if args.gpus else None, args) for index, setting in enumerate(settings)]
    print(f"launched {len(runs)} runs over {args.gpus or 'no'} GPU(s)", flush=True)
    start = time.time()
    deadline = start + 60 * args.max_minutes if args.max_minutes else None
    for name, process, run_dir in runs:
        code = wait_until(process, deadline)
        result = collect(name, run_dir, args.out)
        summary = (f"{result['stopped']} at step {result['steps']}, final error {result['final_sequence_error_pct']}%"
                   if result else f"no result (exit {code}); see {run_dir / 'train.log'}")
        print(f"[{time.time() - start:6.0f} s] {name}: {summary}", flush=True)


if __name__ == "__main__":
    main()
