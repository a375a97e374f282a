"""Where and in which precision a run computes: device and autocast choices shared by every trainer."""

from __future__ import annotations

import os

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> the first CUDA GPU if there is one, else the CPU; any other name is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device: got {name!r}, expected 'auto', 'cpu', 'cuda' or 'cuda:N' ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: got {name!r}, but torch sees no CUDA device")
    return device


def visible_gpus() -> list[str | None]:
    """The GPUs a launcher spreads its processes over, as CUDA_VISIBLE_DEVICES values (that variable's list, or
    every GPU torch sees), or [None] for the CPU."""
    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [g for g in listed.split(",") if g] if listed else [str(i) for i in range(count)]
    return gpus[:count] or [None]


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for plain float32.

    "auto" is bf16 autocast on CUDA and float32 elsewhere (bf16 on a CPU is slow); "bf16" forces autocast.
    Weights, optimiser state and the loss stay float32 either way.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: got {precision!r}, expected one of {PRECISIONS}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None
