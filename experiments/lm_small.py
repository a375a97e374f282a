"""The small-scale language-model comparison (issue 5): the four architectures of the paper's Table 2 at the same
size, on the same tokens and steps, several seeds each, then the validation perplexity of every run per domain.

Every (architecture, seed) is one `mta train` process (the `small-<arch>` preset unless --size); they all run
at once, spread round-robin over the visible GPUs (several small runs share one H200 well), or --concurrency at
a time. Then `mta eval ppl` scores each run's final checkpoint on every validation window, and the run's
metrics and report are copied into --out:

    python experiments/lm_small.py --data data/corpus --seeds 0 1 \\
        -- --set steps=2000 --set seq_len=512 --set batch_size=32 --set lr=1e-3 --set warmup=100
    python experiments/lm_small.py ... --extend 2 -- ...   # also double each first-seed run's context

Writes OUT/<arch>-s<seed>.json ({"arch", "seed", "config", "ppl": the `mta eval ppl` report, "train_s": the
wall time of the whole training phase, all runs together}) and
OUT/<arch>-s<seed>.metrics.jsonl (the training curve); `benchmarks/render_docs.py` renders the table and the
loss plot. With --extend F, each architecture's first-seed run is fine-tuned at F× its context with RoPE θ raised
F²× (docs/results/longctx.md) into WORK/<arch>-s<seed>-x<F>, ready for experiments/longctx.py. Arguments after
`--` go to every `mta train` (the base runs; the extension runs get --extend-set).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mta.train.runtime import visible_gpus

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "results" / "lm"
ARCHS = ("transformer", "diff", "talking_heads", "mta")


def run_all(jobs: list[tuple[str, list[str]]], concurrency: int, log_dir: Path) -> list[str]:
    """Runs each (name, argv) job, `concurrency` at a time, round-robin over the GPUs; returns the failed names."""
    gpus, running, failed, started = visible_gpus(), [], [], 0
    pending = list(jobs)
    while pending or running:
        while pending and len(running) < concurrency:
            name, argv = pending.pop(0)
            gpu = gpus[started % len(gpus)]
            started += 1
            env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else {}))
            log = open(log_dir / f"{name}.log", "w")
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
            print(f"started {name} on {'GPU ' + gpu if gpu is not None else 'the CPU'}", flush=True)
            running.append((name, process, log, time.perf_counter()))
        time.sleep(1)
        for job in [job for job in running if job[1].poll() is not None]:
            name, process, log, start = job
            running.remove(job)
            log.close()
            ok = process.returncode == 0
            print(f"{name}: {'done' if ok else f'FAILED ({process.returncode}), see {log.name}'} "
                  f"in {time.perf_counter() - start:.0f} s", flush=True)
            if not ok:
                failed.append(name)
    return failed


def train_command(arch: str, seed: int, args: argparse.Namespace, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "mta", "train", "--preset", f"{args.size}-{arch}", "--data", args.data,
            "--out", str(out), "--set", f"seed={seed}", "--no-progress", *extra]


def extension_settings(run_dir: Path, factor: int) -> list[str]:
    """--set arguments that multiply the context of the run in `run_dir` by `factor` (θ by factor²)."""
    config = json.loads((run_dir / "train_config.json").read_text())
    model, seq_len = config["model"], config["train"]["seq_len"]
    return [f"model.max_seq_len={model['max_seq_len'] * factor}", f"seq_len={seq_len * factor}",
            f"model.rope_theta={model['rope_theta'] * factor * factor}"]


def base_model_settings(train_extra: list[str]) -> list[str]:
    """The `--set model.*` values of the base runs, which an extension run must repeat (its model is theirs)."""
    pairs = zip(train_extra, train_extra[1:])
    return [value for flag, value in pairs if flag == "--set" and value.startswith("model.")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a corpus written by `mta data prepare`")
    parser.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--size", default="small", help="preset size: the runs use <size>-<arch> (default small)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="runs at once (default: all of them on GPUs, 1 on the CPU)")
    parser.add_argument("--eval-batch-size", type=int, default=16, help="`mta eval ppl` batch (default 16)")
    parser.add_argument("--extend", type=int, default=None, metavar="F",
                        help="also fine-tune each architecture's first-seed run at F× its context")
    parser.add_argument("--extend-set", action="append", default=[], metavar="KEY=VALUE",
                        help="`mta train --set` of the extension runs (repeatable)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs") / "lm-small", help="run directories")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory (default results/lm)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: more `mta train` flags for every run")
    args = parser.parse_args(argv)
    train_extra = [a for a in args.train_args if a != "--"]
    if args.extend is not None and args.extend < 2:
        parser.error(f"--extend: got {args.extend}, expected an integer >= 2")
    logs = args.work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    concurrency = args.concurrency or (len(args.archs) * len(args.seeds) if visible_gpus()[0] is not None else 1)

    runs = [(arch, seed) for arch in args.archs for seed in args.seeds]
    names = {run: f"{run[0]}-s{run[1]}" for run in runs}
    start = time.perf_counter()
    failed = run_all([(names[run], train_command(*run, args, args.work_dir / names[run], train_extra))
                      for run in runs], concurrency, logs)
    train_s = time.perf_counter() - start
    done = [run for run in runs if names[run] not in failed]
    evals = [(f"{names[run]}.ppl", [sys.executable, "-m", "mta", "eval", "ppl", "--checkpoint",
                                    str(args.work_dir / names[run]), "--data", args.data, "--batch-size",
                                    str(args.eval_batch_size), "--no-progress",
                                    "--out", str(args.work_dir / f"{names[run]}.ppl.json")]) for run in done]
    failed += run_all(evals, concurrency, logs)
    for run in done:
        name, run_dir = names[run], args.work_dir / names[run]
        if f"{name}.ppl" in failed:
            continue
        config = json.loads((run_dir / "train_config.json").read_text())
        report = json.loads((args.work_dir / f"{name}.ppl.json").read_text())
        result = {"arch": run[0], "seed": run[1], "config": config, "ppl": report, "train_s": train_s}
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        shutil.copyfile(run_dir / "metrics.jsonl", args.out / f"{name}.metrics.jsonl")

    if args.extend is not None:
        first = [(arch, args.seeds[0]) for arch in args.archs if (arch, args.seeds[0]) in done]
        jobs = []
        for run in first:
            base = args.work_dir / names[run]
            settings = base_model_settings(train_extra) + extension_settings(base, args.extend) + args.extend_set
            command = train_command(*run, args, args.work_dir / f"{names[run]}-x{args.extend}", ["--init-from",
                                    str(base)] + [a for s in settings for a in ("--set", s)])
            jobs.append((f"{names[run]}-x{args.extend}", command))
        failed += run_all(jobs, concurrency, logs)
    print(f"results in {args.out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
