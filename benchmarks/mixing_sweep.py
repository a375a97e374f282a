"""Tiles of the fused head-mixing kernels (mta.ops.triton.mixing) on one GPU, against SDPA and the map-block path
they replace for talking heads (configuration D: full 16-head mixing before and after softmax, no convolution).

For each (N, d) and each candidate MixConfig (no autotuning): forward and forward+backward time (median of
triton.testing.do_bench, bf16 q/k/v, float32 mixers = identity + 0.05·noise, B·N = --tokens), beside SDPA's
default backend and `blocked_maps_attention` in the same process; then the per-kernel GPU time of one
forward+backward of the autotuned path (torch.profiler), so the profile sits beside the timings.

    python benchmarks/mixing_sweep.py                       # → results/perf/mixing_sweep.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.profiler import ProfilerActivity, profile

from mta.ops.reference import reference_attention
from mta.ops.triton.blocked import blocked_maps_attention
from mta.ops.triton.mixing import CONFIGS, mixed_heads_attention
from profiling import first_line, write_json_atomic
from mta.provenance import run_metadata

DEFAULT_OUT = Path(__file__).parents[1] / "results" / "perf" / "mixing_sweep.json"
HEADS = 16


def problem(seq_len: int, head_dim: int, tokens: int, generator: torch.Generator):
    batch = max(1, tokens // seq_len)
    q, k, v = (torch.randn(batch, HEADS, seq_len, head_dim, generator=generator).cuda().bfloat16().requires_grad_()
               for _ in range(3))
    mixers = [(torch.eye(HEADS) + 0.05 * torch.randn(HEADS, HEADS, generator=generator)).unsqueeze(0).cuda()
              .requires_grad_() for _ in range(2)]
    d_out = torch.randn_like(q)
    return q, k, v, mixers, d_out


def name(config) -> str:
    c = config
    return f"fused m{c.block_m} n{c.block_n} k{c.block_k} d{c.block_d} w{c.num_warps} s{c.num_stages}"


def timings(fn, inputs, d_out) -> dict:
    """Forward and forward+backward medians in ms."""
    def both():
        torch.autograd.grad(fn(), inputs, d_out)

    with torch.no_grad():
        forward = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")
    return {"forward_ms": forward, "fwd_bwd_ms": triton.testing.do_bench(both, warmup=50, rep=300,
                                                                          return_mode="median")}


def relative_rms(fn, q, k, v, mixers, d_out) -> float:
    """The largest relative RMS error, over the output and every gradient, of fn(q, k, v, *mixers) in bf16 against
    the float32 reference, on the first batch element."""
    def leaves(dtype):
        return [x[:1].detach().to(dtype).requires_grad_() for x in (q, k, v)] + [w.detach().clone().requires_grad_()
                                                                               for w in mixers]

    exact, low = leaves(torch.float32), leaves(torch.bfloat16)
    ref = reference_attention(*exact[:3], head_mix_pre=exact[3], head_mix_post=exact[4],
                              scale=q.shape[-1] ** -0.5, dropout_p=0.0)
    want = [ref, *torch.autograd.grad(ref, exact, d_out[:1].float())]
    out = fn(*low)
    got = [out, *torch.autograd.grad(out, low, d_out[:1])]
    return max(((g.float() - w).pow(2).mean().sqrt() / w.pow(2).mean().sqrt()).item() for g, w in zip(got, want))


def kernel_profile(fn, inputs, d_out, top: int = 10) -> list[dict]:
    """GPU time per kernel of one forward+backward (after a warm-up), the `top` largest."""
    torch.autograd.grad(fn(), inputs, d_out)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.autograd.grad(fn(), inputs, d_out)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if getattr(e, "self_device_time_total", 0) > 0]
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    return [{"kernel": e.key[:100], "calls": e.count, "ms": e.self_device_time_total / 1e3} for e in events[:top]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[128, 96])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--blocked", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the map-block path")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    results = {"meta": run_metadata(), "settings": {"heads": HEADS, "tokens": args.tokens}, "rows": []}
    generator = torch.Generator().manual_seed(0)
    for head_dim in args.head_dims:
        for seq_len in args.lengths:
            q, k, v, mixers, d_out = problem(seq_len, head_dim, args.tokens, generator)
            scale = head_dim ** -0.5
            shape = {"seq_len": seq_len, "head_dim": head_dim, "batch": q.shape[0]}
            sdpa = timings(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v], d_out)
            results["rows"].append({**shape, "method": "sdpa", **sdpa})
            methods = {name(c): (lambda c=c: mixed_heads_attention(q, k, v, *mixers, scale, c)) for c in CONFIGS}
            if args.blocked:
                methods["blocked"] = lambda: blocked_maps_attention(q, k, v, head_mix_pre=mixers[0],
                                                                    head_mix_post=mixers[1], scale=scale)
            for method, fn in methods.items():
                row = {**shape, "method": method}
                try:
                    row.update(timings(fn, [q, k, v, *mixers], d_out))
                    row["ratio_to_sdpa"] = row["fwd_bwd_ms"] / sdpa["fwd_bwd_ms"]
                    if method != "blocked" and seq_len == min(args.lengths):  # exactness of each tile choice
                        config = CONFIGS[[name(c) for c in CONFIGS].index(method)]
                        row["relative_rms"] = relative_rms(
                            lambda q, k, v, *w: mixed_heads_attention(q, k, v, *w, scale, config), q, k, v, mixers,
                            d_out)
                except Exception as error:  # a config that fails to compile or runs out of resources
                    row["error"] = first_line(error)
                results["rows"].append(row)
                print(row, flush=True)
                write_json_atomic(args.out, results)
            fused = [r for r in results["rows"] if r["method"].startswith("fused") and "fwd_bwd_ms" in r
                     and r["seq_len"] == seq_len and r["head_dim"] == head_dim]
            if fused:
                best = min(fused, key=lambda r: r["fwd_bwd_ms"])
                config = CONFIGS[[name(c) for c in CONFIGS].index(best["method"])]
                results.setdefault("profiles", []).append(
                    {**shape, "method": best["method"],
                     "kernels": kernel_profile(lambda: mixed_heads_attention(q, k, v, *mixers, scale, config),
                                               [q, k, v, *mixers], d_out)})
                write_json_atomic(args.out, results)
            del q, k, v, mixers, d_out
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
