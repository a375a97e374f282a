"""Fused `primitives.probability_band_torch`: the band of the banded kernel's probabilities near the diagonal,

    band[r, t] = exp(score[r, t] - lse[r])  for t < width, r - t >= 0 (else 0),
    score[r, t] = band_scores[r, t] for t < W (the kernel's overridden band), else qw_r · kw_{r-t},

with qw = query_window(q, taps, group) read from q in place (`kernels._query_window_tile`), which the
post-softmax conv's band terms read (glue module doc). The product is never computed where the band scores
replace it. Row-wise dot products over Dqk = group·taps·d columns, accumulated in float32 on CUDA cores: each
program takes BLOCK_R rows of one head and loops over the diagonals, the query window's pieces and BLOCK_E columns
of each; no [N, Dqk] copy of q, qw or kw is made, forward or backward.

Backward, with dl = band ⊙ d_band (the gradient of the scores) and only the diagonals t >= W in the products:
    dkw[j] = Σ_{t>=W} dl[j+t, t] qw[j+t],   dq from d(qw)[r] = Σ_{t>=W} dl[r, t] kw[r-t],
    d band_scores = dl on t < W,   dlse = -Σ_t dl.
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
def _band_kernel(Q, KW, SCORES, LSE, BAND, N, HD, TAPS, PIECES, H, GROUP, WIDTH, SCORES_W,
                 BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (row tiles, B·H): BAND[bh, r, t] for every t < WIDTH, from SCORES [bh, r, t] for t < SCORES_W."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    bh = tl.program_id(1).to(tl.int64)
    Q += (bh - (bh % H) % GROUP) * N * HD  # the first head of bh's group
    dqk = PIECES * HD
    KW += bh * N * dqk
    sub = tl.cdiv(HD, BLOCK_E)
    lse = tl.load(LSE + bh * N + rows, mask=rows < N, other=0.0)
    replaced = tl.minimum(WIDTH, SCORES_W)
    for t in range(0, replaced):
        keys = rows - t
        score = tl.load(SCORES + (bh * N + rows) * SCORES_W + t, mask=(rows < N) & (keys >= 0), other=0.0)
        band = tl.where(keys >= 0, tl.exp(score - lse), 0.0)
        tl.store(BAND + (bh * N + rows) * WIDTH + t, band, mask=rows < N)
    for t in range(replaced, WIDTH):
        keys = rows - t
        acc = tl.zeros([BLOCK_R, BLOCK_E], dtype=tl.float32)
        for step in range(0, PIECES * sub):
            piece = step // sub
            dims = (step - piece * sub) * BLOCK_E + tl.arange(0, BLOCK_E)
            q = _query_window_tile(Q, rows, piece, dims, N, HD, TAPS)
            k = tl.load(KW + keys[:, None] * dqk + piece * HD + dims[None, :],
                        mask=((keys >= 0) & (rows < N))[:, None] & (dims[None, :] < HD), other=0.0)
            acc += q.to(tl.float32) * k.to(tl.float32)
        band = tl.where(keys >= 0, tl.exp(tl.sum(acc, 1) - lse), 0.0)
        tl.store(BAND + (bh * N + rows) * WIDTH + t, band, mask=rows < N)


@triton.jit
def _band_key_grad_kernel(Q, DL, DKW, N, HD, TAPS, PIECES, H, GROUP, WIDTH, FIRST,
                          BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (row tiles, column steps, B·H): DKW[bh, j, chunk] = Σ_{t >= FIRST} DL[bh, j+t, t] · qw[j+t, chunk]."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    step = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    sub = tl.cdiv(HD, BLOCK_E)
    piece = step // sub
    dims = (step - piece * sub) * BLOCK_E + tl.arange(0, BLOCK_E)
    Q += (bh - (bh % H) % GROUP) * N * HD  # the first head of bh's group
    acc = tl.zeros([BLOCK_R, BLOCK_E], dtype=tl.float32)
    for t in range(FIRST, WIDTH):
        queries = rows + t
        dl = tl.load(DL + (bh * N + queries) * WIDTH + t, mask=queries < N, other=0.0)  # 0 past the last query
        acc += dl[:, None] * _query_window_tile(Q, queries, piece, dims, N, HD, TAPS).to(tl.float32)
    dqk = PIECES * HD
    tl.store(DKW + bh * N * dqk + rows[:, None] * dqk + piece * HD + dims[None, :],
             acc.to(DKW.dtype.element_ty), mask=(rows < N)[:, None] & (dims[None, :] < HD))


@triton.jit
def _band_query_grad_kernel(KW, DL, DQ, N, HD, TAPS, PIECES, H, GROUP, WIDTH, FIRST,
                            BLOCK_R: tl.constexpr, BLOCK_E: tl.constexpr):
    """Grid (row tiles, column steps of d, B·H source heads s): DQ[s, m] = Σ over the heads o of s's group, taps a
    and diagonals t >= FIRST of DL[o, r, t] · KW[o, r-t, (i, a)], r = m + (TAPS-1) - a, i = s's place in the group."""
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
            for t in range(FIRST, WIDTH):
                keys = queries - t
                valid = (queries < N) & (keys >= 0)
                dl = tl.load(DL + ((first + o) * N + queries) * WIDTH + t, mask=valid, other=0.0)
                k = tl.load(KW + (first + o) * N * dqk + keys[:, None] * dqk + (i * TAPS + a) * HD + dims[None, :],
                            mask=valid[:, None] & in_d, other=0.0)
                acc += dl[:, None] * k.to(tl.float32)
    tl.store(DQ + src * N * HD + rows[:, None] * HD + dims[None, :], acc.to(DQ.dtype.element_ty),
             mask=(rows < N)[:, None] & in_d)


class ProbabilityBand(torch.autograd.Function):
    """(q, kw, band_scores, lse, width, taps, group) -> band [B, H, N, width] float32 (module doc)."""

    @staticmethod
    def forward(ctx, q, kw, band_scores, lse, width, taps, group):
        batch, n_heads, seq_len, head_dim = q.shape
        window = (seq_len, head_dim, taps, group * taps, n_heads, group, width)
        band = torch.empty((batch, n_heads, seq_len, width), dtype=torch.float32, device=q.device)
        replaced = 0 if band_scores is None else band_scores.shape[-1]
        _band_kernel[(triton.cdiv(seq_len, BLOCK_R), batch * n_heads)](
            q, kw, lse if band_scores is None else band_scores, lse, band, *window, replaced,
            BLOCK_R=BLOCK_R, BLOCK_E=_block_e(head_dim))
        ctx.save_for_backward(q, kw, band)
        ctx.window, ctx.replaced = window, replaced
        return band

    @staticmethod
    def backward(ctx, d_band):
        q, kw, band = ctx.saved_tensors
        seq_len, head_dim, _, pieces, _, _, width = ctx.window
        dl = (band * d_band).contiguous()
        batch_heads = q.shape[0] * q.shape[1]
        meta = dict(BLOCK_R=BLOCK_R, BLOCK_E=_block_e(head_dim))
        tiles, sub = triton.cdiv(seq_len, BLOCK_R), triton.cdiv(head_dim, meta["BLOCK_E"])
        first = min(ctx.replaced, width)  # the diagonals before `first` took their scores from band_scores
        dkw = torch.empty_like(kw)
        _band_key_grad_kernel[(tiles, pieces * sub, batch_heads)](q, dl, dkw, *ctx.window, first, **meta)
        dq = torch.empty_like(q)
        _band_query_grad_kernel[(tiles, sub, batch_heads)](kw, dl, dq, *ctx.window, first, **meta)
        d_scores = None
        if ctx.replaced:
            d_scores = F.pad(dl[..., :first], (0, ctx.replaced - first))
        return dq, dkw, d_scores, -dl.sum(-1), None, None, None


def probability_band(q: torch.Tensor, kw: torch.Tensor, band_scores: torch.Tensor | None, lse: torch.Tensor,
                     width: int, taps: int, group: int) -> torch.Tensor:
    """Fused `primitives.probability_band_torch` (same arguments): q [B, H, N, d] and kw [B, H, N, group·taps·d] in
    any of fp16/bf16/fp32, band_scores [B, H, N, W] float32 or None, lse [B, H, N] float32 -> band [B, H, N, width]."""
    if band_scores is not None:
        band_scores = band_scores.float().contiguous()
    return ProbabilityBand.apply(q.contiguous(), kw.contiguous(), band_scores, lse.float().contiguous(), width, taps,
                                 group)
