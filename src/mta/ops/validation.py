"""Argument checks shared by the op (`mta_attention`) and its decoding step (`decode.mta_attention_step`): each
raises a ValueError naming the argument, its expected shape or dtype and what it got."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q [B, H, N, d], k [B, H_kv, N, d], v [B, H_kv, N, d_v]: one float dtype and device, H >= 1 a multiple of
    H_kv, d >= 1."""
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != 4:
            raise ValueError(f"{name} must have shape [B, H, N, d] (4 dimensions), got shape {tuple(tensor.shape)}")
    if q.dtype not in FLOAT_DTYPES:
        raise ValueError(f"q must be float16, bfloat16, float32 or float64, got {q.dtype}")
    batch, n_heads, seq_len, head_dim = q.shape
    if n_heads == 0:
        raise ValueError(f"q must have at least one head (H >= 1), got shape {tuple(q.shape)}")
    if head_dim == 0:
        raise ValueError(f"q must have a head dim d >= 1, got shape {tuple(q.shape)}")
    for name, tensor in (("k", k), ("v", v)):
        if tensor.dtype != q.dtype or tensor.device != q.device:
            raise ValueError(
                f"{name} must match q's dtype and device ({q.dtype}, {q.device}), got ({tensor.dtype}, {tensor.device})"
            )
    if k.shape != (batch, k.shape[1], seq_len, head_dim):
        raise ValueError(f"k must have shape [B={batch}, H_kv, N={seq_len}, d={head_dim}], got {tuple(k.shape)}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must have shape [B={batch}, H_kv={k.shape[1]}, N={seq_len}, d_v], got {tuple(v.shape)}")
    if k.shape[1] == 0 or n_heads % k.shape[1] != 0:
        raise ValueError(f"the number of k/v heads must divide q's {n_heads} heads, got {k.shape[1]}")


def _check_param_dtype(name: str, param: torch.Tensor, q: torch.Tensor) -> None:
    if param.device != q.device:
        raise ValueError(f"{name} must be on q's device {q.device}, got {param.device}")
    allowed = {q.dtype, torch.float32} if q.dtype in (torch.float16, torch.bfloat16) else {q.dtype}
    if param.dtype not in allowed:
        expected = " or ".join(sorted(str(d) for d in allowed))
        raise ValueError(f"{name} must have dtype {expected} (q is {q.dtype}), got {param.dtype}")


def check_kernel(name: str, kernel: torch.Tensor | None, q: torch.Tensor) -> None:
    """kernel: None or [H, c_q, c_k] with q's H, c_q >= 1 and c_k odd, on q's device in q's dtype (or float32 for
    half-precision q)."""
    if kernel is None:
        return
    n_heads = q.shape[1]
    if not isinstance(kernel, torch.Tensor) or kernel.dim() != 3:
        raise ValueError(f"{name} must be a tensor of shape [H, c_q, c_k], got {_describe(kernel)}")
    heads, c_q, c_k = kernel.shape
    if heads != n_heads or c_q < 1 or c_k < 1:
        raise ValueError(f"{name} must have shape [H={n_heads}, c_q>=1, c_k>=1], got {tuple(kernel.shape)}")
    if c_k % 2 == 0:
        raise ValueError(f"{name} must have an odd key width c_k (centred on the key), got c_k={c_k}")
    _check_param_dtype(name, kernel, q)


def check_mixer(name: str, mixer: torch.Tensor | None, q: torch.Tensor) -> None:
    """mixer: None or [G, c, c] with G·c = q's H, on q's device in q's dtype (or float32 for half-precision q)."""
    if mixer is None:
        return
    n_heads = q.shape[1]
    if not isinstance(mixer, torch.Tensor) or mixer.dim() != 3 or mixer.shape[1] != mixer.shape[2]:
        raise ValueError(f"{name} must be a tensor of shape [G, c, c], got {_describe(mixer)}")
    groups, size, _ = mixer.shape
    if groups * size != n_heads:
        raise ValueError(f"{name} must have G·c equal to the {n_heads} heads, got G={groups}, c={size}")
    _check_param_dtype(name, mixer, q)


def _describe(value: object) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
