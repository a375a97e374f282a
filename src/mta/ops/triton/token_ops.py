"""Fused token-axis ops of the glue (`primitives` has their definitions and oracles): `token_conv` builds the
conv operands K̃ and Ṽ, `diagonal_dots` the past q·k products that the pre-softmax band scores read.

Each reads its [B, H, N, d] inputs once in their own dtype (row-major, contiguous), accumulates in float32 and
writes its result once: no float32 copies, permutes or padding around it. Programs cover BLOCK_R tokens × all
d columns of one head; taps and heads are loops, whose shifted reloads of the same rows hit the cache. The
backward of `token_conv` writes per-tile partial sums of the weight gradient (deterministic, no atomics), which
torch adds up.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreter  # noqa: F401  (patches Triton's interpreter before any launch)

BLOCK_R = 64  # tokens per program


def _block_e(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


# Loads are written out in each kernel rather than through a helper: the interpreter re-patches Triton on every
# nested jit call, which in these inner loops would dominate the CPU tests. Each `tl.load` reads a [BLOCK_R,
# BLOCK_E] tile of rows `r` (zeros outside [0, N)) and the d columns (zeros past d), converted to float32.


@triton.jit
def _conv_kernel(X, WEIGHT, OUT, N, D, H, G, C_Q, C_K, BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (g source heads i, token tiles, B·H): OUT[bh, r, (i, a, :)] = Σ_t w[h, i, a, t] X[src, r+t-hk] for every
    a (the c_k shifted tiles of X, loaded for a = 0, are cache hits for the other taps)."""
    i = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    bh = tl.program_id(2).to(tl.int64)
    h = bh % H
    X += (bh - h % G + i) * N * D  # source head: first head of the group + i
    dims = tl.arange(0, BLOCK_E)
    in_d = dims[None, :] < D
    width = G * C_Q * D
    first_row = rows - (C_K - 1) // 2
    for a in range(C_Q):
        col = i * C_Q + a
        taps = WEIGHT + (h * G * C_Q + col) * C_K
        acc = tl.zeros([BLOCK_R, BLOCK_E], dtype=tl.float32)
        for t in range(C_K):
            w = tl.load(taps + t)
            r = first_row + t
            acc += w * tl.load(X + r[:, None] * D + dims[None, :], mask=((r >= 0) & (r < N))[:, None] & in_d,
                               other=0.0).to(tl.float32)
        tl.store(OUT + bh * N * width + rows[:, None] * width + col * D + dims[None, :],
                 acc.to(OUT.dtype.element_ty), mask=(rows[:, None] < N) & in_d)


@triton.jit
def _conv_input_grad_kernel(DOUT, WEIGHT, DX, N, D, H, G, C_Q, C_K, BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (token tiles, B·H): DX[src, m] = Σ_{o, a, t} w[o, i, a, t] DOUT[o, m-t+hk, (i, a)] over the heads o of
    src's group, i = src's place in it."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    src = tl.program_id(1).to(tl.int64)
    i = (src % H) % G
    first = src - i  # (batch, head) index of the group's first head
    dims = tl.arange(0, BLOCK_E)
    in_d = dims[None, :] < D
    width = G * C_Q * D
    last_row = rows + (C_K - 1) // 2
    acc = tl.zeros([BLOCK_R, BLOCK_E], dtype=tl.float32)
    for o in range(G):
        for a in range(C_Q):
            col = i * C_Q + a
            grads = DOUT + (first + o) * N * width + col * D
            taps = WEIGHT + (((first + o) % H) * G * C_Q + col) * C_K
            for t in range(C_K):
                w = tl.load(taps + t)
                r = last_row - t
                acc += w * tl.load(grads + r[:, None] * width + dims[None, :],
                                   mask=((r >= 0) & (r < N))[:, None] & in_d, other=0.0).to(tl.float32)
    tl.store(DX + src * N * D + rows[:, None] * D + dims[None, :], acc.to(DX.dtype.element_ty),
             mask=(rows[:, None] < N) & in_d)


@triton.jit
def _conv_weight_grad_kernel(DOUT, X, PARTIAL, N, D, H, G, C_Q, C_K, BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (g source heads i, token tiles, B·H): PARTIAL[bh, tile, (i, a), t] = Σ over the tile's tokens r and
    dims of DOUT[bh, r, (i, a)] · X[src, r+t-hk], for every a."""
    i = tl.program_id(0)
    tile = tl.program_id(1)
    rows = tile * BLOCK_R + tl.arange(0, BLOCK_R)
    bh = tl.program_id(2).to(tl.int64)
    X += (bh - (bh % H) % G + i) * N * D
    dims = tl.arange(0, BLOCK_E)
    in_d = dims[None, :] < D
    width = G * C_Q * D
    first_row = rows - (C_K - 1) // 2
    for a in range(C_Q):
        col = i * C_Q + a
        grad = tl.load(DOUT + bh * N * width + rows[:, None] * width + col * D + dims[None, :],
                       mask=(rows[:, None] < N) & in_d, other=0.0).to(tl.float32)
        partial = PARTIAL + ((bh * tl.num_programs(1) + tile) * G * C_Q + col) * C_K
        for t in range(C_K):
            r = first_row + t
            x = tl.load(X + r[:, None] * D + dims[None, :], mask=((r >= 0) & (r < N))[:, None] & in_d,
                        other=0.0).to(tl.float32)
            tl.store(partial + t, tl.sum(tl.sum(grad * x, 1), 0))


@triton.jit
def _dots_kernel(Q, K, OUT, N, D, W, BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (token tiles, B·H): OUT[bh, m, e] = Q[m] · K[m-e] for e = 0 … W-1 (0 where m-e < 0)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    bh = tl.program_id(1).to(tl.int64)
    Q += bh * N * D
    K += bh * N * D
    dims = tl.arange(0, BLOCK_E)
    in_d = dims[None, :] < D
    q = tl.load(Q + rows[:, None] * D + dims[None, :], mask=(rows[:, None] < N) & in_d, other=0.0).to(tl.float32)
    for e in range(0, W):
        r = rows - e
        k = tl.load(K + r[:, None] * D + dims[None, :], mask=((r >= 0) & (r < N))[:, None] & in_d,
                    other=0.0).to(tl.float32)
        tl.store(OUT + bh * N * W + rows * W + e, tl.sum(q * k, 1), mask=rows < N)


@triton.jit
def _dots_grad_kernel(Q, K, DOUT, DQ, DK, N, D, W, BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (token tiles, B·H): DQ[m] = Σ_e DOUT[m, e] K[m-e], DK[m] = Σ_e DOUT[m+e, e] Q[m+e]."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    bh = tl.program_id(1).to(tl.int64)
    Q += bh * N * D
    K += bh * N * D
    DOUT += bh * N * W
    dims = tl.arange(0, BLOCK_E)
    in_d = dims[None, :] < D
    dq = tl.zeros([BLOCK_R, BLOCK_E], dtype=tl.float32)
    dk = tl.zeros([BLOCK_R, BLOCK_E], dtype=tl.float32)
    for e in range(0, W):
        behind, ahead = rows - e, rows + e
        in_behind, in_ahead = (behind >= 0) & (rows < N), ahead < N
        g_row = tl.load(DOUT + rows * W + e, mask=in_behind, other=0.0)
        k = tl.load(K + behind[:, None] * D + dims[None, :], mask=in_behind[:, None] & in_d, other=0.0)
        dq += g_row[:, None] * k.to(tl.float32)
        g_ahead = tl.load(DOUT + ahead * W + e, mask=in_ahead, other=0.0)
        q = tl.load(Q + ahead[:, None] * D + dims[None, :], mask=in_ahead[:, None] & in_d, other=0.0)
        dk += g_ahead[:, None] * q.to(tl.float32)
    mask = (rows[:, None] < N) & in_d
    offsets = bh * N * D + rows[:, None] * D + dims[None, :]
    tl.store(DQ + offsets, dq.to(DQ.dtype.element_ty), mask=mask)
    tl.store(DK + offsets, dk.to(DK.dtype.element_ty), mask=mask)


class TokenConv(torch.autograd.Function):
    """x [B, H, N, d], weight [H, g, c_q, c_k] float32 -> [B, H, N, g·c_q·d] in dtype (`primitives.token_conv_torch`)."""

    @staticmethod
    def forward(ctx, x, weight, dtype):
        batch, n_heads, seq_len, head_dim = x.shape
        size, c_q, c_k = weight.shape[1:]
        out = torch.empty((batch, n_heads, seq_len, size * c_q * head_dim), dtype=dtype, device=x.device)
        grid = (size, triton.cdiv(seq_len, BLOCK_R), batch * n_heads)
        _conv_kernel[grid](x, weight, out, seq_len, head_dim, n_heads, size, c_q, c_k,
                           BLOCK_R=BLOCK_R, BLOCK_E=_block_e(head_dim))
        ctx.save_for_backward(x, weight)
        return out

    @staticmethod
    def backward(ctx, d_out):
        x, weight = ctx.saved_tensors
        batch, n_heads, seq_len, head_dim = x.shape
        size, c_q, c_k = weight.shape[1:]
        d_out = d_out.contiguous()
        tiles = triton.cdiv(seq_len, BLOCK_R)
        args = (seq_len, head_dim, n_heads, size, c_q, c_k)
        meta = dict(BLOCK_R=BLOCK_R, BLOCK_E=_block_e(head_dim))
        dx = torch.empty_like(x)
        _conv_input_grad_kernel[(tiles, batch * n_heads)](d_out, weight, dx, *args, **meta)
        partial = torch.empty((batch, n_heads, tiles, size * c_q, c_k), dtype=torch.float32, device=x.device)
        _conv_weight_grad_kernel[(size, tiles, batch * n_heads)](d_out, x, partial, *args, **meta)
        return dx, partial.sum((0, 2)).view(weight.shape).to(weight.dtype), None


class DiagonalDots(torch.autograd.Function):
    """q, k [B, H, N, d] (any of fp16/bf16/fp32 each) -> float32 [B, H, N, width] (`primitives.diagonal_dots_torch`)."""

    @staticmethod
    def forward(ctx, q, k, width):
        batch, n_heads, seq_len, head_dim = q.shape
        out = torch.empty((batch, n_heads, seq_len, width), dtype=torch.float32, device=q.device)
        grid = (triton.cdiv(seq_len, BLOCK_R), batch * n_heads)
        _dots_kernel[grid](q, k, out, seq_len, head_dim, width, BLOCK_R=BLOCK_R, BLOCK_E=_block_e(head_dim))
        ctx.save_for_backward(q, k)
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k = ctx.saved_tensors
        batch, n_heads, seq_len, head_dim = q.shape
        dq, dk = torch.empty_like(q), torch.empty_like(k)
        grid = (triton.cdiv(seq_len, BLOCK_R), batch * n_heads)
        _dots_grad_kernel[grid](q, k, d_out.float().contiguous(), dq, dk, seq_len, head_dim, d_out.shape[-1],
                                BLOCK_R=BLOCK_R, BLOCK_E=_block_e(head_dim))
        return dq, dk, None


def token_conv(x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Fused `primitives.token_conv_torch`: x [B, H, N, d] and dtype among fp16/bf16/fp32, weight [H, g, c_q, c_k]."""
    return TokenConv.apply(x.contiguous(), weight.float().contiguous(), dtype)


def diagonal_dots(q: torch.Tensor, k: torch.Tensor, width: int) -> torch.Tensor:
    """Fused `primitives.diagonal_dots_torch`: q, k [B, H, N, d] -> float32 [B, H, N, width],
    dots[m, e] = q[m] · k[m-e] (zero where m-e < 0)."""
    return DiagonalDots.apply(q.contiguous(), k.contiguous(), width)
