"""Where the triton backend's time goes, on one GPU (issue 4): a kernel-level profile of configurations A, B and D
(or those of --configs), and a sweep of the banded kernel's tile sizes at their operand widths (unless --no-sweep).

1. Profile: one forward+backward of `mta_attention(backend="triton")` per configuration (op_speed_gpu.py's
   definitions; bf16, H = 16, d = 128 and N = 8k unless --head-dim / --seq-len say otherwise, B·N = 16k tokens)
   under torch.profiler, after a warm-up; the GPU kernels ranked by their total time, with call counts.
2. Tile sweep (at d = 128, N = 8k, B = 2 always): `banded_flash_attention` alone, on random operands of
   configuration A's widths (Dqk = 6·d, Dv = d, a 10-wide band of scores: the fused-output forward) and B's
   (Dqk = Dv = 2·6·d: the forward through probability blocks), forward and backward timed separately (median of
   CUDA-event samples) for each candidate BlockConfig and, for the best backward tiles, each probability-block
   size.

    python benchmarks/triton_profile.py --time-budget-s 400    # → results/perf/triton_profile.json
    python benchmarks/triton_profile.py --configs C D --no-sweep --seq-len 2048 --head-dim 96   # the 880M layers
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from pathlib import Path

import torch

from mta.ops import mta_attention
from profiling import fresh_cuda_state, write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "perf" / "triton_profile.json"
HEADS, HEAD_DIM, SEQ_LEN, BATCH = 16, 128, 8192, 2  # the sweep's shape and the profiles' default
TOKENS = SEQ_LEN * BATCH  # the profiles' B·N at any --seq-len
TAPS, BAND = 6, 10  # the 6×11 pre-softmax conv: 6 query taps, a band of 5 + 5 diagonals
TOP_KERNELS = 25
# (block_m, block_n, block_d, block_dv, num_warps, num_stages)
CANDIDATES = [
    (128, 64, 64, 128, 8, 3), (128, 128, 64, 128, 8, 3), (128, 64, 128, 128, 8, 2), (128, 128, 128, 128, 8, 2),
    (64, 64, 128, 128, 4, 3), (128, 64, 64, 128, 8, 4), (64, 128, 64, 128, 4, 3), (128, 64, 64, 64, 8, 3),
    (64, 64, 64, 64, 4, 3), (128, 128, 64, 64, 8, 3), (64, 128, 64, 64, 4, 3), (256, 64, 64, 64, 8, 3),
    (128, 128, 128, 64, 8, 2), (128, 64, 128, 64, 8, 3),
]
BUFFER_BLOCKS = (256, 512, 1024, 2048)
WIDTHS = {"A": dict(dqk=TAPS * HEAD_DIM, dv=HEAD_DIM, taps=TAPS, group=1),
          "B": dict(dqk=2 * TAPS * HEAD_DIM, dv=2 * TAPS * HEAD_DIM, taps=TAPS, group=2)}


def profile_config(config: str, shape: tuple[int, int, int, int], device: torch.device) -> dict:
    """Top GPU kernels of one forward+backward of `config` (op_speed_gpu.CONFIGS) through the triton backend, on
    q, k, v of `shape` [B, H, N, d]."""
    from op_speed_gpu import mta_parameters

    torch.manual_seed(0)
    q, k, v = (torch.randn(shape, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    params = mta_parameters(config, device)
    grad = torch.randn_like(q)

    def step():
        mta_attention(q, k, v, **params, backend="triton").backward(grad)

    step()
    torch.cuda.synchronize(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        step()
        torch.cuda.synchronize(device)
    events = [e for e in profile.key_averages() if e.device_time_total > 0]
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    total_ms = sum(e.device_time_total for e in events) / 1e3
    return {"config": config, "gpu_ms": total_ms, "kernels": [
        {"name": e.key[:160], "calls": e.count, "ms": e.device_time_total / 1e3} for e in events[:TOP_KERNELS]]}


def operands(widths: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    base = (BATCH, HEADS, SEQ_LEN)
    q = torch.randn(*base, HEAD_DIM, device=device, dtype=torch.bfloat16) * HEAD_DIM**-0.25
    kw = torch.randn(*base, widths["dqk"], device=device, dtype=torch.bfloat16) * widths["dqk"] ** -0.25
    vw = torch.randn(*base, widths["dv"], device=device, dtype=torch.bfloat16)
    band = torch.randn(*base, BAND, device=device)
    return tuple(x.requires_grad_() for x in (q, kw, vw, band))


def time_banded(widths: dict, config, device: torch.device, repeats: int = 5) -> dict:
    """Median forward and backward ms and peak MiB of `banded_flash_attention` with `config` (None: autotuned)."""
    from mta.ops.triton.function import banded_flash_attention

    q, kw, vw, band = operands(widths, device)
    grad = torch.randn(*vw.shape, device=device, dtype=vw.dtype)
    forward, backward = [], []
    for index in range(repeats + 1):
        fresh_cuda_state(device)
        events = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        events[0].record()
        out, _ = banded_flash_attention(q, kw, vw, band, config, widths["taps"], widths["group"])
        events[1].record()
        out.backward(grad)
        events[2].record()
        torch.cuda.synchronize(device)
        if index:  # the first call compiles (and autotunes)
            forward.append(events[0].elapsed_time(events[1]))
            backward.append(events[1].elapsed_time(events[2]))
        for x in (q, kw, vw, band):
            x.grad = None
    return {"forward_ms": statistics.median(forward), "backward_ms": statistics.median(backward),
            "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20}


def main() -> None:
    from mta.ops.triton.function import BlockConfig
    from mta.provenance import run_metadata

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--time-budget-s", type=float, default=math.inf, help="start nothing new after this")
    parser.add_argument("--configs", nargs="+", choices=("A", "B", "C", "D"), default=["A", "B", "D"],
                        help="configurations to profile (C and D mix all heads: the map-block path)")
    parser.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                        help="also sweep the banded kernel's tiles")
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN, help=f"N of the profiles (default {SEQ_LEN})")
    parser.add_argument("--head-dim", type=int, default=HEAD_DIM, help=f"d of the profiles (default {HEAD_DIM})")
    args = parser.parse_args()
    if args.seq_len < 1 or args.head_dim < 1:
        parser.error(f"--seq-len and --head-dim: got {args.seq_len} and {args.head_dim}, expected positive integers")
    device = torch.device("cuda")
    batch = max(1, TOKENS // args.seq_len)
    results = {"meta": run_metadata(), "settings": {"heads": HEADS, "head_dim": args.head_dim,
                                                    "seq_len": args.seq_len, "batch": batch, "dtype": "bfloat16"},
               "profiles": [], "sweep": []}
    started = time.monotonic()

    def in_budget() -> bool:
        return time.monotonic() - started < args.time_budget_s

    for config in args.configs:
        results["profiles"].append(profile_config(config, (batch, HEADS, args.seq_len, args.head_dim), device))
        print(results["profiles"][-1], flush=True)
        write_json_atomic(args.out, results)
    for name, widths in WIDTHS.items() if args.sweep else ():
        rows = [("autotuned", None)] + [(list(c), BlockConfig(*c)) for c in CANDIDATES]
        for label, config in rows:
            if not in_budget():
                break
            try:
                row = {"widths": name, "tiles": label, **time_banded(widths, config, device)}
            except Exception as error:  # a tile choice that does not compile or fit is a result too
                row = {"widths": name, "tiles": label, "error": f"{type(error).__name__}: {str(error)[:200]}"}
            results["sweep"].append(row)
            print(row, flush=True)
            write_json_atomic(args.out, results)
        timed = [r for r in results["sweep"] if r["widths"] == name and "error" not in r and r["tiles"] != "autotuned"]
        if not timed or not in_budget():
            continue
        best = min(timed, key=lambda r: r["backward_ms"])["tiles"]
        for block in BUFFER_BLOCKS:
            if not in_budget():
                break
            config = dataclasses.replace(BlockConfig(*best), block=block)
            row = {"widths": name, "tiles": best, "block": block, **time_banded(widths, config, device)}
            results["sweep"].append(row)
            print(row, flush=True)
            write_json_atomic(args.out, results)
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
