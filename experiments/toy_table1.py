"""Reproduce the paper's Table 1 (toy task): both architectures × N ∈ {5, 8} × {all, first, last} × 3 seeds.

Every run has the paper's model and protocol (docs/spec.md §5), with early stopping once the held-out error has been 0
at three consecutive evaluations. The runs of one architecture train together as one stack (`mta toy sweep`,
mta.train.toy_stack: one process, every kernel shared); each architecture's runs are split into as many stacks
as there are GPUs per architecture, and the stacks are spread over the visible GPUs. `--max-minutes` caps the
wall time: at the cap every run still going is evaluated, saved and stopped (`stopped: "time_limit"`, with the
steps it reached).

For each run, results/toy/<arch>-N<n>-<variant>-s<seed>.json holds result.json (errors, steps, device, versions,
commit) plus its evaluation curve. Checkpoints stay in the scratch directory (--work-dir), not in the repository.

    python experiments/toy_table1.py --max-minutes 8                         # all 36 runs
    python experiments/toy_table1.py --archs mta --n-blocks 5 --seeds 42     # a subset
    python experiments/toy_table1.py --max-minutes 8 -- --eval-every 500     # more `mta toy sweep` flags

In batches over several sessions: `--skip-done` leaves out the runs already finished in --out (solved, or at
--steps; a run cut by the time cap is run again, from the start), and `--lone` gives every run its own process
(`mta toy train`, one model, no stack) so that each can finish on its own, e.g.

    python experiments/toy_table1.py --skip-done --lone --limit 1 --max-minutes 8.5 -- --compile reduce-overhead

runs the first unfinished run of the table (Transformer N=5 "all" seed 42 first), alone, for at most 8.5 minutes.
`--lone --limit K` runs K of them at once; `--in-turn` runs them one after another instead, each alone on the GPU,
with --max-minutes as the budget of the whole batch (each run is capped at what is left of it, and none starts
with less than --min-run-minutes left). On an H200, runs at once gain nothing over runs in turn (three MTA runs
took 24 ms a step each, one alone 7.4 ms), and in turn the early finishers leave their time to the next:

    python experiments/toy_table1.py --skip-done --in-turn --archs mta --max-minutes 8.5 -- --compile reduce-overhead

A lone run cut by the time cap leaves its training state in --work-dir, and the next lone run of the same setting
goes on from it (`mta toy train --resume`: the same steps, batches and dropout masks as one uninterrupted run, on a
CPU; with CUDA graphs the dropout masks after a resume may differ), and such runs go first, so that a batch in turn
leaves at most one state (about 41 MB) to carry. Where the work directory does not outlive the
machine (one device call each), `--state-to DIR` packs those states into DIR as state.tar.partNN pieces of at most
15 MiB at the end, and `--state-from DIR` unpacks such pieces into --work-dir first:

    python experiments/toy_table1.py --skip-done --in-turn --archs mta --n-blocks 8 --max-minutes 8.5 \
        --state-from .toy_state --state-to $OUT/state -- --compile reduce-overhead
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "results" / "toy"
sys.path.insert(0, str(ROOT / "src"))

from mta.cli.toy import sweep_run_name  # noqa: E402
from mta.train.checkpoint_state import latest_checkpoint  # noqa: E402

# Seconds a sweep may take past --max-minutes for its final evaluations and checkpoints before it is killed.
GRACE_S = 180
STATE_PIECE_BYTES = 15 << 20  # --state-to: under a 16 MiB limit per file


def stacks(settings: list[tuple], archs: list[str], gpus: int, lone: bool = False) -> list[list[tuple]]:
    """Split (arch, n_block, variant, seed) settings into stacks of one architecture each: every architecture
    gets max(1, gpus // len(archs)) stacks of about equal size, or with `lone` every run a stack of its own."""
    if lone:
        return [[setting] for setting in settings]
    per_arch = max(1, gpus // len(archs))
    groups = []
    for arch in archs:
        runs = [s for s in settings if s[0] == arch]
        groups += [runs[i::per_arch] for i in range(per_arch) if runs[i::per_arch]]
    return groups


def launch(stack: list[tuple], gpu: int | None, index: int, args, max_minutes: float | None) -> subprocess.Popen:
    """Start `mta toy sweep` for one stack (its runs must form a grid of N × variant × seed), or with --lone
    `mta toy train` for its one run (the trainer of one model, without vmap: what `toy_stack_speed.py --lone` times),
    capped at `max_minutes` of wall time (None: no cap)."""
    arch = stack[0][0]
    values = [list(dict.fromkeys(s[i] for s in stack)) for i in (1, 2, 3)]
    if len(stack) != len(values[0]) * len(values[1]) * len(values[2]):
        raise ValueError(f"stack {index}: its runs are not a grid of N × variant × seed: {stack}")
    if args.lone:
        command = ["train", "--resume-or-start", "--out", str(args.work_dir / sweep_run_name(*stack[0]))]
    else:
        command = ["sweep", "--out", str(args.work_dir)]
    command = [sys.executable, "-m", "mta", "toy", *command, "--arch", arch,
               "--n-block", *map(str, values[0]), "--variant", *values[1], "--seed", *map(str, values[2]),
               "--n-query", str(args.n_query), "--steps", str(args.steps), "--no-progress", *args.extra]
    if max_minutes is not None:
        command += ["--max-minutes", f"{max_minutes:.3f}"]
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    log = open(args.work_dir / f"sweep-{index}-{arch}.log", "w")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def finished(name: str, out_dir: Path, steps: int) -> bool:
    """Whether out_dir/<name>.json holds a run that ended by the protocol: solved, or at a step limit of at least
    `steps` (not cut by a time cap, an interruption or a smaller --steps)."""
    path = out_dir / f"{name}.json"
    if not path.exists():
        return False
    result = json.loads(path.read_text())
    return result["stopped"] == "solved" or (result["stopped"] == "max_steps" and result["train_config"]["steps"] >= steps)


def has_state(work_dir: Path, name: str) -> bool:
    """Whether run `name` left a training state in `work_dir` (a time cap or Ctrl-C cut it)."""
    return latest_checkpoint(work_dir / name) is not None


def resumable_first(settings: list[tuple], work_dir: Path) -> list[tuple]:
    """`settings` with the runs that have a training state in `work_dir` first, each group in table order: a run
    in hand is finished before new ones start, so that a batch in turn leaves at most one state to carry."""
    return sorted(settings, key=lambda s: not has_state(work_dir, sweep_run_name(*s)))


def pack_states(work_dir: Path, names: list[str], state_dir: Path) -> list[Path]:
    """Write the training states (checkpoints/ and metrics.jsonl) of the runs `names` that have one in `work_dir`
    as one tar archive cut into state_dir/state.tar.partNN pieces of at most STATE_PIECE_BYTES; return them."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in names:
            if has_state(work_dir, name):
                archive.add(work_dir / name / "checkpoints", arcname=f"{name}/checkpoints")
                archive.add(work_dir / name / "metrics.jsonl", arcname=f"{name}/metrics.jsonl")
    data = buffer.getvalue()
    state_dir.mkdir(parents=True, exist_ok=True)
    pieces = []
    for index, start in enumerate(range(0, len(data), STATE_PIECE_BYTES)):
        pieces.append(state_dir / f"state.tar.part{index:02d}")
        pieces[-1].write_bytes(data[start:start + STATE_PIECE_BYTES])
    return pieces


def unpack_states(state_dir: Path, work_dir: Path) -> list[str]:
    """Unpack the pieces `pack_states` wrote into `state_dir` (none: nothing) into `work_dir`; return the runs."""
    pieces = sorted(state_dir.glob("state.tar.part*"))
    if not pieces:
        return []
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in pieces)), mode="r") as archive:
        archive.extractall(work_dir, filter="data")
        return sorted({member.name.split("/")[0] for member in archive.getmembers()})


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["transformer", "mta"])
    parser.add_argument("--n-blocks", type=int, nargs="+", default=[5, 8])
    parser.add_argument("--variants", nargs="+", default=["all", "first", "last"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--n-query", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-time cap of every stack")
    parser.add_argument("--gpus", type=int, default=None, help="GPUs to spread stacks over (default: all visible)")
    parser.add_argument("--lone", action="store_true",
                        help="every run its own process (`mta toy train`), all at once, round-robin over the GPUs")
    parser.add_argument("--in-turn", action="store_true",
                        help="every run its own process, one after another (each alone on the GPU); --max-minutes "
                             "is then the whole batch's budget and caps each run at the time left")
    parser.add_argument("--min-run-minutes", type=float, default=1.0,
                        help="with --in-turn: start no run with less than this many minutes of the budget left")
    parser.add_argument("--skip-done", action="store_true",
                        help="leave out the runs whose results file in --out shows them solved or at --steps or more")
    parser.add_argument("--limit", type=int, default=None,
                        help="run at most this many of the selected runs (after --skip-done), in table order")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/mta-toy-table1"))
    parser.add_argument("--state-from", type=Path, default=None,
                        help="unpack the training states an earlier --state-to packed into this directory first")
    parser.add_argument("--state-to", type=Path, default=None,
                        help="at the end, pack the training states of lone runs cut by the time cap into this "
                             "directory (state.tar.partNN, at most 15 MiB each)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more `mta toy sweep` flags")
    args = parser.parse_args()
    args.extra = [a for a in args.extra if a != "--"]
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit: got {args.limit}, expected a positive integer")
    if args.min_run_minutes < 0:
        parser.error(f"--min-run-minutes: got {args.min_run_minutes}, expected a number >= 0")
    args.lone = args.lone or args.in_turn
    if args.gpus is None:
        import torch

        args.gpus = torch.cuda.device_count()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.state_from is not None:
        print(f"--state-from: training states of {unpack_states(args.state_from, args.work_dir) or 'no runs'}",
              flush=True)

    settings = list(itertools.product(args.archs, args.n_blocks, args.variants, args.seeds))
    if args.skip_done:
        done = [s for s in settings if finished(sweep_run_name(*s), args.out, args.steps)]
        settings = [s for s in settings if s not in done]
        print(f"--skip-done: {len(done)} runs already finished in {args.out}", flush=True)
        if not settings:
            return
    if args.lone:
        settings = resumable_first(settings, args.work_dir)
    settings = settings[: args.limit]
    start = time.time()
    if args.in_turn:
        run_in_turn(settings, args, start)
    else:
        groups = stacks(settings, sorted({s[0] for s in settings}, key=args.archs.index), args.gpus, args.lone)
        processes = [launch(group, index % args.gpus if args.gpus else None, index, args, args.max_minutes)
                     for index, group in enumerate(groups)]
        print(f"launched {len(settings)} runs in {len(groups)} stacks over {args.gpus or 'no'} GPU(s)", flush=True)
        for process in processes:
            wait(process, None if args.max_minutes is None else start + 60 * args.max_minutes + GRACE_S)
        for setting in settings:
            report(setting, args, start)
    if args.state_to is not None:
        pieces = pack_states(args.work_dir, [sweep_run_name(*s) for s in settings], args.state_to)
        print(f"--state-to: {len(pieces)} pieces in {args.state_to}", flush=True)


def run_in_turn(settings: list[tuple], args, start: float) -> None:
    """Train the runs one after another, each alone in its process on the first GPU, each capped at what is left
    of --max-minutes, and collect each as it ends; stop starting runs when less than --min-run-minutes is left."""
    for index, setting in enumerate(settings):
        left = None if args.max_minutes is None else args.max_minutes - (time.time() - start) / 60
        if left is not None and left < args.min_run_minutes:
            print(f"{len(settings) - index} runs not started: {left:.1f} minutes of --max-minutes left, under "
                  f"--min-run-minutes {args.min_run_minutes}", flush=True)
            return
        print(f"run {index + 1}/{len(settings)}: {sweep_run_name(*setting)}", flush=True)
        process = launch([setting], 0 if args.gpus else None, index, args, left)
        wait(process, None if left is None else time.time() + 60 * left + GRACE_S)
        report(setting, args, start)


def wait(process: subprocess.Popen, deadline: float | None) -> None:
    """Wait for `process` until `deadline` (time.time() seconds; None: no limit), then kill it."""
    try:
        process.wait(timeout=None if deadline is None else max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        process.kill()


def report(setting: tuple, args, start: float) -> None:
    """Collect one run's results into --out and print how it ended."""
    name = sweep_run_name(*setting)
    result = collect(name, args.work_dir / name, args.out)
    summary = (f"{result['stopped']} at step {result['steps']}, final error {result['final_sequence_error_pct']}%"
               if result else f"no result; see the sweep logs in {args.work_dir}")
    print(f"[{time.time() - start:6.0f} s] {name}: {summary}", flush=True)


if __name__ == "__main__":
    main()
