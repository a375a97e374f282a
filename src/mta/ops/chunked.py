"""Chunked Multi-Token Attention in pure PyTorch: O(block × N) scores in memory, forward and backward.

Queries are processed in blocks [i0, i1). The query-direction convolutions make row i depend on rows
i-(c_q-1)…i of the conv input, so each block also recomputes `halo` rows above it
(c_q_pre - 1 + c_q_post - 1). Those rows only feed other rows' convolutions; their own outputs are dropped.
Causality limits a block to keys [0, i1): every later key is masked (zero for Mask0, -inf for softmax,
zero after the post conv), so the key-axis convolution reads the same zeros it would read in the full map.

The backward is a custom autograd.Function that recomputes one block at a time and back-propagates through
that block only, so the backward keeps the same O(block × N) bound; only q, k, v and the small kernels and
mixers are saved between forward and backward. Under create_graph=True (double backward) each block's
recomputation stays in the graph, so the gradients are differentiable; that graph holds every block's
intermediates, O(N²) memory like the reference.
"""

from __future__ import annotations

import torch

from .conv import qk_conv_dispatch
from .reference import attention_weights, causal_future, compute_dtype, expand_kv

SCORE_ELEMENTS_PER_BLOCK = 1 << 24
MIN_BLOCK, MAX_BLOCK = 32, 512


def default_block_size(batch: int, n_heads: int, seq_len: int) -> int:
    """Query rows per block so that one [B, H, rows, N] score tensor holds about 2^24 elements."""
    rows = SCORE_ELEMENTS_PER_BLOCK // max(1, batch * n_heads * seq_len)
    return max(MIN_BLOCK, min(MAX_BLOCK, rows))


def halo_rows(kernel_pre: torch.Tensor | None, kernel_post: torch.Tensor | None) -> int:
    """Rows above a block that its query-direction convolutions read."""
    return sum(kernel.shape[1] - 1 for kernel in (kernel_pre, kernel_post) if kernel is not None)


def block_bounds(seq_len: int, block_rows: int, halo: int):
    """(start, end, row_start) of each block: output rows [start, end), computed from row row_start = start - halo
    (at least 0) on."""
    for start in range(0, seq_len, block_rows):
        yield start, min(start + block_rows, seq_len), max(0, start - halo)


def dropout_keep_mask(
    shape: tuple[int, ...], dropout_p: float, seed: int, block_start: int, device: torch.device
) -> torch.Tensor:
    """Bool keep-mask for the block starting at query `block_start`; the same seed gives the same mask."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed + block_start)
    return torch.rand(shape, generator=generator, device=device) >= dropout_p


def block_output(
    q_rows: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    params: tuple[torch.Tensor | None, ...],
    row_start: int,
    block_start: int,
    scale: float,
    dropout_p: float,
    dropout_seed: int,
) -> torch.Tensor:
    """Output rows [block_start, row_start + R) of one block, in the compute dtype.

    q_rows: [B, H, R, d], queries row_start … row_start+R-1 (the halo then the block);
    keys, values: [B, H, M, d] in the compute dtype, heads expanded, with M = row_start + R (every key the block
    can see); params: (kernel_pre, kernel_post, head_mix_pre, head_mix_post).
    Returns [B, H, R - (block_start - row_start), d_v].
    """
    rows = q_rows.shape[2]
    scores = torch.matmul(q_rows.to(keys.dtype), keys.transpose(-1, -2)) * scale
    future = causal_future(rows, keys.shape[2], row_start, q_rows.device)
    weights = attention_weights(scores, future, *params, qk_conv_dispatch)[:, :, block_start - row_start :]
    if dropout_p > 0.0:
        keep = dropout_keep_mask(weights.shape, dropout_p, dropout_seed, block_start, weights.device)
        weights = weights * keep / (1.0 - dropout_p)
    return torch.matmul(weights, values)


def compute_keys_values(k: torch.Tensor, v: torch.Tensor, n_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k, v [B, H_kv, N, d] -> [B, H, N, d] in the compute dtype, made once per call so that every block slices them."""
    dtype = compute_dtype(k.dtype)
    return expand_kv(k, n_heads).to(dtype), expand_kv(v, n_heads).to(dtype)


class ChunkedMTA(torch.autograd.Function):
    """Exact causal MTA over query blocks; the backward recomputes each block (module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, kernel_pre, kernel_post, head_mix_pre, head_mix_post, scale, dropout_p, dropout_seed, block_size):
        params = (kernel_pre, kernel_post, head_mix_pre, head_mix_post)
        halo, seq_len = halo_rows(kernel_pre, kernel_post), q.shape[2]
        keys, values = compute_keys_values(k, v, q.shape[1])
        out = q.new_empty(q.shape[:3] + v.shape[3:])
        for start, end, row_start in block_bounds(seq_len, block_size, halo):
            block = block_output(
                q[:, :, row_start:end], keys[:, :, :end], values[:, :, :end], params,
                row_start, start, scale, dropout_p, dropout_seed,
            )
            out[:, :, start:end] = block.to(out.dtype)
        ctx.save_for_backward(q, k, v, *params)
        ctx.config = (scale, dropout_p, dropout_seed, block_size, halo)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, *params = ctx.saved_tensors
        scale, dropout_p, dropout_seed, block_size, halo = ctx.config
        dtype = compute_dtype(q.dtype)
        keys, values = compute_keys_values(k, v, q.shape[1])
        inputs = (q, keys, values, *params)  # the key and value gradients are summed over expanded heads at the end
        needs = ctx.needs_input_grad[: len(inputs)]
        grads = [
            torch.zeros(t.shape, dtype=dtype, device=t.device) if t is not None and need else None
            for t, need in zip(inputs, needs)
        ]
        seq_len = q.shape[2]
        # Double backward: grad mode is on here, and the blocks are recomputed from the saved tensors themselves
        # (not detached copies), so every gradient keeps its graph back to the inputs and grad_out.
        create_graph = torch.is_grad_enabled()
        for start, end, row_start in block_bounds(seq_len, block_size, halo):
            with torch.enable_grad():
                sources = (q[:, :, row_start:end], keys[:, :, :end], values[:, :, :end], *params)
                leaves = [
                    None if t is None else t if create_graph and need else t.detach().requires_grad_(need)
                    for t, need in zip(sources, needs)
                ]
                block = block_output(
                    leaves[0], leaves[1], leaves[2], tuple(leaves[3:]),
                    row_start, start, scale, dropout_p, dropout_seed,
                )
                wanted = [i for i, (leaf, need) in enumerate(zip(leaves, needs)) if leaf is not None and need]
                block_grads = torch.autograd.grad(
                    block, [leaves[i] for i in wanted], grad_out[:, :, start:end].to(block.dtype), allow_unused=True,
                    create_graph=create_graph,
                )
            for i, grad in zip(wanted, block_grads):
                if grad is None:
                    continue
                if i == 0:
                    grads[0][:, :, row_start:end] += grad
                elif i in (1, 2):
                    grads[i][:, :, :end] += grad
                else:
                    grads[i] += grad
        for i, kv in ((1, k), (2, v)):
            if grads[i] is not None:
                repeats = q.shape[1] // kv.shape[1]
                grads[i] = grads[i].view(*kv.shape[:2], repeats, *kv.shape[2:]).sum(2)  # [B, H_kv, N, d]
        result = [
            grad.to(t.dtype) if grad is not None and need else None
            for grad, t, need in zip(grads, (q, k, v, *params), needs)
        ]
        return (*result, None, None, None, None)


def chunked_attention(
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
    block_size: int | None = None,
) -> torch.Tensor:
    """Causal MTA over query blocks (module docstring). Inputs are validated by `mta_attention`.

    q: [B, H, N, d]; k, v: [B, H_kv, N, d]. block_size: query rows per block (default: `default_block_size`).
    Returns [B, H, N, d_v] in q's dtype. With dropout, the mask is drawn from a seed taken from torch's
    global generator, so `torch.manual_seed` makes it reproducible; it differs from the reference's mask.
    """
    batch, n_heads, seq_len = q.shape[:3]
    if block_size is None:
        block_size = default_block_size(batch, n_heads, seq_len)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    dropout_seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0.0 else 0
    return ChunkedMTA.apply(
        q, k, v, kernel_pre, kernel_post, head_mix_pre, head_mix_post, scale, dropout_p, dropout_seed, block_size
    )
