"""Exact MTA with wide head mixing: materialised map blocks through Triton pieces and half-precision GEMMs.

Mixing all H heads widens the banded kernels' operands H-fold (16× plain attention's score FLOPs for talking
heads, 96× with 6×11 convolutions). Here each block of query rows materialises its maps instead,
[B, H, rows, keys ≤ the block's last query] in float32, like the chunked backend, but every step is one pass:
scores and the weighted sum of values are GEMMs of the input dtype accumulated in float32 (`matmul_float32`),
the convolutions are the Triton stencil (`stencil.conv_maps`), head mixing is `maps.mix_maps` (which also writes
the softmax's -inf mask) and the softmax is torch's. The backward is written out (no autograd graph): it
recomputes one block's maps, then goes back through them step by step. Memory: a few maps of one block
(`BLOCK_ELEMENTS` elements each) plus O(N) per head; only q, k, v, kernels and mixers are saved.

Rows of a block start `halo` rows early (the query-direction convolutions read earlier rows); those rows only
feed the block's convolutions and get no output gradient, as in mta.ops.chunked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..chunked import block_bounds, halo_rows
from ..reference import causal_future, expand_kv
from .maps import mix_maps, mix_maps_backward
from .stencil import conv_maps, conv_maps_kernel_grad

# Elements of one float32 [B, H, rows, N] map block (512 MB). Each block costs a few dozen launches and their
# host time: on the H200 at 8k (results/perf/map_block_sweep.json) 2^25, 2^26, 2^27, 2^28 took D 117, 69,
# 55, 54 ms and C 286, 200, 174, 168 ms, at D 1.1, 1.7, 3.0, 5.6 GB and C 1.3, 2.1, 3.6, 6.7 GB of peak memory.
BLOCK_ELEMENTS = 1 << 27
MIN_BLOCK_ROWS = 16
# The map kernels' tile products (maps.DOT_PRECISIONS) for float16/bfloat16 inputs; float32 inputs get "ieee".
# On the H200 at 8k (results/perf/map_kernels_sweep.json) "tf32x3" took C from 298 to 200 ms and D from 68
# to 63 ms against "ieee", and moved the bf16 output and gradients by 1e-4 of their RMS (bf16 rounding: 4e-3);
# "tf32" was faster still (176 and 53 ms) but moved them by 3.4e-3.
HALF_INPUT_PRECISION = "tf32x3"


def dot_precision(dtype: torch.dtype) -> str:
    """The map kernels' tl.dot input precision for inputs of `dtype`."""
    return "ieee" if dtype == torch.float32 else HALF_INPUT_PRECISION


def default_block_rows(batch: int, n_heads: int, seq_len: int) -> int:
    """Query rows per block so that one [B, H, rows, N] map holds about BLOCK_ELEMENTS elements."""
    return min(seq_len, max(MIN_BLOCK_ROWS, BLOCK_ELEMENTS // (batch * n_heads * seq_len)))


def matmul_float32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [B, H, m, k] @ b [B, H, k, n] -> [B, H, m, n] float32, accumulated in float32.

    Half-precision CUDA operands go through cuBLAS's half GEMM with a float32 output (no rounding of the
    result); others are computed in float32."""
    if a.is_cuda and a.dtype in (torch.float16, torch.bfloat16):
        out = torch.bmm(a.flatten(0, 1), b.flatten(0, 1), out_dtype=torch.float32)
        return out.view(*a.shape[:2], *out.shape[1:])
    return torch.matmul(a.float(), b.float())


@dataclass
class BlockMaps:
    """One block's maps [B, H, R, M] (rows: queries row_start …; columns: keys 0 … M-1). Only `weights` is kept
    for the forward; the backward also keeps the inputs of each step it differentiates (None when unused)."""

    weights: torch.Tensor  # the final weights, in the GEMM operand dtype
    probs: torch.Tensor | None = None  # the softmax, float32
    conv_pre_input: torch.Tensor | None = None  # the scores with zeros at future keys (kernel_pre only)
    mix_pre_input: torch.Tensor | None = None  # head_mix_pre's input (head_mix_pre only)
    mix_post_input: torch.Tensor | None = None  # head_mix_post's input (head_mix_post only)


def block_maps(q_rows: torch.Tensor, keys: torch.Tensor, row_start: int, params: tuple, scale: float,
               keep: bool) -> BlockMaps:
    """Spec §1's weights for queries row_start … row_start+R-1 over keys 0 … M-1.

    q_rows: [B, H, R, d]; keys: [B, H, M, d] in q's dtype; params: (kernel_pre, kernel_post, head_mix_pre,
    head_mix_post), float32 or None, and scale, as `fold_scale` returns them. keep: also return what the
    backward differentiates through.
    """
    kernel_pre, kernel_post, mix_pre, mix_post = params
    # the mixing kernel writes the softmax's mask itself: without a pre-softmax conv, no mask is built
    needs_mask = kernel_pre is not None or mix_pre is None
    future = causal_future(q_rows.shape[2], keys.shape[2], row_start, q_rows.device) if needs_mask else None
    precision = dot_precision(q_rows.dtype)
    maps = BlockMaps(weights=None)
    scores = matmul_float32(q_rows, keys.transpose(-1, -2))
    if scale != 1.0:
        scores.mul_(scale)
    if kernel_pre is not None:
        maps.conv_pre_input = scores.masked_fill_(future, 0.0)
        scores = conv_maps(scores, kernel_pre)
    if mix_pre is not None:
        maps.mix_pre_input = scores
        logits = mix_maps(scores, mix_pre, row_start, fill=float("-inf"), precision=precision)
    else:
        logits = scores.masked_fill_(future, float("-inf"))
    del scores
    probs = torch.softmax(logits, dim=-1)
    del logits
    weights = conv_maps(probs, kernel_post, row_start=row_start) if kernel_post is not None else probs
    if mix_post is not None:
        maps.mix_post_input = weights
        weights = mix_maps(weights, mix_post, out_dtype=q_rows.dtype, precision=precision)
    maps.weights = weights.to(q_rows.dtype)
    if keep:
        maps.probs = probs
    else:
        maps.conv_pre_input = maps.mix_pre_input = maps.mix_post_input = None
    return maps


def block_backward(maps: BlockMaps, d_out_rows: torch.Tensor, q_rows: torch.Tensor, keys: torch.Tensor,
                   values: torch.Tensor, row_start: int, params: tuple, scale: float, grads: dict) -> None:
    """Back-propagate the block's output rows (the last d_out_rows.shape[2] of its R rows) through its maps,
    adding into grads: "q" [B, H, R, d], "k" and "v" [B, H, M, d] (the block's slices, float32), and the
    float32 gradients of the params present, keyed "kernel_pre" … "head_mix_post". Consumes maps."""
    kernel_pre, kernel_post, mix_pre, mix_post = params
    rows, cols = q_rows.shape[2], keys.shape[2]
    halo = rows - d_out_rows.shape[2]
    precision = dot_precision(q_rows.dtype)
    grads["v"] += matmul_float32(maps.weights[:, :, halo:].transpose(-1, -2), d_out_rows)
    maps.weights = None
    # zero output gradients for the halo rows: a few more GEMM rows instead of a padded copy of the map
    d_weights = matmul_float32(F.pad(d_out_rows, (0, 0, halo, 0)) if halo else d_out_rows, values.transpose(-1, -2))
    if mix_post is not None:
        d_weights, d_mix = mix_maps_backward(maps.mix_post_input, d_weights, mix_post, row_start,
                                             zero_future=kernel_post is not None, precision=precision)
        grads["head_mix_post"] += d_mix
        maps.mix_post_input = None
    elif kernel_post is not None:
        d_weights.masked_fill_(causal_future(rows, cols, row_start, q_rows.device), 0.0)
    if kernel_post is not None:
        grads["kernel_post"] += conv_maps_kernel_grad(maps.probs, d_weights, kernel_post, precision)
        d_weights = conv_maps(d_weights, kernel_post, adjoint=True)
    d_logits = torch._softmax_backward_data(d_weights, maps.probs, -1, torch.float32)
    del d_weights
    maps.probs = None
    if mix_pre is not None:  # without a convolution after it, its gradient is the scores', in the GEMM dtype
        d_logits, d_mix = mix_maps_backward(maps.mix_pre_input, d_logits, mix_pre, row_start,
                                            out_dtype=torch.float32 if kernel_pre is not None else q_rows.dtype,
                                            precision=precision)
        grads["head_mix_pre"] += d_mix
        maps.mix_pre_input = None
    if kernel_pre is not None:
        grads["kernel_pre"] += conv_maps_kernel_grad(maps.conv_pre_input, d_logits, kernel_pre, precision)
        maps.conv_pre_input = None
        d_logits = conv_maps(d_logits, kernel_pre, adjoint=True, row_start=row_start)
    d_scores = d_logits.to(q_rows.dtype)
    del d_logits
    d_q, d_k = matmul_float32(d_scores, keys), matmul_float32(d_scores.transpose(-1, -2), q_rows)
    grads["q"] += d_q if scale == 1.0 else d_q.mul_(scale)
    grads["k"] += d_k if scale == 1.0 else d_k.mul_(scale)


PARAM_NAMES = ("kernel_pre", "kernel_post", "head_mix_pre", "head_mix_post")


def fold_scale(given: tuple, scale: float) -> tuple[tuple, int | None, float]:
    """Float32 kernels and mixers with the logit scale folded into the first pre-softmax one (both are linear in
    the scores, so this saves a pass over every map): (params, the index of the scaled one or None, the scale
    left for the scores: 1.0 when folded)."""
    params = [None if p is None else p.float().contiguous() for p in given]
    for index in (0, 2):  # kernel_pre, then head_mix_pre
        if params[index] is not None:
            params[index] = params[index] * scale
            return tuple(params), index, 1.0
    return tuple(params), None, scale


class BlockedMapsMTA(torch.autograd.Function):
    """Exact causal MTA over query blocks of materialised maps, backward written out (module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, kernel_pre, kernel_post, head_mix_pre, head_mix_post, scale, block_rows):
        given = (kernel_pre, kernel_post, head_mix_pre, head_mix_post)
        params, _, scale_left = fold_scale(given, scale)
        keys, values = expand_kv(k, q.shape[1]), expand_kv(v, q.shape[1])
        out = q.new_empty(q.shape[:3] + v.shape[3:])
        for start, end, row_start in block_bounds(q.shape[2], block_rows, halo_rows(kernel_pre, kernel_post)):
            weights = block_maps(q[:, :, row_start:end], keys[:, :, :end], row_start, params, scale_left,
                                 keep=False).weights
            out[:, :, start:end] = matmul_float32(weights[:, :, start - row_start:], values[:, :, :end])
        ctx.save_for_backward(q, k, v, *given)
        ctx.config = (scale, block_rows)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, *given = ctx.saved_tensors
        scale, block_rows = ctx.config
        params, scaled, scale_left = fold_scale(given, scale)
        keys, values = expand_kv(k, q.shape[1]), expand_kv(v, q.shape[1])
        grad_out = grad_out.to(q.dtype)
        totals = {"q": torch.zeros(q.shape, dtype=torch.float32, device=q.device),
                  "k": torch.zeros(keys.shape, dtype=torch.float32, device=q.device),
                  "v": torch.zeros(values.shape, dtype=torch.float32, device=q.device)}
        totals.update({name: torch.zeros_like(p) for name, p in zip(PARAM_NAMES, params) if p is not None})
        for start, end, row_start in block_bounds(q.shape[2], block_rows, halo_rows(*given[:2])):
            grads = {"q": totals["q"][:, :, row_start:end], "k": totals["k"][:, :, :end],
                     "v": totals["v"][:, :, :end]}
            grads.update({name: totals[name] for name in PARAM_NAMES if name in totals})
            maps = block_maps(q[:, :, row_start:end], keys[:, :, :end], row_start, params, scale_left, keep=True)
            block_backward(maps, grad_out[:, :, start:end], q[:, :, row_start:end], keys[:, :, :end],
                           values[:, :, :end], row_start, params, scale_left, grads)
        d_k, d_v = (totals[name].view(*t.shape[:2], -1, *t.shape[2:]).sum(2) for name, t in (("k", k), ("v", v)))
        if scaled is not None:  # the chain rule through params[scaled] = given[scaled] · scale
            totals[PARAM_NAMES[scaled]] *= scale
        param_grads = [None if p is None else totals[name].to(p.dtype) for name, p in zip(PARAM_NAMES, given)]
        return totals["q"].to(q.dtype), d_k.to(k.dtype), d_v.to(v.dtype), *param_grads, None, None


def blocked_maps_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, kernel_pre=None, kernel_post=None,
                           head_mix_pre=None, head_mix_post=None, scale: float,
                           block_rows: int | None = None) -> torch.Tensor:
    """Causal MTA (docs/spec.md §1) through map blocks (module docstring); arguments as validated by `mta_attention`.

    q: [B, H, N, d]; k, v: [B, H_kv, N, d] (float16, bfloat16 or float32); kernels [H, c_q, c_k] and mixers
    [G, c, c] in q's dtype or float32, or None. block_rows: query rows per block (default `default_block_rows`).
    Returns [B, H, N, d_v] in q's dtype.
    """
    if block_rows is None:
        block_rows = default_block_rows(q.shape[0], q.shape[1], q.shape[2])
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    return BlockedMapsMTA.apply(q, k, v, kernel_pre, kernel_post, head_mix_pre, head_mix_post, scale, block_rows)
