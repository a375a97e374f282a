"""Small measuring and bookkeeping tools shared by the benchmark scripts (imported from their folder)."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_cuda_state(device: torch.device) -> None:
    """Free what earlier measurements left (gc, the allocator's cache) and restart the peak-memory count."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def total_memory_gib(device: torch.device) -> float | None:
    """The GPU's memory in GiB, None for a CPU."""
    return torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None


def kept_rows(rows: list[dict]) -> list[dict]:
    """The rows of an earlier run that a benchmark's --resume keeps: all but errors, which are measured again."""
    return [row for row in rows if row["status"] != "error"]


def profile_calls(fn: Callable[[], object], calls: int, device: torch.device, top: int = 12) -> dict:
    """Run fn() `calls` times under torch.profiler: aten launches per call and the `top` aten ops with the most
    self time per call (GPU time on a GPU, else CPU time), to see what bounds a step."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        synchronize(device)
    averages = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    device_us = lambda e: getattr(e, "self_device_time_total", 0) or 0  # noqa: E731
    timed = device_us if device.type == "cuda" else (lambda e: e.self_cpu_time_total)  # noqa: E731
    ranked = sorted(averages, key=timed, reverse=True)[:top]
    return {"steps": calls, "aten_calls_per_step": sum(e.count for e in averages) / calls,
            "top": [{"op": e.key, "calls_per_step": e.count / calls, "self_cpu_ms_per_step": e.self_cpu_time_total / calls / 1e3,
                     "self_device_ms_per_step": device_us(e) / calls / 1e3} for e in ranked]}


def first_line(error: Exception) -> str:
    """The first line of an error's message (CUDA out-of-memory messages run to many lines)."""
    return (str(error).splitlines() or [""])[0]


def write_json_atomic(path: Path, results: dict) -> None:
    """Write `results` as JSON through a temporary file, so a run killed mid-write leaves the previous file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(results, indent=1) + "\n")
    partial.replace(path)


def fill_defaults(args, defaults: dict) -> None:
    """Set each argparse attribute in `defaults` that the command line left None (a FULL or QUICK setting)."""
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
