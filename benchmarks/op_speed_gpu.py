"""Speed and memory of `mta_attention` on one GPU against SDPA (issue 4): forward, backward, forward+backward time
and peak memory.

bf16 q/k/v, causal, H = 16, d = 128 and 64, B·N = 16k tokens (B = 16384 // N, at least 1), N = 1k … 32k, plus
N = 64k and 128k (B = 1) for configurations A and B. Kernels 6×11; every kernel and mixer is identity +
0.05·randn in float32, beside the bf16 q/k/v, as mixed-precision training passes them:

    A  pre-softmax q–k conv only
    B  pre+post convs, pre+post head mixing in groups of 2 (mixers [8, 2, 2])
    C  pre+post convs, full 16-head pre+post mixing (mixers [1, 16, 16]): the paper's MTA layer
    D  full pre+post mixing, no conv (talking heads)

Methods: "sdpa" (SDPA's default backend, whose kernel is read from the profiler and recorded), "sdpa_cudnn" and
"sdpa_flash" (pinned with torch.nn.attention.sdpa_kernel; CUDA only), and the op's "triton", "reference" and
"chunked" backends. SDPA computes plain causal attention, so it is measured once per (d, N), with config null.
Skipped with a recorded reason: reference when its ~12 fp32 [B, H, N, N] maps exceed 100 GiB, chunked beyond
N = 8k, both beyond N = 32k. A CUDA out-of-memory is recorded as "oom", any other failure as "error".

Each measurement: one warm-up iteration (autotuning, cuDNN plans), then forward+backward iterations timed with CUDA
events (perf_counter on a CPU) until --repeats samples or 2 s of samples; an iteration over 2 s is recorded alone.
Times are medians. Peak memory is the first timed iteration's torch.cuda.max_memory_allocated above what was
allocated before it (inputs, parameters and output gradient); null on a CPU. TFLOP/s (triton and SDPA) counts
plain causal attention, the FlashAttention convention: forward 4·B·H·N²·d/2, backward 2.5×, total 3.5×; the
results pages also show each configuration's TFLOP/s of its own work, that count times `work_factor`.

Measurements run most important first (N = 8k, d = 128: the issue's time targets; N = 16k, d = 128: its memory
targets; the rest of d = 128; d = 64; N > 32k; chunked last) and the JSON is rewritten after each one, so a run
stopped by --time-budget-s or killed keeps what it measured, and --resume measures only what is missing.

    python benchmarks/op_speed_gpu.py --time-budget-s 420             # → results/perf/op_speed_gpu.json
    python benchmarks/op_speed_gpu.py --resume --time-budget-s 420    # a later session: the rest
    python benchmarks/op_speed_gpu.py --device cpu --quick --out /tmp/op_speed.json   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import statistics
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mta.ops import available_backends, mta_attention
from profiling import first_line, kept_rows, synchronize, write_json_atomic
from mta.train.runtime import resolve_device

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "perf" / "op_speed_gpu.json"
HEADS = 16
CONV = (6, 11)
NOISE = 0.05
# config: (kernels, mixing groups or None); mixing is always applied before and after softmax.
CONFIGS = {
    "A": (("kernel_pre",), None),
    "B": (("kernel_pre", "kernel_post"), 8),
    "C": (("kernel_pre", "kernel_post"), 1),
    "D": ((), 1),
}
SDPA_METHODS = {"sdpa": None, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION, "sdpa_flash": SDPBackend.FLASH_ATTENTION}
METHODS = (*SDPA_METHODS, "triton", "reference", "chunked")
LONG_N = 32768  # beyond it: configs A and B, triton and SDPA only
LONG_CONFIGS = ("A", "B")
REFERENCE_MAPS, REFERENCE_LIMIT_GIB = 12, 130  # a conservative estimate: C took 72 GiB at 8k, B = 2; the H200 has 139
CHUNKED_MAX_N = 8192
GUARD_S = 2.0
FULL = {"lengths": [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072], "head_dims": [128, 64],
        "tokens": 16384, "repeats": 10}
QUICK = {"lengths": [32, 64], "head_dims": [8], "tokens": 64, "repeats": 2}
SDPA_OP_PREFIX = "aten::_scaled_dot_product_"


class Measurement(NamedTuple):
    config: str | None  # None for SDPA: plain attention
    head_dim: int
    seq_len: int
    batch: int
    method: str


def planned(configs: list[str], methods: list[str], lengths: list[int], head_dims: list[int],
            tokens: int) -> list[Measurement]:
    """Every measurement of the grid, most important first (see `priority`)."""
    plan = []
    for head_dim in head_dims:
        for seq_len in lengths:
            batch = max(1, tokens // seq_len)
            for method in methods:
                if method in SDPA_METHODS:
                    plan.append(Measurement(None, head_dim, seq_len, batch, method))
                    continue
                plan += [Measurement(config, head_dim, seq_len, batch, method) for config in configs
                         if seq_len <= LONG_N or config in LONG_CONFIGS]
    return sorted(plan, key=priority)


def priority(m: Measurement) -> tuple:
    """N = 8k d = 128 (time targets), N = 16k d = 128 (memory targets), other d = 128, d = 64, N > 32k, chunked."""
    if m.method == "chunked":
        tier = 5
    elif m.seq_len > LONG_N:
        tier = 4
    elif m.head_dim == 128:
        tier = {8192: 0, 16384: 1}.get(m.seq_len, 2)
    else:
        tier = 3
    return tier, m.head_dim != 128, m.seq_len, m.config or "", METHODS.index(m.method)


def skip_reason(m: Measurement, device: torch.device) -> str | None:
    """Why `m` is not measured on `device`, or None."""
    if SDPA_METHODS.get(m.method) is not None and device.type != "cuda":
        return "pinned SDPA backends are measured on CUDA only"
    if m.method == "triton" and "triton" not in available_backends(device):
        return f"triton cannot run on {device.type}"
    if m.method in ("reference", "chunked") and m.seq_len > LONG_N:
        return "beyond N = 32k only triton and SDPA are measured"
    if m.method == "reference":
        gib = REFERENCE_MAPS * m.batch * HEADS * m.seq_len**2 * 4 / 2**30
        if gib > REFERENCE_LIMIT_GIB:
            return f"needs about {gib:.0f} GiB ({REFERENCE_MAPS} fp32 B×H×N×N maps), over {REFERENCE_LIMIT_GIB} GiB"
    if m.method == "chunked" and m.seq_len > CHUNKED_MAX_N:
        return "chunked is too slow beyond N = 8k"
    return None


def mta_parameters(config: str | None, device: torch.device) -> dict[str, torch.Tensor]:
    """The kernels and mixers of `config`: identity + 0.05·randn, float32, requiring grad (none for SDPA)."""
    if config is None:
        return {}
    kernels, groups = CONFIGS[config]
    params = {}
    for name in kernels:
        identity = torch.zeros(HEADS, *CONV)
        identity[:, CONV[0] - 1, CONV[1] // 2] = 1.0  # current query, same key
        params[name] = identity
    if groups is not None:
        size = HEADS // groups
        for name in ("head_mix_pre", "head_mix_post"):
            params[name] = torch.eye(size).expand(groups, size, size)
    return {name: (p + NOISE * torch.randn(p.shape)).to(device).requires_grad_() for name, p in params.items()}


def mark(device: torch.device) -> torch.cuda.Event | float:
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def elapsed_ms(start: torch.cuda.Event | float, end: torch.cuda.Event | float) -> float:
    return (end - start) * 1e3 if isinstance(start, float) else start.elapsed_time(end)


def iteration(run, leaves: list[torch.Tensor], grad_out: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """One forward and backward from cleared gradients: (forward ms, backward ms)."""
    for tensor in leaves:
        tensor.grad = None
    start = mark(device)
    out = run()
    middle = mark(device)
    out.backward(grad_out)
    end = mark(device)
    synchronize(device)
    return elapsed_ms(start, middle), elapsed_ms(middle, end)


def sdpa_backend_name(run) -> str:
    """The SDPA kernel `run` calls, from the profiler's operator names, e.g. 'cudnn_attention'."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        run()
    names = {e.key.removeprefix(SDPA_OP_PREFIX) for e in profile.key_averages() if e.key.startswith(SDPA_OP_PREFIX)}
    return "+".join(sorted(names)) or "unknown"


def work_factor(config: str, head_dim: int) -> float:
    """The configuration's own work in units of plain causal attention of the same shape: the FLOPs an exact fused
    kernel needs (docs/design.md, the kernel algebra (e)). Forward, in units of one QK product: QK over c_q·d
    columns with a pre-softmax conv (twice when a post-softmax option needs each row's final normaliser first:
    mixing groups wider than 2 heads), P·V over c_q rows with a post-softmax conv, and g/d per mixing step of a
    group of g heads; over plain attention's 2 units (QK and PV). The backward is taken to scale alike."""
    kernels, groups = CONFIGS[config]
    group = 0 if groups is None else HEADS // groups
    mix = group / head_dim if groups is not None else 0.0  # one g×g mix per score: 2g FLOPs against QK's 2d
    passes = 2 if group > 2 else 1
    qk = CONV[0] if "kernel_pre" in kernels else 1
    pv = CONV[0] if "kernel_post" in kernels else 1
    return (passes * (qk + mix) + pv + mix) / 2


def plain_attention_tflops(m: Measurement, forward_ms: float, backward_ms: float, total_ms: float) -> dict:
    """TFLOP/s of plain causal attention of this shape (FlashAttention's count: forward 4·B·H·N²·d/2)."""
    forward = 4 * m.batch * HEADS * m.seq_len**2 * m.head_dim / 2
    return {"forward": forward / forward_ms / 1e9, "backward": 2.5 * forward / backward_ms / 1e9,
            "total": 3.5 * forward / total_ms / 1e9}


def time_and_memory(m: Measurement, repeats: int, device: torch.device) -> dict:
    """Times (medians), peak memory and, for SDPA, the kernel used; see the module docstring."""
    torch.manual_seed(0)
    shape = (m.batch, HEADS, m.seq_len, m.head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    params = mta_parameters(m.config, device)
    leaves, grad_out = [q, k, v, *params.values()], torch.randn_like(q)
    backend = "auto" if m.method in SDPA_METHODS else m.method  # auto with no MTA option is SDPA

    def run() -> torch.Tensor:
        return mta_attention(q, k, v, **params, backend=backend)

    pinned = SDPA_METHODS.get(m.method)
    with sdpa_kernel(pinned) if pinned is not None else contextlib.nullcontext():
        iteration(run, leaves, grad_out, device)  # warm-up
        for tensor in leaves:
            tensor.grad = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        samples = [iteration(run, leaves, grad_out, device)]
        peak_mib = (torch.cuda.max_memory_allocated(device) - before) / 2**20 if device.type == "cuda" else None
        while len(samples) < repeats and sum(map(sum, samples)) < GUARD_S * 1e3:
            samples.append(iteration(run, leaves, grad_out, device))
        kernel = sdpa_backend_name(run) if m.method in SDPA_METHODS else None

    forward_ms = statistics.median(f for f, _ in samples)
    backward_ms = statistics.median(b for _, b in samples)
    total_ms = statistics.median(f + b for f, b in samples)
    result = {"status": "ok", "forward_ms": forward_ms, "backward_ms": backward_ms, "total_ms": total_ms,
              "samples": len(samples), "peak_mib": peak_mib,
              "tflops": plain_attention_tflops(m, forward_ms, backward_ms, total_ms)
              if m.method in (*SDPA_METHODS, "triton") else None}
    if kernel is not None:
        result["sdpa_backend"] = kernel
    return result


def measure(m: Measurement, repeats: int, device: torch.device) -> dict:
    """One results row for `m`: measured, or "oom" / "error" with the reason; device memory freed afterwards."""
    row = m._asdict()
    started = time.monotonic()
    try:
        row.update(time_and_memory(m, repeats, device))
    except torch.cuda.OutOfMemoryError as error:
        row.update(status="oom", reason=first_line(error))
    except Exception as error:  # one failing measurement must not cost the rest of a GPU session
        traceback.print_exc()
        row.update(status="error", reason=f"{type(error).__name__}: {first_line(error)}")
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    row["wall_s"] = round(time.monotonic() - started, 2)
    return row


def write_results(path: Path, results: dict) -> None:
    """Write atomically, so that a run killed mid-write leaves the previous complete file."""
    results["sdpa_default_backend"] = ", ".join(sorted({row["sdpa_backend"] for row in results["rows"]
                                                        if row["method"] == "sdpa" and "sdpa_backend" in row}))
    write_json_atomic(path, results)


def row_key(row: dict) -> tuple:
    return row["config"], row["head_dim"], row["seq_len"], row["batch"], row["method"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--quick", action="store_true", help=f"tiny smoke run: {QUICK}")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--lengths", type=int, nargs="+", help=f"default {FULL['lengths']}")
    parser.add_argument("--head-dims", type=int, nargs="+", help=f"default {FULL['head_dims']}")
    parser.add_argument("--tokens", type=int, help=f"B·N per measurement (B at least 1), default {FULL['tokens']}")
    parser.add_argument("--repeats", type=int,
                        help=f"timed iterations (fewer past {GUARD_S} s of samples), default {FULL['repeats']}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--time-budget-s", type=float, default=math.inf,
                        help="start no measurement after this many seconds (default: no limit)")
    parser.add_argument("--resume", action="store_true", help="keep --out's rows (except errors); measure the rest")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> None:
    from mta.provenance import run_metadata

    args = parse_args(argv)
    device = resolve_device(args.device or "auto")
    rows = []
    if args.resume and args.out.exists():
        rows = kept_rows(json.loads(args.out.read_text())["rows"])
    done = {row_key(row) for row in rows}
    settings = {"device": str(device), "dtype": "bfloat16", "parameter_dtype": "float32", "heads": HEADS,
                "tokens": args.tokens, "conv": list(CONV), "init": f"identity + {NOISE}·randn",
                "repeats": args.repeats, "guard_s": GUARD_S}
    results = {"meta": run_metadata(), "settings": settings, "rows": rows, "not_started": 0}
    started = time.monotonic()
    for m in planned(args.configs, args.methods, args.lengths, args.head_dims, args.tokens):
        if row_key(m._asdict()) in done:
            continue
        reason = skip_reason(m, device)
        if reason is None and time.monotonic() - started > args.time_budget_s:
            results["not_started"] += 1
            continue
        row = {**m._asdict(), "status": "skipped", "reason": reason} if reason else measure(m, args.repeats, device)
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_results(args.out, results)
    write_results(args.out, results)
    print(f"wrote {args.out} ({len(rows)} rows, {results['not_started']} measurements not started: time budget)")


if __name__ == "__main__":
    main()
