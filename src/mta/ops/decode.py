"""Incremental Multi-Token Attention: the rows of new queries from a cache of the past (docs/spec.md §6).

Decoding appends T tokens at positions L-T … L-1 to a sequence whose keys and values are cached. Their rows of
docs/spec.md §1's map need, besides every key and value:
  - for a pre-softmax kernel of c_q rows, the logits of the c_q - 1 rows above them, i.e. the queries of
    positions L-T-(c_q-1) … L-T-1 (a row's logits against keys up to itself are final once it exists;
    Mask0 zeroes the rest before the conv);
  - for a post-softmax kernel of c_q' rows, the softmax weights (after the pre-softmax steps) of the c_q' - 1
    rows above them: a row's weights over keys up to itself are final too, and zero beyond it.
So a step costs O(B·H·(c_q + T)·L·d) time and O(B·H·(c_q + T)·L) memory, and each row equals the row of the
full map (`mta_attention(..., backend="reference")`) up to floating-point rounding.

Left padding: `start[b]` is the index of row b's first real token. Positions before it are treated exactly
like positions before 0 in docs/spec.md §1: their logit rows and key columns are zero at the conv inputs, their keys
get no weight, and their weight rows are zero. A left-padded row therefore computes what the same tokens
compute unpadded (its RoPE positions must count from `start[b]`, which is the caller's part).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .reference import compute_dtype, expand_kv, head_mix
from .validation import check_kernel, check_mixer


class StepResult(NamedTuple):
    """out: [B, H, T, d_v] in q's dtype. queries: [B, H, c_q-1, d], the queries of the last c_q - 1 positions
    (None without a pre-softmax kernel of c_q > 1). weights: [B, H, c_q'-1, L], the post-softmax conv's input
    rows of the last c_q' - 1 positions over every key (None without a post-softmax kernel of c_q' > 1).
    Rows before position 0 are zeros. Pass queries and weights back as q_past and weights_past next step."""

    out: torch.Tensor
    queries: torch.Tensor | None
    weights: torch.Tensor | None


def mta_attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    q_past: torch.Tensor | None = None,
    weights_past: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    kernel_pre: torch.Tensor | None = None,
    kernel_post: torch.Tensor | None = None,
    head_mix_pre: torch.Tensor | None = None,
    head_mix_post: torch.Tensor | None = None,
    scale: float | None = None,
) -> StepResult:
    """The attention rows of the last T positions of a causal MTA sequence of L positions (module docstring).

    q: [B, H, T, d], the queries of positions L-T … L-1; k, v: [B, H_kv, L, d] and [B, H_kv, L, d_v], every
    position's key and value (after RoPE), H a multiple of H_kv.
    q_past: [B, H, c_q-1, d], the queries of positions L-T-(c_q-1) … L-T-1 (rows before position 0 are ignored);
        needed when kernel_pre has c_q > 1 and L > T (otherwise it may be None).
    weights_past: [B, H, c_q'-1, L-T], the rows of positions L-T-(c_q'-1) … L-T-1 that enter the post-softmax
        conv, as returned by the previous step; needed when kernel_post has c_q' > 1 and L > T.
    start: [B] integer, each row's first real position (left padding before it), in [0, L]; None: 0.
    kernel_pre, kernel_post, head_mix_pre, head_mix_post, scale: as `mta.ops.mta_attention` (kernels
        [H, c_q, c_k], mixers [G, c, c]).
    Dtypes as `mta.ops.mta_attention`: q, k, v and q_past float16, bfloat16, float32 or float64 alike; kernels and
    mixers in q's dtype or float32; weights_past any floating dtype (returned in the compute dtype); half
    precision is computed in float32.
    Returns a StepResult: out [B, H, T, d_v] in q's dtype, and the queries and weights to pass next step. No
    dropout: this is for inference.
    """
    batch, n_heads, new, head_dim = _check_step_inputs(q, k, v)
    total = k.shape[2]
    for name, kernel in (("kernel_pre", kernel_pre), ("kernel_post", kernel_post)):
        check_kernel(name, kernel, q)
    for name, mixer in (("head_mix_pre", head_mix_pre), ("head_mix_post", head_mix_post)):
        check_mixer(name, mixer, q)
    pre_rows = 0 if kernel_pre is None else kernel_pre.shape[1] - 1
    post_rows = 0 if kernel_post is None else kernel_post.shape[1] - 1
    q_past = _past("q_past", q_past, (batch, n_heads, pre_rows, head_dim), q, total - new, exact_dtype=True)
    weights_past = _past("weights_past", weights_past, (batch, n_heads, post_rows, total - new), q, total - new)
    start = _check_start(start, batch, q.device)
    scale = head_dim**-0.5 if scale is None else scale

    dtype = compute_dtype(q.dtype)
    keys = expand_kv(k, n_heads).to(dtype)
    values = expand_kv(v, n_heads).to(dtype)
    if pre_rows and q_past is None:  # the sequence starts with these queries: the rows above lie before 0
        q_past = q.new_zeros(batch, n_heads, pre_rows, head_dim)
    queries = torch.cat([q_past, q], dim=2) if pre_rows else q  # positions L-T-pre_rows … L-1
    scores = torch.matmul(queries.to(dtype), keys.transpose(-1, -2)) * scale
    allowed = visible_keys(total - new - pre_rows, queries.shape[2], total, start, q.device)  # [B|1, 1, pre_rows+T, L]
    if kernel_pre is not None:
        scores = query_key_conv_rows(scores.masked_fill(~allowed, 0.0), kernel_pre)
    allowed = allowed[:, :, pre_rows:]
    if head_mix_pre is not None:
        scores = head_mix(scores, head_mix_pre)
    # A padding row has no key to attend to: its softmax is 0/0, and its weights are defined as zeros.
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    if start is not None:  # without padding every new row sees a key
        weights = weights.masked_fill(~allowed.any(-1, True), 0)
    rows = weights
    if post_rows and weights_past is None:
        weights_past = weights.new_zeros(batch, n_heads, post_rows, total - new)
    if post_rows:
        past_rows = torch.nn.functional.pad(weights_past.to(dtype), (0, new))
        if start is not None or total - new < post_rows:  # rows before position 0 or in the padding are zeros
            past_valid = visible_keys(total - new - post_rows, post_rows, total, start, q.device).any(-1, True)
            past_rows = past_rows.masked_fill(~past_valid, 0.0)
        rows = torch.cat([past_rows, weights], dim=2)
    if kernel_post is not None:
        weights = query_key_conv_rows(rows, kernel_post).masked_fill(~allowed, 0.0)
    if head_mix_post is not None:
        weights = head_mix(weights, head_mix_post)
    out = torch.matmul(weights, values).to(q.dtype)
    return StepResult(out, queries[:, :, -pre_rows:] if pre_rows else None, rows[:, :, -post_rows:] if post_rows else None)


def query_key_conv_rows(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The last R - (c_q - 1) rows of `qk_conv(x, kernel)` (docs/spec.md §1's conv), from x [B, H, R, L] holding the
    c_q - 1 rows above them; kernel [H, c_q, c_k]. Returns [B, H, R - c_q + 1, L].

    Decoding grows L by one every step, and convolution libraries plan per shape (cuDNN, oneDNN), so this uses
    none: the c_q·c_k taps are one batched matmul over windows of c_q rows, Y[t, p, b] = Σ_a θ[a, b]·x[t+a, p]
    on keys zero-padded by (c_k-1)/2, then out[t, j] = Σ_b Y[t, j + b, b], a sum along a strided diagonal.
    """
    batch, n_heads, _, length = x.shape
    c_q, c_k = kernel.shape[1:]
    padded = torch.nn.functional.pad(x, ((c_k - 1) // 2, (c_k - 1) // 2))
    windows = padded.unfold(2, c_q, 1)  # [B, H, T, L + c_k - 1, c_q]: rows t … t + c_q - 1
    taps = torch.matmul(windows, kernel.to(x.dtype).unsqueeze(1)).contiguous()  # [B, H, T, L + c_k - 1, c_k]
    rows = taps.shape[2]
    stride = taps.stride()
    diagonal = taps.as_strided((batch, n_heads, rows, length, c_k), (*stride[:3], c_k, c_k + 1))
    return diagonal.sum(-1)


def visible_keys(first: int, rows: int, total: int, start: torch.Tensor | None,
                 device: torch.device | None = None) -> torch.Tensor:
    """Bool [B, 1, rows, total] ([1, 1, rows, total] for start None: no padding): key j is visible to the query
    at position first + r (start[b] <= j <= it). device: where to build it when start is None."""
    device = start.device if start is not None else device
    query = torch.arange(first, first + rows, device=device).view(1, 1, rows, 1)
    key = torch.arange(total, device=device).view(1, 1, 1, total)
    return key <= query if start is None else (key <= query) & (key >= start.view(-1, 1, 1, 1))


def _past(name: str, past: torch.Tensor | None, shape: tuple[int, ...], q: torch.Tensor, before: int,
          exact_dtype: bool = False):
    """Validate a cached tensor (with q's dtype if exact_dtype, else any floating dtype); None when no row of it
    is needed (no such kernel)."""
    if shape[2] == 0:
        if past is not None:
            raise ValueError(f"{name}: given, but no kernel reads rows above the new queries")
        return None
    if past is None:
        if before > 0:
            raise ValueError(f"{name}: needed for the {before} positions before the new queries, got None")
        return None
    if not isinstance(past, torch.Tensor) or tuple(past.shape) != shape:
        got = tuple(past.shape) if isinstance(past, torch.Tensor) else type(past).__name__
        raise ValueError(f"{name}: expected shape {shape}, got {got}")
    if past.device != q.device:
        raise ValueError(f"{name}: must be on q's device {q.device}, got {past.device}")
    if (past.dtype != q.dtype) if exact_dtype else not past.dtype.is_floating_point:
        raise ValueError(f"{name}: expected dtype {q.dtype if exact_dtype else 'floating point'}, got {past.dtype}")
    return past


def _check_step_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int]:
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name}: expected a tensor of shape [B, H, N, d], got {got}")
    for name, tensor in (("k", k), ("v", v)):
        if tensor.dtype != q.dtype or tensor.device != q.device:
            raise ValueError(
                f"{name}: must match q's dtype and device ({q.dtype}, {q.device}), got ({tensor.dtype}, {tensor.device})"
            )
    batch, n_heads, new, head_dim = q.shape
    if n_heads == 0 or head_dim == 0:
        raise ValueError(f"q: expected at least one head and a head dim d >= 1, got {tuple(q.shape)}")
    if k.shape[0] != batch or k.shape[3] != head_dim or k.shape[2] < new or new == 0:
        raise ValueError(f"k: expected [B={batch}, H_kv, L >= T={new} >= 1, d={head_dim}], got {tuple(k.shape)}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v: expected [B, H_kv, L] = {tuple(k.shape[:3])} leading, got {tuple(v.shape)}")
    if k.shape[1] == 0 or n_heads % k.shape[1]:
        raise ValueError(f"k: its {k.shape[1]} heads must divide q's {n_heads} heads")
    return batch, n_heads, new, head_dim


def _check_start(start: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor | None:
    """Shape, dtype and device only: checking the values would synchronise with the device at every step."""
    if start is None:
        return None
    if not isinstance(start, torch.Tensor) or start.shape != (batch,) or start.dtype.is_floating_point:
        got = tuple(start.shape) if isinstance(start, torch.Tensor) else type(start).__name__
        raise ValueError(f"start: expected an integer tensor of shape [B={batch}], got {got}")
    if start.device != device:
        raise ValueError(f"start: must be on q's device {device}, got {start.device}")
    return start
