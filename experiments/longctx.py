"""The long-context evaluations of the language-model comparison: `mta eval needle` and `mta eval babi` for each
architecture's checkpoint, into results/longctx/ (docs/results/longctx.md renders them).

Each (model, evaluation) is one `mta eval` process; they run one per visible GPU at a time (round-robin), or one
after another on a CPU. A result already written is kept unless --force, so an interrupted batch can be rerun.

    python experiments/longctx.py --data data/corpus \\
        --run transformer=runs/lm-transformer --run diff=runs/lm-diff \\
        --run talking_heads=runs/lm-talking_heads --run mta=runs/lm-mta
    python experiments/longctx.py ... --samples 100 --needle-args "--lengths 1024 2048" --babi-args "--tasks qa1 qa2"

Writes OUT/<name>.needle.json + .png and OUT/<name>.babi.json + .png (reports with provenance), logs in --log-dir.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from mta.train.runtime import visible_gpus

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "results" / "longctx"
EVALUATIONS = ("needle", "babi")


def parse_run(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--run {text!r}: expected NAME=CHECKPOINT_OR_RUN_DIR")
    return name, path


def command(name: str, checkpoint: str, evaluation: str, args: argparse.Namespace) -> list[str]:
    extra = shlex.split(args.needle_args if evaluation == "needle" else args.babi_args)
    return [sys.executable, "-m", "mta", "eval", evaluation, "--checkpoint", checkpoint, "--data", args.data,
            "--samples", str(args.samples), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
            "--out", str(args.out / f"{name}.{evaluation}.json"), "--no-progress", *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=parse_run, action="append", required=True, metavar="NAME=DIR",
                        help="a model to evaluate: name (transformer, diff, talking_heads, mta) and its checkpoint "
                             "or run directory (repeatable)")
    parser.add_argument("--data", required=True, help="the prepared corpus the models were trained on")
    parser.add_argument("--samples", type=int, default=500, help="samples per setting (default 500)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--needle-args", default="", help="more `mta eval needle` arguments, one string")
    parser.add_argument("--babi-args", default="", help="more `mta eval babi` arguments, one string")
    parser.add_argument("--evaluations", nargs="+", choices=EVALUATIONS, default=list(EVALUATIONS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory (default results/longctx)")
    parser.add_argument("--log-dir", type=Path, default=Path("runs") / "longctx-logs")
    parser.add_argument("--force", action="store_true", help="rerun evaluations whose results exist")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.log_dir.mkdir(parents=True, exist_ok=True)

    jobs = [(name, path, evaluation) for name, path in args.run for evaluation in args.evaluations
            if args.force or not (args.out / f"{name}.{evaluation}.json").exists()]
    free, running, failed = visible_gpus(), [], []
    while jobs or running:
        while jobs and free:
            name, path, evaluation = jobs.pop(0)
            gpu = free.pop(0)
            env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}))
            log = open(args.log_dir / f"{name}.{evaluation}.log", "w")
            process = subprocess.Popen(command(name, path, evaluation, args), env=env, stdout=subprocess.DEVNULL,
                                       stderr=log)
            print(f"started {name} {evaluation} on {'GPU ' + gpu if gpu is not None else 'the CPU'}", flush=True)
            running.append((name, evaluation, gpu, process, log))
        time.sleep(1)
        for job in [job for job in running if job[3].poll() is not None]:
            name, evaluation, gpu, process, log = job
            running.remove(job)
            log.close()
            free.append(gpu)
            status = "done" if process.returncode == 0 else f"FAILED ({process.returncode}), see {log.name}"
            print(f"{name} {evaluation}: {status}", flush=True)
            if process.returncode:
                failed.append(f"{name} {evaluation}")
    print(f"results in {args.out}; render them into docs/results/longctx.md with: python benchmarks/render_docs.py")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
