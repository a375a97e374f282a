"""Which tl.dot precision the map-block kernels should use for bf16 inputs: speed of C and D, and accuracy.

The triton backend sends wide head mixing (C: the paper's layer, D: talking heads) through map blocks
(mta.ops.triton.blocked). Their Triton kernels multiply float32 tiles with tl.dot; for half-precision inputs the
precision of those products is `blocked.HALF_INPUT_PRECISION` (ieee, tf32x3 or tf32; float32 inputs always get
ieee). For each, this times C and D forward+backward at N = 8k, d = 128, B = 2, H = 16 in bf16 (op_speed_gpu's
inputs and timing, SDPA measured in the same process), measures the relative RMS error of the output and every
gradient against the float32 reference at N = 1k (triton_accuracy's inputs), and against the "ieee" run of the
same bf16 inputs with the queries scaled 4× (sharper attention: the logits' rounding matters more).

With --block-elements E …, it instead times C and D (default precision) with map blocks of 2^E elements
(`blocked.BLOCK_ELEMENTS`), peak memory included: fewer, larger blocks mean fewer kernel launches and less
host time per launch, at more memory. With --tap-rows T …, it times C with T tap rows per program of the q–k
convolution's kernel gradient (`stencil.GRAD_TAP_ROWS`).

The committed results/perf/map_kernels_sweep.json (commit 7255edf) also timed D through fused
talking-heads kernels (since removed: slower than the general path in every precision) and their row tiles.

    python benchmarks/map_kernels_sweep.py       # CUDA only → results/perf/map_kernels_sweep.json
    python benchmarks/map_kernels_sweep.py --block-elements 25 26 27 28 --out results/perf/map_block_sweep.json
    python benchmarks/map_kernels_sweep.py --tap-rows 1 2 4 8 --out results/perf/map_tap_rows_sweep.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from mta.ops.triton import blocked, stencil
from profiling import write_json_atomic
from mta.provenance import run_metadata
from op_speed_gpu import Measurement, measure as measure_speed
from triton_accuracy import (configs as accuracy_configs, errors, make_params, measure as measure_accuracy,
                             output_and_grads)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "perf" / "map_kernels_sweep.json"
SEQ_LEN, BATCH, HEAD_DIM, HEADS = 8192, 2, 128, 16
ACCURACY_SEQ_LEN, SHARPNESS = 1024, 4.0
PRECISIONS = ("ieee", "tf32x3", "tf32")


def deviation_from_ieee(config: str, device: torch.device) -> dict[str, dict]:
    """Errors of each precision's bf16 output and gradients against the "ieee" run's, queries scaled by SHARPNESS."""
    generator = torch.Generator().manual_seed(0)
    q, k, v, cotangent = (torch.randn(1, HEADS, ACCURACY_SEQ_LEN, HEAD_DIM, generator=generator).to(device)
                          for _ in range(4))
    params = make_params(accuracy_configs(HEADS)[config], device, generator)
    runs = {}
    for precision in PRECISIONS:
        blocked.HALF_INPUT_PRECISION = precision
        runs[precision] = output_and_grads([q * SHARPNESS, k, v], params, cotangent, torch.bfloat16, "triton")
    return {precision: {name: errors(got, runs["ieee"][name])["relative_rms"] for name, got in runs[precision].items()}
            for precision in PRECISIONS[1:]}


def time_configs(results: dict, label: dict, repeats: int, device: torch.device, out: Path,
                 configs: tuple[str, ...] = ("C", "D")) -> None:
    """Time `configs` under the current settings; rows tagged with `label` go to results["timings"]."""
    for config in configs:
        row = measure_speed(Measurement(config, HEAD_DIM, SEQ_LEN, BATCH, "triton"), repeats, device)
        row.update(label, ratio_to_sdpa=row.get("total_ms", float("nan")) / results["sdpa"]["total_ms"])
        results["timings"].append(row)
        print({k: row.get(k) for k in (*label, "config", "status", "forward_ms", "backward_ms", "total_ms",
                                       "peak_mib", "ratio_to_sdpa")}, flush=True)
        write_json_atomic(out, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--block-elements", type=int, nargs="+", metavar="E",
                        help="time map blocks of 2^E elements instead of sweeping the precision")
    parser.add_argument("--tap-rows", type=int, nargs="+", metavar="T",
                        help="time C with T tap rows per kernel-gradient program instead of sweeping the precision")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("map_kernels_sweep.py needs a CUDA device")
    device = torch.device("cuda")
    results = {"meta": run_metadata(), "settings": {"seq_len": SEQ_LEN, "batch": BATCH, "head_dim": HEAD_DIM,
                                                    "heads": HEADS, "accuracy_seq_len": ACCURACY_SEQ_LEN,
                                                    "sharpness": SHARPNESS},
               "sdpa": measure_speed(Measurement(None, HEAD_DIM, SEQ_LEN, BATCH, "sdpa"), args.repeats, device),
               "timings": [], "accuracy": [], "deviation_from_ieee": {}}
    print("sdpa", round(results["sdpa"].get("total_ms", float("nan")), 3), "ms", flush=True)
    if args.block_elements:
        for exponent in args.block_elements:
            blocked.BLOCK_ELEMENTS = 1 << exponent
            time_configs(results, {"block_elements_log2": exponent}, args.repeats, device, args.out)
        print(f"wrote {args.out}")
        return
    if args.tap_rows:
        for tap_rows in args.tap_rows:
            stencil.GRAD_TAP_ROWS = tap_rows
            time_configs(results, {"tap_rows": tap_rows}, args.repeats, device, args.out, configs=("C",))
        print(f"wrote {args.out}")
        return
    for precision in PRECISIONS:
        blocked.HALF_INPUT_PRECISION = precision
        time_configs(results, {"precision": precision}, args.repeats, device, args.out)
    for precision in PRECISIONS:
        blocked.HALF_INPUT_PRECISION = precision
        for config in ("C", "D"):
            errs = measure_accuracy(config, accuracy_configs(HEADS)[config], ACCURACY_SEQ_LEN, HEADS, HEAD_DIM, device)
            worst = max(e["relative_rms"] for e in errs.values())
            results["accuracy"].append({"config": config, "precision": precision, "worst_relative_rms": worst,
                                        "errors": errs})
            print("accuracy", config, precision, round(worst, 5), flush=True)
    for config in ("C", "D"):
        results["deviation_from_ieee"][config] = deviation_from_ieee(config, device)
        print("deviation from ieee", config, results["deviation_from_ieee"][config], flush=True)
    write_json_atomic(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
