"""Fused `primitives.probability_band_torch`: the band of the banded kernel's probabilities near the diagonal,

    band[r, t] = exp(qw_r · kw_{r-t} + bias[r, t] - lse[r])  for t < width, r - t >= 0 (else 0),

with qw = query_window(q, taps, group) read from q in place (`kernels._query_window_tile`), which the
post-softmax conv's correction reads (glue module doc). Row-wise dot products over Dqk = group·taps·d columns,
accumulated in float32 on CUDA cores: each program takes BLOCK_R rows of one head and loops over the diagonals, the
query window's pieces and BLOCK_E columns of each; no [N, Dqk] copy of q, qw or kw is made, forward or backward.

Backward, with dl = band ⊙ d_band (the gradient of the logits):
    dkw[j] = Σ_t dl[j+t, t] qw[j+t],   dq from d(qw)[r] = Σ_t dl[r, t] kw[r-t],   dbias = dl,   dlse = -Σ_t dl.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from . import interpreter  # noqa: F401  (patches Triton's interpreter before any launch)
from .kernels import _query_window_tile

BLOCK_R = 32  # rows per program


def _block_e(head_dim: int) -> int:
    return min(64, max(16, triton.next_power_of_2(head_dim)))


@triton.jit
def _band_kernel(Q, KW, BIAS, LSE, BAND, N, HD, TAPS, PIECES, H, GROUP, WIDTH, BIAS_W,
                 BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (row tiles, B·H): BAND[bh, r, t] for every t < WIDTH."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    bh = tl.program_id(1).to(tl.int64)
    Q += (bh - (bh % H) % GROUP) * N * HD  # the first head of bh's group
    dqk = PIECES * HD
    KW += bh * N * dqk
    sub = tl.cdiv(HD, BLOCK_E)
    lse = tl.load(LSE + bh * N + rows, mask=rows < N, other=0.0)
    for t in range(0, WIDTH):
        keys = rows - t
        acc = tl.zeros([BLOCK_R, BLOCK_E], dtype=tl.float32)
        for step in range(0, PIECES * sub):
            piece = step // sub
            dims = (step - piece * sub) * BLOCK_E + tl.arange(0, BLOCK_E)
            q = _query_window_tile(Q, rows, piece, dims, N, HD, TAPS)
            k = tl.load(KW + keys[:, None] * dqk + piece * HD + dims[None, :],
                        mask=((keys >= 0) & (rows < N))[:, None] & (dims[None, :] < HD), other=0.0)
            acc += q.to(tl.float32) * k.to(tl.float32)
        logit = tl.sum(acc, 1) - lse
        if t < BIAS_W:
            logit += tl.load(BIAS + (bh * N + rows) * BIAS_W + t, mask=(rows < N) & (keys >= 0), other=0.0)
        band = tl.where(keys >= 0, tl.exp(logit), 0.0)
        tl.store(BAND + (bh * N + rows) * WIDTH + t, band, mask=rows < N)


@triton.jit
def _band_key_grad_kernel(Q, DL, DKW, N, HD, TAPS, PIECES, H, GROUP, WIDTH,
                          BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (row tiles, column steps, B·H): DKW[bh, j, chunk] = Σ_t DL[bh, j+t, t] · qw[j+t, chunk]."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    step = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    sub = tl.cdiv(HD, BLOCK_E)
    piece = step // sub
    dims = (step - piece * sub) * BLOCK_E + tl.arange(0, BLOCK_E)
    Q += (bh - (bh % H) % GROUP) * N * HD  # the first head of bh's group
    acc = tl.zeros([BLOCK_R, BLOCK_E], dtype=tl.float32)
    for t in range(0, WIDTH):
        queries = rows + t
        dl = tl.load(DL + (bh * N + queries) * WIDTH + t, mask=queries < N, other=0.0)  # 0 past the last query
        acc += dl[:, None] * _query_window_tile(Q, queries, piece, dims, N, HD, TAPS).to(tl.float32)
    dqk = PIECES * HD
    tl.store(DKW + bh * N * dqk + rows[:, None] * dqk + piece * HD + dims[None, :],
             acc.to(DKW.dtype.element_ty), mask=(rows < N)[:, None] & (dims[None, :] < HD))


@triton.jit
def _band_query_grad_kernel(KW, DL, DQ, N, HD, TAPS, PIECES, H, GROUP, WIDTH,
                            BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (row tiles, column steps of d, B·H source heads s): DQ[s, m] = Σ over the heads o of s's group, taps a
    and diagonals t of DL[o, r, t] · KW[o, r-t, (i, a)], r = m + (TAPS-1) - a, i = s's place in the group."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    dims = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    src = tl.program_id(2).to(tl.int64)
    i = (src % H) % GROUP
    first = src - i
    in_d = dims[None, :] < HD
    dqk = PIECES * HD
    acc = tl.zeros([BLOCK_R, BLOCK_E], dtype=tl.float32)
    for o in range(0, GROUP):
        for a in range(0, TAPS):
            queries = rows + (TAPS - 1) - a
            for t in range(0, WIDTH):
                keys = queries - t
                valid = (queries < N) & (keys >= 0)
                dl = tl.load(DL + ((first + o) * N + queries) * WIDTH + t, mask=valid, other=0.0)
                k = tl.load(KW + (first + o) * N * dqk + keys[:, None] * dqk + (i * TAPS + a) * HD + dims[None, :],
                            mask=valid[:, None] & in_d, other=0.0)
                acc += dl[:, None] * k.to(tl.float32)
    tl.store(DQ + src * N * HD + rows[:, None] * HD + dims[None, :], acc.to(DQ.dtype.element_ty),
             mask=(rows < N)[:, None] & in_d)


class ProbabilityBand(torch.autograd.Function):
    """(q, kw, bias, lse, width, taps, group) -> band [B, H, N, width] float32 (module doc)."""

    @staticmethod
    def forward(ctx, q, kw, bias, lse, width, taps, group):
        batch, n_heads, seq_len, head_dim = q.shape
        window = (seq_len, head_dim, taps, group * taps, n_heads, group, width)
        band = torch.empty((batch, n_heads, seq_len, width), dtype=torch.float32, device=q.device)
        bias_width = 0 if bias is None else bias.shape[-1]
        _band_kernel[(triton.cdiv(seq_len, BLOCK_R), batch * n_heads)](
            q, kw, lse if bias is None else bias, lse, band, *window, bias_width,
            BLOCK_R=BLOCK_R, BLOCK_E=_block_e(head_dim))
        ctx.save_for_backward(q, kw, band)
        ctx.window, ctx.bias_width = window, bias_width
        return band

    @staticmethod
    def backward(ctx, d_band):
        q, kw, band = ctx.saved_tensors
        seq_len, head_dim, _, pieces, _, _, width = ctx.window
        dl = (band * d_band).contiguous()
        batch_heads = q.shape[0] * q.shape[1]
        meta = dict(BLOCK_R=BLOCK_R, BLOCK_E=_block_e(head_dim))
        tiles, sub = triton.cdiv(seq_len, BLOCK_R), triton.cdiv(head_dim, meta["BLOCK_E"])
        dkw = torch.empty_like(kw)
        _band_key_grad_kernel[(tiles, pieces * sub, batch_heads)](q, dl, dkw, *ctx.window, **meta)
        dq = torch.empty_like(q)
        _band_query_grad_kernel[(tiles, sub, batch_heads)](kw, dl, dq, *ctx.window, **meta)
        dbias = None
        if ctx.bias_width:
            dbias = F.pad(dl[..., : ctx.bias_width], (0, max(0, ctx.bias_width - width)))
        return dq, dkw, dbias, -dl.sum(-1), None, None, None


def probability_band(q: torch.Tensor, kw: torch.Tensor, bias: torch.Tensor | None, lse: torch.Tensor, width: int,
                     taps: int, group: int) -> torch.Tensor:
    """Fused `primitives.probability_band_torch` (same arguments): q [B, H, N, d] and kw [B, H, N, group·taps·d] in
    any of fp16/bf16/fp32, bias [B, H, N, W] float32 or None, lse [B, H, N] float32 -> band [B, H, N, width]."""
    if bias is not None:
        bias = bias.float().contiguous()
    return ProbabilityBand.apply(q.contiguous(), kw.contiguous(), bias, lse.float().contiguous(), width, taps, group)
