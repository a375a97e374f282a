"""The q–k convolution as the backends that materialise maps run it: `reference.qk_conv`, except for float32 maps
on a GPU, where cuDNN's depthwise convolution is slow and the Triton stencil (`triton.stencil`) computes it.

`chunked` always takes this path; `mta_attention` hands it to `reference` (whose own default, the oracle's, is the
torch-only `qk_conv`).
"""

from __future__ import annotations

import importlib.util

import torch

from .reference import qk_conv

# Whether the triton package can be imported, looked up once at import (without importing it): `auto` asks on
# every attention call, and torch.compile traces a constant, where torch 2.11 skipped the whole compiled frame
# of a model that called importlib from the attention (no graph at all: the toy stack ran eagerly). Defined here,
# below mta.ops.triton (which imports it), since the triton package's map blocks import chunked, which imports this.
TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def qk_conv_dispatch(scores: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """`reference.qk_conv(scores, kernel)`: scores [B, H, R, M] (float16/bfloat16/float32/float64), kernel
    [H, c_q, c_k] (cast to scores' dtype) -> [B, H, R, M] in scores' dtype. Eagerly the Triton stencil for float32
    maps on a GPU (`_stencil_serves`), `qk_conv` otherwise (and under torch.compile, which fuses its shifted sum).
    """
    if not torch.compiler.is_compiling() and _stencil_serves(scores):
        from .triton.stencil import qk_conv_stencil

        return qk_conv_stencil(scores, kernel.to(scores.dtype))
    return qk_conv(scores, kernel)


def _stencil_serves(scores: torch.Tensor) -> bool:
    """Whether the Triton stencil can compute qk_conv(scores, ·): float32 maps of fewer than 2^31 elements on a
    GPU, outside vmap (the stacked toy trainer), with Triton installed."""
    return (TRITON_INSTALLED and scores.device.type == "cuda" and scores.dtype == torch.float32
            and scores.shape[-2] * scores.shape[-1] < 2**31 and not torch._C._functorch.is_batchedtensor(scores))
