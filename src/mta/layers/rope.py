"""Rotary position embeddings (RoFormer, arXiv 2104.09864) in the Meta Llama / lingua convention.

Convention: *interleaved* pairs. Channels (2i, 2i+1) of a head form one complex number that is rotated by the
angle p·θ^(-2i/d) at position p. This is the layout of Meta's Llama reference code and of lingua, on which the
official MTA code is built (docs/spec.md §2); Hugging Face's Llama uses "rotate half" instead, which is the
same function after permuting the q/k projection rows.
"""

from __future__ import annotations

import torch


def apply_rope(x: torch.Tensor, theta: float = 1e5, position_offset: int | torch.Tensor = 0) -> torch.Tensor:
    """Rotate the interleaved channel pairs of `x` by their positions.

    x: [B, H, N, d] with d even; token n sits at position `position_offset + n`: an int or a 0-dim integer
    tensor (decoding with a cache passes the number of tokens already seen), or an integer tensor [B], one offset
    per row (left-padded batches count each row's positions from its first real token).
    theta: the RoPE base (1e5 in the paper's runs). The rotation is computed in at least float32 and cast back.
    Returns a tensor of x's shape and dtype.
    """
    return rotate(x, *rope_angles(x, theta, position_offset))


def rope_angles(x: torch.Tensor, theta: float, position_offset: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles for tensors shaped like x [B, H, N, d] (see `apply_rope`): [N, d/2], or
    [B, 1, N, d/2] with per-row offsets, in at least float32. Computed once, they rotate q and k alike."""
    seq_len, head_dim = x.shape[-2], x.shape[-1]
    dtype = torch.promote_types(x.dtype, torch.float32)
    positions = torch.arange(seq_len, device=x.device, dtype=dtype)
    if isinstance(position_offset, torch.Tensor) and position_offset.dim() == 1:
        positions = (positions + position_offset.to(dtype).unsqueeze(1)).unsqueeze(1)  # [B, 1, N]: per row
    else:
        positions = positions + position_offset
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=x.device, dtype=dtype) / head_dim)
    angles = positions.unsqueeze(-1) * inv_freq  # [N, d/2] or [B, 1, N, d/2]
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, N, d] with its channel pairs rotated by the angles of `rope_angles`; x's dtype."""
    even, odd = x.to(cos.dtype).unflatten(-1, (x.shape[-1] // 2, 2)).unbind(-1)
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)
