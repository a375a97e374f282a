"""Compile the fused head-mixing kernels (mta.ops.triton.mixing) for a Hopper GPU without one, and report what
each launch costs in shared memory, registers and spills: the resources that decide which tiles can run at all
(a program holds all C heads of a group), read off Triton's compiler and its bundled ptxas.

For every candidate in mixing.CONFIGS (or the --configs given as m,n,k,d,warps,stages), every kernel launch of a
call (forward, δ, dq, dk, dv) and every dtype, the JSON gets shared bytes (against an H100's or H200's limit per
block), registers per thread and spill bytes; the exit status is 1 if a launch fails to compile or does not fit.

    python benchmarks/compile_report.py                  # → results/perf/mixing_compile_report.json
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mta.ops.triton import mixing
from mta.provenance import run_metadata
from profiling import write_json_atomic

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "perf" / "mixing_compile_report.json"
TARGET = GPUTarget("cuda", 90, 32)
SHARED_LIMIT = 232448  # bytes of shared memory one block may use on an H100 or H200
INPUTS = {"Q", "K", "V", "OUT", "DO", "DQ", "GRAD"}  # pointers in the input dtype; the other pointers are float32
SCALARS = {"SLOTS", "N", "H", "HKV", "G", "HD", "DV"}
LAUNCHES = (("forward", "_forward_kernel", {}), ("delta", "_backward_query_kernel", {"DELTA_ONLY": True}),
            ("dq", "_backward_query_kernel", {"DELTA_ONLY": False}), ("dk", "_backward_key_kernel", {"VALUES": False}),
            ("dv", "_backward_key_kernel", {"VALUES": True}))
PRECISIONS = {"bf16": "tf32", "fp16": "tf32", "fp32": "ieee"}


def compile_launch(kernel, constexprs: dict, dtype: str, num_warps: int, num_stages: int):
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name == "scale":
            signature[name] = "fp32"
        elif name in SCALARS:
            signature[name] = "i32"
        else:
            signature[name] = f"*{dtype}" if name in INPUTS else "*fp32"
    source = ASTSource(fn=kernel, signature=signature,
                       constexprs={(kernel.arg_names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(source, target=TARGET, options=dict(num_warps=num_warps, num_stages=num_stages))


def ptxas_resources(ptx: str) -> dict:
    """Registers per thread and spill bytes from ptxas -v (the ptxas that Triton ships)."""
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as file:
        file.write(ptx)
        file.flush()
        report = subprocess.run([str(ptxas), "--gpu-name", "sm_90a", "-v", file.name, "-o", "/dev/null"],
                                capture_output=True, text=True).stderr
    number = lambda pattern: int(re.search(pattern, report).group(1))  # noqa: E731
    return {"registers": number(r"Used (\d+) registers"), "spill_store_bytes": number(r"(\d+) bytes spill stores"),
            "spill_load_bytes": number(r"(\d+) bytes spill loads")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", nargs="+", choices=list(PRECISIONS), default=["bf16"])
    parser.add_argument("--group", type=int, default=16, help="heads per mixing group C")
    parser.add_argument("--configs", nargs="*", default=[], help="tiles as m,n,k,d,warps,stages (default: CONFIGS)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    configs = [mixing.MixConfig(*map(int, c.split(","))) for c in args.configs] or list(mixing.CONFIGS)
    results = {"meta": run_metadata(), "target": "sm_90", "group": args.group, "shared_limit_bytes": SHARED_LIMIT,
               "rows": []}
    for dtype in args.dtypes:
        for config in configs:
            for launch, name, flags in LAUNCHES:
                kernel = getattr(mixing, name)
                constexprs = dict(C=args.group, HAS_PRE=True, HAS_POST=True, PRECISION=PRECISIONS[dtype],
                                  MIX_PRECISION="tf32x3", **config.meta(), **flags)
                row = {"dtype": dtype, "launch": launch, **vars(config)}
                try:
                    compiled = compile_launch(kernel, constexprs, dtype, config.num_warps, config.num_stages)
                    row.update(shared_bytes=compiled.metadata.shared, **ptxas_resources(compiled.asm["ptx"]))
                except Exception as error:  # e.g. out of shared memory
                    row["error"] = str(error).splitlines()[0]
                results["rows"].append(row)
                print(row, flush=True)
                write_json_atomic(args.out, results)
    if any("error" in row or row["shared_bytes"] > SHARED_LIMIT for row in results["rows"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
