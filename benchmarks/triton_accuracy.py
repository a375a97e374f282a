"""How close the Triton backend in bf16 is to the float32 reference: relative RMS and max error, forward and gradients.

For each configuration (issue 4's A–D at small H) and N, the same random inputs go through
`mta_attention(..., backend="triton")` in bfloat16 and through the reference in float32; the errors of the output
and of the gradients of q, k, v and every kernel and mixer are written to results/perf/triton_accuracy_gpu.json.
`--check` exits non-zero when any relative RMS error exceeds the bound (the GPU test command of docs/results/performance.md).

    python benchmarks/triton_accuracy.py --check                  # on a CUDA machine
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mta.ops import mta_attention
from profiling import write_json_atomic
from mta.provenance import run_metadata

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "perf" / "triton_accuracy_gpu.json"
RELATIVE_RMS_BOUND = 0.03  # bf16 inputs and outputs carry ~0.4% rounding each; softmax sharpening amplifies it


def configs(heads: int) -> dict[str, dict]:
    """Issue 4's configurations as (kernel shapes, mixer shapes); full mixing is over all `heads`."""
    return {
        "A": {"kernel_pre": (heads, 6, 11)},
        "B": {"kernel_pre": (heads, 6, 11), "kernel_post": (heads, 6, 11),
              "head_mix_pre": (heads // 2, 2, 2), "head_mix_post": (heads // 2, 2, 2)},
        "C": {"kernel_pre": (heads, 6, 11), "kernel_post": (heads, 6, 11),
              "head_mix_pre": (1, heads, heads), "head_mix_post": (1, heads, heads)},
        "D": {"head_mix_pre": (1, heads, heads), "head_mix_post": (1, heads, heads)},
    }


def make_params(shapes: dict, device, generator) -> dict:
    """Identity plus 0.05·noise for kernels and mixers, float32."""
    params = {}
    for name, shape in shapes.items():
        if name.startswith("kernel"):
            value = torch.zeros(shape)
            value[:, shape[1] - 1, (shape[2] - 1) // 2] = 1.0
        else:
            value = torch.eye(shape[1]).repeat(shape[0], 1, 1)
        params[name] = (value + 0.05 * torch.randn(shape, generator=generator)).to(device).requires_grad_()
    return params


def errors(got: torch.Tensor, want: torch.Tensor) -> dict:
    diff = got.float() - want.float()
    scale = want.float().pow(2).mean().sqrt().clamp_min(1e-30)
    return {"relative_rms": (diff.pow(2).mean().sqrt() / scale).item(), "max_abs": diff.abs().max().item(),
            "reference_rms": scale.item()}


def output_and_grads(qkv: list, params: dict, cotangent: torch.Tensor, dtype: torch.dtype, backend: str) -> dict:
    """{"output", "grad_q", "grad_k", "grad_v", "grad_<param>" …: tensor} of one run of mta_attention with q, k, v
    and the cotangent in `dtype`."""
    inputs = [x.to(dtype).requires_grad_() for x in qkv]
    out = mta_attention(*inputs, **params, backend=backend)
    grads = torch.autograd.grad(out, [*inputs, *params.values()], cotangent.to(dtype))
    names = ["output", "grad_q", "grad_k", "grad_v", *(f"grad_{name}" for name in params)]
    return dict(zip(names, [out.detach(), *grads]))


def measure(config: str, shapes: dict, seq_len: int, heads: int, head_dim: int, device) -> dict:
    generator = torch.Generator().manual_seed(seq_len)
    qkv = [torch.randn(1, heads, seq_len, head_dim, generator=generator).to(device) for _ in range(3)]
    params = make_params(shapes, device, generator)
    cotangent = torch.randn(1, heads, seq_len, head_dim, generator=generator).to(device)
    got = output_and_grads(qkv, params, cotangent, torch.bfloat16, "triton")
    want = output_and_grads(qkv, params, cotangent, torch.float32, "reference")
    return {name: errors(got[name], want[name]) for name in got}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--configs", nargs="+", default=["A", "B", "C", "D"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check", action="store_true", help=f"fail if a relative RMS error exceeds {RELATIVE_RMS_BOUND}")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("triton_accuracy.py needs a CUDA device")
    device = torch.device("cuda")
    rows, worst, meta = [], 0.0, run_metadata()
    for config in args.configs:
        for seq_len in args.lengths:
            errs = measure(config, configs(args.heads)[config], seq_len, args.heads, args.head_dim, device)
            worst = max(worst, *(e["relative_rms"] for e in errs.values()))
            rows.append({"config": config, "seq_len": seq_len, "heads": args.heads, "head_dim": args.head_dim, "errors": errs})
            print(config, seq_len, {name: round(e["relative_rms"], 5) for name, e in errs.items()}, flush=True)
            torch.cuda.empty_cache()
            # after every row: a run cut short keeps what it measured
            write_json_atomic(args.out, {"meta": meta, "bound_relative_rms": RELATIVE_RMS_BOUND,
                                         "worst_relative_rms": worst, "rows": rows})
    print(f"worst relative RMS error {worst:.4f} (bound {RELATIVE_RMS_BOUND}); wrote {args.out}")
    if args.check and worst > RELATIVE_RMS_BOUND:
        sys.exit(1)


if __name__ == "__main__":
    main()
