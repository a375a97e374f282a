"""The reference Multi-Token Attention op: the N×N map materialised, docs/spec.md §1 step by step.

This is the oracle every other backend is tested against. It favours clarity over speed and memory:
it holds several [B, H, N, N] tensors at once. It imports torch alone: the other backends build on it, never
the other way round.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def qk_conv(scores: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise 2-D cross-correlation over (query, key), causal along queries, centred along keys (docs/spec.md §1).

    scores: [B, H, R, M] with zeros wherever the spec's conv input is zero (masked or outside the sequence).
    kernel: [H, c_q, c_k], c_k odd; row c_q-1 is the current query, column (c_k-1)/2 the same key.
    Returns [B, H, R, M]: out[h, i, j] = Σ_a Σ_b kernel[h, a, b] · scores[h, i-(c_q-1)+a, j-(c_k-1)/2+b],
    reading zeros above row 0 and outside [0, M) along keys.

    Eagerly a depthwise convolution (oneDNN, cuDNN); under torch.compile the sum of shifted maps
    (`shifted_sum_conv`), which the compiler fuses. On a GPU cuDNN's depthwise convolution is slow on large float32
    maps: `conv.qk_conv_dispatch` runs the Triton stencil there for the backends (this module imports torch only).
    """
    n_heads, c_q, c_k = kernel.shape
    kernel = kernel.to(scores.dtype)
    half = (c_k - 1) // 2
    padded = F.pad(scores, (half, half, c_q - 1, 0))
    if torch.compiler.is_compiling():
        return shifted_sum_conv(padded, kernel)
    if padded.device.type == "cpu" and not torch._C._functorch.is_batchedtensor(padded):
        # oneDNN's depthwise convolution is several times faster, forward and backward, in channels-last layout
        # (vmap, used by the stacked toy trainer, cannot change memory formats).
        padded = padded.contiguous(memory_format=torch.channels_last)
    return F.conv2d(padded, kernel.unsqueeze(1), groups=n_heads).contiguous()


def shifted_sum_conv(padded: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The depthwise cross-correlation of `qk_conv` as c_q·c_k scaled shifted views of the padded map.

    padded: [B, H, R + c_q-1, M + c_k-1] (qk_conv's padding); kernel: [H, c_q, c_k] in padded's dtype.
    Returns [B, H, R, M]. torch.compile fuses this sum of views into one elementwise kernel, forward and
    backward, where it keeps cuDNN's depthwise convolution as an opaque call, slow on N×N maps with small
    kernels. Eagerly every term is a pass over the map, slower than the convolution (the measurements are in
    docs/devlog/triton-log.md).
    """
    c_q, c_k = kernel.shape[1:]
    rows, cols = padded.shape[-2] - (c_q - 1), padded.shape[-1] - (c_k - 1)
    taps = kernel[:, :, :, None, None]  # [H, c_q, c_k, 1, 1], broadcast over the map
    out = None
    for a in range(c_q):
        for b in range(c_k):
            term = taps[:, a, b] * padded[..., a : a + rows, b : b + cols]
            out = term if out is None else out + term
    return out


def head_mix(maps: torch.Tensor, mixer: torch.Tensor) -> torch.Tensor:
    """Mix attention maps within groups of heads (docs/spec.md §1).

    maps: [B, H, R, M]; mixer: [G, c, c] with G·c = H, mixer[g, i, o] weighting input head g·c+i into output
    head g·c+o. Returns [B, H, R, M].
    """
    mix = mix_in_layout if maps.device.type == "cpu" else mix_as_one_product
    return mix(maps, mixer.to(maps.dtype))


def mix_in_layout(maps: torch.Tensor, mixer: torch.Tensor) -> torch.Tensor:
    """head_mix as one product per group over the head axis in the maps' own layout, W[g]ᵀ [c, c] · maps[b, g]
    [c, R·M]: no copies. On a CPU benchmarks/op_cost.py's chunked op with full mixing at 16k took 63 s with it
    and 84 s with the einsum (results/perf/op_cost_cpu.json at commits a28a53a and 120bd20). On a
    GPU its mixer gradient is a batched product with an inner dimension of R·M that cuBLAS does not split (D's
    reference backward took 1.5 s instead of 0.19 s at 8k on an H200)."""
    batch, n_heads, rows, cols = maps.shape
    groups, size, _ = mixer.shape
    mixed = torch.matmul(mixer.transpose(1, 2), maps.reshape(batch, groups, size, rows * cols))
    return mixed.reshape(batch, n_heads, rows, cols)


def mix_as_one_product(maps: torch.Tensor, mixer: torch.Tensor) -> torch.Tensor:
    """head_mix as an einsum, which moves the head axis innermost (a copy each way) and so makes the mixer's
    gradient one large matrix product: the faster form on a GPU."""
    batch, n_heads, rows, cols = maps.shape
    groups, size, _ = mixer.shape
    mixed = torch.einsum("bgirm,gio->bgorm", maps.reshape(batch, groups, size, rows, cols), mixer)
    return mixed.reshape(batch, n_heads, rows, cols)


def causal_future(rows: int, cols: int, row_offset: int, device: torch.device) -> torch.Tensor:
    """Bool [rows, cols], True where key j lies after query i = row_offset + r (the spec's `future`)."""
    query = torch.arange(row_offset, row_offset + rows, device=device).unsqueeze(1)
    key = torch.arange(cols, device=device).unsqueeze(0)
    return key > query


def attention_weights(
    scores: torch.Tensor,
    future: torch.Tensor,
    kernel_pre: torch.Tensor | None,
    kernel_post: torch.Tensor | None,
    head_mix_pre: torch.Tensor | None,
    head_mix_post: torch.Tensor | None,
    conv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = qk_conv,
) -> torch.Tensor:
    """From scaled logits to final attention weights, docs/spec.md §1 without dropout.

    scores: [B, H, R, M] scaled Q·Kᵀ in the compute dtype (float32 or float64, so the softmax is at least
    float32); future: bool [R, M]; conv: the q–k convolution, `qk_conv` or a faster equal (`conv.qk_conv_dispatch`).
    Rows whose conv sources lie outside `scores` see zeros there; callers discard such rows.
    Returns [B, H, R, M] in scores' dtype.
    """
    if kernel_pre is not None:
        scores = conv(scores.masked_fill(future, 0.0), kernel_pre)
    if head_mix_pre is not None:
        scores = head_mix(scores, head_mix_pre)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    if kernel_post is not None:
        weights = conv(weights, kernel_post).masked_fill(future, 0.0)
    if head_mix_post is not None:
        weights = head_mix(weights, head_mix_post)
    return weights


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (fp32 accumulation), the input dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def expand_kv(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Repeat grouped-query K or V heads: [B, H_kv, N, d] -> [B, H, N, d]."""
    repeats = n_heads // x.shape[1]
    return x if repeats == 1 else x.repeat_interleave(repeats, dim=1)


def reference_attention(
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
    conv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = qk_conv,
) -> torch.Tensor:
    """Causal MTA, materialising the [B, H, N, N] map (docs/spec.md §1). Inputs are validated by `mta_attention`.

    q: [B, H, N, d]; k, v: [B, H_kv, N, d]. Half-precision inputs are computed in float32.
    conv: the q–k convolution. The oracle's default is `qk_conv`, a depthwise convolution on every device (on a
    GPU cuDNN's, slow on large maps: speed is secondary here); `mta_attention` passes `conv.qk_conv_dispatch`,
    which runs the Triton stencil on float32 maps on a GPU.
    Returns [B, H, N, d] in q's dtype.
    """
    dtype = compute_dtype(q.dtype)
    n_heads, seq_len = q.shape[1], q.shape[2]
    k = expand_kv(k, n_heads).to(dtype)
    v = expand_kv(v, n_heads).to(dtype)
    scores = torch.matmul(q.to(dtype), k.transpose(-1, -2)) * scale
    future = causal_future(seq_len, seq_len, 0, q.device)
    weights = attention_weights(scores, future, kernel_pre, kernel_post, head_mix_pre, head_mix_post, conv)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return torch.matmul(weights, v).to(q.dtype)
