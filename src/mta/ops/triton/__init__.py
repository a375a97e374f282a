"""Fused Triton backend of Multi-Token Attention: one banded flash-attention kernel plus O(N) glue.

`glue` reduces every MTA option to one call of a generic banded causal attention and three token-axis ops
(`primitives` defines all four in PyTorch); `kernels` implements that attention (forward and backward) in
Triton, `function` wraps it in an autograd.Function, `token_ops` fuses two token-axis ops and `band` the
third. Mixing groups wider than MAX_BANDED_MIX_GROUP heads widen those kernels' operands group-fold: without
convolutions (talking heads) and for groups of 16, 32, … heads they go to `mixing`, fused kernels that hold a
whole group in one program; otherwise to `blocked`: map blocks through Triton pieces (`maps`, `stencil`) and
half-precision GEMMs.
Importing this package needs no Triton: the kernels are imported on first use.
"""

from __future__ import annotations

import os

import torch

from ..conv import TRITON_INSTALLED
from .glue import banded_mta
from .primitives import Primitives

__all__ = ["triton_attention", "is_available"]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Head mixing in groups up to this size goes through the banded kernels; wider groups through `mixing` or map
# blocks.
MAX_BANDED_MIX_GROUP = 4




def is_available(device: torch.device | str) -> bool:
    """Triton is installed and can run on `device`: CUDA, or any device under TRITON_INTERPRET=1."""
    return TRITON_INSTALLED and (torch.device(device).type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kernel_pre: torch.Tensor | None = None,
    kernel_post: torch.Tensor | None = None,
    head_mix_pre: torch.Tensor | None = None,
    head_mix_post: torch.Tensor | None = None,
    scale: float,
    dropout_p: float,
    config=None,
) -> torch.Tensor:
    """Causal MTA (docs/spec.md §1) with the fused Triton kernel; arguments as validated by `mta_attention`.

    q: [B, H, N, d]; k, v: [B, H_kv, N, d] (float16, bfloat16 or float32; kernels and mixers in q's dtype or
    float32); kernels [H, c_q, c_k], mixers [G, c, c]. config: a `function.BlockConfig` for every launch of
    the banded kernels (None: autotuned on a GPU). Returns [B, H, N, d_v] in q's dtype. Memory: O(N · g · c_q · d)
    per head for mixing groups of g <= MAX_BANDED_MIX_GROUP heads; O(N · d) per head for wide mixing without
    convolutions (`mixing`); otherwise a few map blocks (`blocked.BLOCK_ELEMENTS` elements each) plus O(N · d)
    per head. Dropout is not supported (dropout_p must be 0).
    """
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0 for backend 'triton' (no dropout on fused weights), got {dropout_p!r}")
    if q.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"q must be float16, bfloat16 or float32 for backend 'triton', got {q.dtype}")
    if not is_available(q.device):
        raise ValueError(
            f"backend 'triton' needs Triton and a CUDA device (or TRITON_INTERPRET=1), got q on {q.device}"
        )
    if not banded_mixing(head_mix_pre, head_mix_post):
        from .mixing import fused_mixing_serves, mixed_heads_attention

        if fused_mixing_serves(kernel_pre, kernel_post, head_mix_pre, head_mix_post):
            return mixed_heads_attention(q, k, v, head_mix_pre, head_mix_post, scale)
        from .blocked import blocked_maps_attention

        return blocked_maps_attention(q, k, v, kernel_pre=kernel_pre, kernel_post=kernel_post,
                                      head_mix_pre=head_mix_pre, head_mix_post=head_mix_post, scale=scale)
    from .band import probability_band
    from .function import banded_flash_attention
    from .token_ops import diagonal_dots, token_conv

    def banded(q, kw, vw, band, taps, group, skip):
        return banded_flash_attention(q, kw, vw, band, config, taps, group, skip)

    return banded_mta(
        q, k, v,
        kernel_pre=kernel_pre, kernel_post=kernel_post, head_mix_pre=head_mix_pre, head_mix_post=head_mix_post,
        scale=scale, ops=Primitives(banded, token_conv, diagonal_dots, probability_band),
    )


def banded_mixing(*mixers: torch.Tensor | None) -> bool:
    """Whether every mixer [G, c, c] given mixes groups of c <= MAX_BANDED_MIX_GROUP heads (the banded kernels)."""
    return all(m is None or m.shape[1] <= MAX_BANDED_MIX_GROUP for m in mixers)
