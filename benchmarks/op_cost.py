"""What each backend of `mta_attention` costs on this machine: forward+backward time and peak memory.

Every (method, N) is measured in a fresh subprocess so that its peak resident memory is its own (Linux: the
high-water mark is reset after the inputs are built, then read after forward+backward). SDPA with no MTA option
is the baseline, measured in the same run. The op is the paper's MTA layer in miniature: 6×11 q–k convolutions
before and after softmax and full head mixing before and after softmax (docs/spec.md §3), random non-identity weights.

    python benchmarks/op_cost.py                       # N = 1k, 4k, 16k → results/perf/op_cost_cpu.json
    python benchmarks/op_cost.py --lengths 512 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

METHODS = ("sdpa", "reference", "chunked")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "perf" / "op_cost_cpu.json"


def read_kib(field: str, path: str = "/proc/self/status") -> int:
    """A 'Field:  N kB' value from a /proc file."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in {path}")


def make_case(batch: int, heads: int, seq_len: int, head_dim: int, seed: int = 0) -> tuple[list, dict]:
    gen = torch.Generator().manual_seed(seed)
    qkv = [torch.randn(batch, heads, seq_len, head_dim, generator=gen).requires_grad_() for _ in range(3)]
    kernels = {name: (0.1 * torch.randn(heads, 6, 11, generator=gen)).requires_grad_() for name in ("kernel_pre", "kernel_post")}
    mixers = {name: (torch.eye(heads) + 0.1 * torch.randn(heads, heads, generator=gen)).unsqueeze(0).requires_grad_()
              for name in ("head_mix_pre", "head_mix_post")}
    return qkv, {**kernels, **mixers}


def forward_backward(method: str, qkv: list, options: dict) -> tuple[float, float]:
    from mta.ops import mta_attention

    start = time.perf_counter()
    if method == "sdpa":
        out = mta_attention(*qkv)
    else:
        out = mta_attention(*qkv, **options, backend=method)
    middle = time.perf_counter()
    out.backward(torch.ones_like(out))
    return middle - start, time.perf_counter() - middle


def worker(args: argparse.Namespace) -> None:
    """Measure one (method, N) in this process; print one JSON line."""
    forward_backward(args.method, *make_case(1, args.heads, 256, args.head_dim))  # one-time initialisation
    qkv, options = make_case(args.batch, args.heads, args.seq_len, args.head_dim)
    baseline_kib = read_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS high-water mark
    forward_s, backward_s = forward_backward(args.method, qkv, options)
    peak_kib = read_kib("VmHWM") - baseline_kib
    print(json.dumps({"forward_s": forward_s, "backward_s": backward_s, "total_s": forward_s + backward_s,
                      "peak_mib": peak_kib / 1024}))


def measure(method: str, seq_len: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", "--method", method, "--seq-len", str(seq_len),
               "--batch", str(args.batch), "--heads", str(args.heads), "--head-dim", str(args.head_dim)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from mta.provenance import run_metadata

    budget_mib = 0.7 * read_kib("MemTotal", "/proc/meminfo") / 1024
    rows, last_peak = [], {}
    for seq_len in sorted(args.lengths):
        for method in METHODS:
            previous = last_peak.get(method)
            if previous and previous[1] * (seq_len / previous[0]) ** 2 > budget_mib and method == "reference":
                need = previous[1] * (seq_len / previous[0]) ** 2 / 1024
                row = {"skipped": f"needs about {need:.0f} GiB (quadratic in N), more than 70% of this machine's memory"}
            else:
                row = measure(method, seq_len, args)
            row = {"method": method, "seq_len": seq_len, **row}
            print(json.dumps(row), flush=True)
            rows.append(row)
            if "peak_mib" in row:
                last_peak[method] = (seq_len, row["peak_mib"])
    config = {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "dtype": "float32",
              "mta_options": "pre+post 6x11 q-k conv, full pre+post head mixing", "repeats": 1}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": run_metadata(), "config": config, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
