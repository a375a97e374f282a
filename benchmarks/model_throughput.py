"""Training throughput and peak memory of the four 880M models on one GPU (issue 5 item 4), beside Table 9 of the
paper.

One training step as the trainer (mta.train.lm) takes it: forward under bf16 autocast, loss, backward, gradient
clipping to norm 1.0, the paper's AdamW (lr 1.5e-4, betas (0.9, 0.98), eps 1e-8, weight decay 0.05 on every
parameter), zero_grad. Random tokens, sequence length 2048 (the presets' max_seq_len), float32 weights and
optimiser state. For each (model, backend) a fresh model in a fresh CUDA state (gc, empty_cache,
reset_peak_memory_stats), --warmup steps (triton autotuning, AdamW state allocation, compilation), then --steps
timed steps, each synchronised and timed alone. tokens/s: batch·N ÷ the median step time. Peak memory:
torch.cuda.max_memory_allocated over the warm-up and timed steps: weights, gradients, AdamW state and activations,
what the paper's per-GPU memory counts (its GB read here as GiB-free ratios: only ratios are compared).

Rows (model, backend, batch):
    transformer    sdpa        the baseline; every ratio is to it at the same batch
    mta            triton      --backend (auto = triton; skipped with the reason where triton cannot run)
    talking_heads  triton      idem
    diff           sdpa        DIFF attention is two SDPA calls; no MTA backend
    transformer    sdpa        again at --reference-batch-size, when it differs from --batch-size
    mta            reference   the materialised PyTorch op, the analogue of the official code (--no-reference: off)
    talking_heads  reference   idem
The reference stores several float32 [B, H, N, N] maps per layer (about 25 GiB per 2048-token sequence for the
880M MTA model), so it runs at --reference-batch-size (default 2) beside a Transformer row of that batch. A CUDA
out-of-memory is recorded as "oom", any other failure as "error". The JSON is rewritten after every row, so a run
stopped by --time-budget-s or killed keeps what it measured.

The paper's Table 9 (880M, official code, per H200 GPU): Transformer 17.5 GB and 54.3k tokens/s, MTA 73.8 GB and
5.7k tokens/s (0.105× tokens/s, 4.2× memory), talking heads 63.0 GB and 14.6k tokens/s; DIFF is not in it.

    python benchmarks/model_throughput.py --time-budget-s 480        # → results/perf/model_throughput.json
    python benchmarks/model_throughput.py --quick --out /tmp/mt.json  # CPU smoke run: tiny-* presets, 2 steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import torch

from mta.models import DecoderLM, get_preset
from mta.ops import available_backends
from profiling import fill_defaults, first_line, fresh_cuda_state, synchronize, total_memory_gib, write_json_atomic
from mta.train.lm_config import LMTrainConfig
from mta.train.runtime import resolve_device

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "perf" / "model_throughput.json"
FAMILIES = ("transformer", "mta", "talking_heads", "diff")
MTA_FAMILIES = ("mta", "talking_heads")  # the families whose attention runs through mta_attention
BASELINE = ("transformer", "sdpa")
# The trainer's optimiser and clipping (mta.train.lm_config.LMTrainConfig defaults: the paper's).
_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(LMTrainConfig)}
OPTIMIZER = {name: _TRAIN_DEFAULTS[name] for name in ("lr", "betas", "eps", "weight_decay")}
GRAD_CLIP = _TRAIN_DEFAULTS["grad_clip"]
# Table 9 of the paper: 880M models, official code, per H200 GPU. DIFF is not in it.
PAPER_TABLE9 = {
    "transformer": {"peak_gb": 17.5, "tokens_per_s": 54_300},
    "mta": {"peak_gb": 73.8, "tokens_per_s": 5_700},
    "talking_heads": {"peak_gb": 63.0, "tokens_per_s": 14_600},
    "diff": None,
}
# The issue's targets for MTA with the triton backend, as ratios to the Transformer at the same batch.
TARGETS = {"tokens_per_s_ratio": ("≥", 0.5), "peak_memory_ratio": ("≤", 1.5)}
FULL = {"size": "880M", "seq_len": 2048, "batch_size": 4, "reference_batch_size": 2, "steps": 5, "warmup": 2}
QUICK = {"size": "tiny", "seq_len": 64, "batch_size": 2, "reference_batch_size": 1, "steps": 2, "warmup": 1}


class Measurement(NamedTuple):
    model: str  # family: transformer, mta, talking_heads, diff
    backend: str  # "sdpa" for transformer and diff, else the mta_attention backend
    batch: int


def planned(models: list[str], backend: str, batch: int, reference: bool, reference_batch: int) -> list[Measurement]:
    """The rows in measurement order: the baseline first, the reference (slow, memory-hungry) rows last."""
    plan = [Measurement(m, backend if m in MTA_FAMILIES else "sdpa", batch) for m in FAMILIES if m in models]
    if reference and any(m in MTA_FAMILIES for m in models) and backend != "reference":
        if reference_batch != batch:
            plan.append(Measurement(*BASELINE, reference_batch))
        plan += [Measurement(m, "reference", reference_batch) for m in MTA_FAMILIES if m in models]
    return plan


def skip_reason(m: Measurement, device: torch.device) -> str | None:
    if m.backend == "triton" and "triton" not in available_backends(device):
        return f"triton cannot run on {device.type}"
    return None


def train_steps(m: Measurement, size: str, seq_len: int, warmup: int, steps: int, compile_blocks: bool,
                device: torch.device) -> dict:
    """Build the model, run warm-up and timed training steps; step times, tokens/s, peak memory and the loss."""
    torch.manual_seed(0)
    overrides = {"backend": m.backend} if m.model in MTA_FAMILIES else {}
    config = get_preset(f"{size}-{m.model}", **overrides)
    if seq_len > config.max_seq_len:
        raise ValueError(f"seq_len {seq_len} exceeds the preset's max_seq_len {config.max_seq_len}")
    with torch.device(device):
        model = DecoderLM(config)
    if compile_blocks:  # as the trainer's compile option: each block
        for block in model.layers:
            block.compile()
    optimizer = torch.optim.AdamW(model.parameters(), **OPTIMIZER)
    amp = torch.bfloat16
    windows = torch.randint(config.vocab_size, (warmup + steps, m.batch, seq_len + 1), device=device)

    def step(window: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp):
            loss = model(window[:, :-1], window[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    for i in range(warmup):
        step(windows[i])
    synchronize(device)
    times, loss = [], None
    for i in range(warmup, warmup + steps):
        start = time.perf_counter()
        loss = step(windows[i])
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    cuda = device.type == "cuda"
    result = {
        "status": "ok",
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_ms": step_s * 1e3,
        "step_ms_all": [round(t * 1e3, 3) for t in times],
        "tokens_per_s": m.batch * seq_len / step_s,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30 if cuda else None,
        "loss": loss.item(),
    }
    del model, optimizer, windows
    return result


def measure(m: Measurement, args: argparse.Namespace, device: torch.device) -> dict:
    """One results row: measured, or "oom" / "error" with the reason; the device memory freed afterwards."""
    row = {**m._asdict(), "preset": f"{args.size}-{m.model}", "seq_len": args.seq_len}
    started = time.monotonic()
    fresh_cuda_state(device)
    if args.compile:
        torch._dynamo.reset()
    try:
        row.update(train_steps(m, args.size, args.seq_len, args.warmup, args.steps, args.compile, device))
    except torch.cuda.OutOfMemoryError as error:
        row.update(status="oom", reason=first_line(error),
                   peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)
    except Exception as error:  # one failing row must not cost the rest of a GPU session
        traceback.print_exc()
        row.update(status="error", reason=f"{type(error).__name__}: {first_line(error)}")
    fresh_cuda_state(device)
    row["wall_s"] = round(time.monotonic() - started, 2)
    return row


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def add_ratios(rows: list[dict]) -> None:
    """tokens_per_s_ratio and peak_memory_ratio of every measured row, to the Transformer at the same batch."""
    baselines = {row["batch"]: row for row in rows if (row["model"], row["backend"]) == BASELINE and row["status"] == "ok"}
    for row in rows:
        base = baselines.get(row["batch"]) if row["status"] == "ok" else None
        row["tokens_per_s_ratio"] = ratio(row.get("tokens_per_s"), base and base["tokens_per_s"])
        row["peak_memory_ratio"] = ratio(row.get("peak_gib"), base and base["peak_gib"])


def paper_ratios() -> dict:
    """Table 9's ratios to its Transformer; None for DIFF (not in the table)."""
    base = PAPER_TABLE9["transformer"]
    return {model: None if paper is None else
            {"tokens_per_s_ratio": paper["tokens_per_s"] / base["tokens_per_s"],
             "peak_memory_ratio": paper["peak_gb"] / base["peak_gb"]}
            for model, paper in PAPER_TABLE9.items()}


def targets(rows: list[dict]) -> dict:
    """The issue's targets for MTA (triton): each {"limit", "ratio", "met"} (met None when not measured)."""
    row = next((r for r in rows if (r["model"], r["backend"]) == ("mta", "triton") and r["status"] == "ok"), {})
    checks = {}
    for field, (sign, limit) in TARGETS.items():
        value = row.get(field)
        met = None if value is None else value >= limit if sign == "≥" else value <= limit
        checks[field] = {"target": f"{sign} {limit:g}×", "ratio": value, "met": met}
    return checks


def write_results(path: Path, results: dict) -> None:
    """Ratios and targets from the rows so far, then an atomic write (a killed run leaves a complete file)."""
    add_ratios(results["rows"])
    results["targets"] = targets(results["rows"])
    write_json_atomic(path, results)


def summary(results: dict) -> str:
    paper = results["paper_ratios"]
    lines = [f"{'model':<14} {'backend':<10} {'B':>2} {'tokens/s':>10} {'×':>7} {'peak GiB':>9} {'×':>7} "
             f"{'paper ×tok/s':>12} {'paper ×mem':>10}"]
    for row in results["rows"]:
        p = paper.get(row["model"]) or {}
        fmt = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
        lines.append(f"{row['model']:<14} {row['backend']:<10} {row['batch']:>2} "
                     + (f"{fmt(row.get('tokens_per_s'), ',.0f'):>10} {fmt(row.get('tokens_per_s_ratio'), '.3f'):>7} "
                        f"{fmt(row.get('peak_gib'), '.2f'):>9} {fmt(row.get('peak_memory_ratio'), '.2f'):>7} "
                        if row["status"] == "ok" else f"{row['status'] + ': ' + (row.get('reason') or '')[:60]:<37} ")
                     + f"{fmt(p.get('tokens_per_s_ratio'), '.3f'):>12} {fmt(p.get('peak_memory_ratio'), '.2f'):>10}")
    for field, check in results["targets"].items():
        status = {None: "not measured", True: "met", False: "missed"}[check["met"]]
        measured = "—" if check["ratio"] is None else f"{check['ratio']:.3f}×"
        lines.append(f"target MTA (triton) {field} {check['target']}: {measured} {status}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--quick", action="store_true", help=f"tiny CPU smoke run: {QUICK}")
    parser.add_argument("--models", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--backend", choices=("auto", "triton", "chunked", "reference"), default="auto",
                        help="mta_attention backend of the MTA and talking-heads rows (auto = triton)")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the reference backend (the official code's analogue)")
    parser.add_argument("--batch-size", type=int, help=f"sequences per step, default {FULL['batch_size']}")
    parser.add_argument("--reference-batch-size", type=int,
                        help=f"sequences per step of the reference rows, default {FULL['reference_batch_size']}")
    parser.add_argument("--seq-len", type=int, help=f"default {FULL['seq_len']}")
    parser.add_argument("--steps", type=int, help=f"timed steps after the warm-up, default {FULL['steps']}")
    parser.add_argument("--warmup", type=int, help=f"untimed steps first, default {FULL['warmup']}")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block, as the trainer's option")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--time-budget-s", type=float, default=math.inf,
                        help="start no measurement after this many seconds (default: no limit)")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    fill_defaults(args, defaults)
    if args.backend == "auto":
        args.backend = "triton"
    if args.quick and args.device is None:
        args.device = "cpu"
    return args


def main(argv: list[str] | None = None) -> dict:
    from mta.provenance import run_metadata

    args = parse_args(argv)
    device = resolve_device(args.device or "auto")
    settings = {"device": str(device), "size": args.size, "seq_len": args.seq_len, "batch_size": args.batch_size,
                "reference_batch_size": args.reference_batch_size, "backend": args.backend, "steps": args.steps,
                "warmup": args.warmup, "compile": args.compile, "autocast": "bfloat16", "weights": "float32",
                "optimizer": {"name": "AdamW", **OPTIMIZER}, "grad_clip": GRAD_CLIP,
                "total_memory_gib": total_memory_gib(device)}
    results = {"meta": run_metadata(), "settings": settings, "paper": PAPER_TABLE9, "paper_ratios": paper_ratios(),
               "rows": [], "not_started": 0}
    started = time.monotonic()
    for m in planned(args.models, args.backend, args.batch_size, args.reference, args.reference_batch_size):
        reason = skip_reason(m, device)
        if reason is None and time.monotonic() - started > args.time_budget_s:
            results["not_started"] += 1
            continue
        row = ({**m._asdict(), "preset": f"{args.size}-{m.model}", "seq_len": args.seq_len, "status": "skipped",
                "reason": reason} if reason else measure(m, args, device))
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
        write_results(args.out, results)
    write_results(args.out, results)
    print(summary(results))
    print(f"wrote {args.out} ({len(results['rows'])} rows, {results['not_started']} not started: time budget)")
    return results


if __name__ == "__main__":
    main()
