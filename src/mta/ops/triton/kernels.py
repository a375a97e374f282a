"""Triton kernels of banded causal flash attention (the generic op of mta.ops.triton.glue).

Per (batch, head) and for contiguous row-major tensors qw, kw [N, Dqk], vw [N, Dv], bias [N, W]:

    scores[i, j] = qw_i · kw_j + (bias[i, i-j] if 0 <= i-j < W else 0)   for j <= i, -inf for j > i
    P = softmax_j(scores) (online, float32), out = P · vw, lse_i = logsumexp_j scores[i, j].

Dqk and Dv may be large (c_q·d or g·c_q·d): contractions loop over BLOCK_D / BLOCK_DV columns, and the
outputs are split into column chunks along a grid axis, each chunk program recomputing the scores.

Tiles of keys far below the diagonal (every i - j >= W) need neither the causal mask nor the bias; only
the tiles within W of the diagonal ("near") load the bias band. Loads mask every tail, so N, Dqk and Dv
need not be multiples of any block.

Backward (FlashAttention-2 style, deterministic, no atomics), with delta_i = rowsum(d_out ⊙ out) - d_lse_i:
    dS = P ⊙ (d_out · vwᵀ - delta), dqw = dS · kw, dkw = dSᵀ · qw, dvw = Pᵀ · d_out,
    dbias[i, t] = dS[i, i-t].
`_backward_kv_kernel` walks query tiles for one key tile (dkw, dvw); `_backward_q_kernel` walks key tiles
for one query tile (dqw, and dbias from its first column chunk, so each dbias element is written once).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot_rows(A, B, rows, cols, N, D, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              PRECISION: tl.constexpr):
    """float32 [BLOCK_M, BLOCK_N] = A[rows, :D] · B[cols, :D]ᵀ for row-major A, B [N, D]; rows/cols >= N read 0."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        a = tl.load(A + rows[:, None] * D + dims[None, :], mask=(rows[:, None] < N) & (dims[None, :] < D), other=0.0)
        b_t = tl.load(B + cols[None, :] * D + dims[:, None], mask=(cols[None, :] < N) & (dims[:, None] < D), other=0.0)
        acc += tl.dot(a, b_t, input_precision=PRECISION)
    return acc


@triton.jit
def _near_diagonal(s, BIAS, rows, cols, N, W, HAS_BIAS: tl.constexpr):
    """Add bias[i, i-j] on the band 0 <= i-j < W and set -inf where j > i or j >= N."""
    diag = rows[:, None] - cols[None, :]
    if HAS_BIAS:
        band = (diag >= 0) & (diag < W) & (rows[:, None] < N)
        s += tl.load(BIAS + rows[:, None] * W + diag, mask=band, other=0.0).to(tl.float32)
    return tl.where((diag >= 0) & (cols[None, :] < N), s, float("-inf"))


@triton.jit
def _load_tile(X, rows, dims, N, D):
    """X[rows, dims] of a row-major [N, D] tensor, zeros outside."""
    return tl.load(X + rows[:, None] * D + dims[None, :], mask=(rows[:, None] < N) & (dims[None, :] < D), other=0.0)


@triton.jit
def _store_tile(X, value, rows, dims, N, D):
    tl.store(X + rows[:, None] * D + dims[None, :], value.to(X.dtype.element_ty),
             mask=(rows[:, None] < N) & (dims[None, :] < D))


@triton.jit
def _first_band_tile(m0, W, BLOCK_N: tl.constexpr):
    """Start of the first key tile that holds a j with i - j < W (or j > i) for some query i >= m0."""
    return tl.maximum(m0 - tl.maximum(W - 1, 0), 0) // BLOCK_N * BLOCK_N


@triton.jit
def _forward_tile(m_i, l_i, acc, QW, KW, VW, BIAS, rows, n0, dims_v, N, DQK, DV, W,
                  HAS_BIAS: tl.constexpr, NEAR: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    cols = n0 + tl.arange(0, BLOCK_N)
    s = _dot_rows(QW, KW, rows, cols, N, DQK, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    if NEAR:
        s = _near_diagonal(s, BIAS, rows, cols, N, W, HAS_BIAS)
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new[:, None])
    v = _load_tile(VW, cols, dims_v, N, DV)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i * alpha + tl.sum(p, 1), acc


@triton.jit
def _forward_kernel(QW, KW, VW, BIAS, OUT, LSE, N, DQK, DV, W,
                    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr):
    """Grid (query tiles, Dv chunks, B·H): out[rows, chunk], and lse[rows] from chunk 0."""
    m0 = tl.program_id(0) * BLOCK_M
    chunk = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    QW += bh * N * DQK
    KW += bh * N * DQK
    VW += bh * N * DV
    OUT += bh * N * DV
    BIAS += bh * N * W
    LSE += bh * N
    rows = m0 + tl.arange(0, BLOCK_M)
    dims_v = chunk * BLOCK_DV + tl.arange(0, BLOCK_DV)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    band_start = _first_band_tile(m0, W, BLOCK_N)
    for n0 in range(0, band_start, BLOCK_N):
        m_i, l_i, acc = _forward_tile(m_i, l_i, acc, QW, KW, VW, BIAS, rows, n0, dims_v, N, DQK, DV, W,
                                      HAS_BIAS, False, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    for n0 in range(band_start, tl.minimum(m0 + BLOCK_M, N), BLOCK_N):
        m_i, l_i, acc = _forward_tile(m_i, l_i, acc, QW, KW, VW, BIAS, rows, n0, dims_v, N, DQK, DV, W,
                                      HAS_BIAS, True, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    _store_tile(OUT, acc / l_i[:, None], rows, dims_v, N, DV)
    if chunk == 0:
        tl.store(LSE + rows, m_i + tl.log(l_i), mask=rows < N)


@triton.jit
def _backward_kv_tile(acc_k, acc_v, QW, KW, VW, BIAS, DO, LSE, DELTA, cols, m0, dims_k, dims_v, has_k, has_v,
                      N, DQK, DV, W,
                      HAS_BIAS: tl.constexpr, NEAR: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr):
    rows = m0 + tl.arange(0, BLOCK_M)
    s = _dot_rows(QW, KW, rows, cols, N, DQK, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    if NEAR:
        s = _near_diagonal(s, BIAS, rows, cols, N, W, HAS_BIAS)
    # rows past N read lse = +inf, so their probabilities are 0
    p = tl.exp(s - tl.load(LSE + rows, mask=rows < N, other=float("inf"))[:, None])
    if has_v:
        d_out = _load_tile(DO, rows, dims_v, N, DV)
        acc_v += tl.dot(tl.trans(p).to(d_out.dtype), d_out, input_precision=PRECISION)
    if has_k:
        dp = _dot_rows(DO, VW, rows, cols, N, DV, BLOCK_M, BLOCK_N, BLOCK_DV, PRECISION)
        ds = p * (dp - tl.load(DELTA + rows, mask=rows < N, other=0.0)[:, None])
        qw = _load_tile(QW, rows, dims_k, N, DQK)
        acc_k += tl.dot(tl.trans(ds).to(qw.dtype), qw, input_precision=PRECISION)
    return acc_k, acc_v


@triton.jit
def _backward_kv_kernel(QW, KW, VW, BIAS, DO, LSE, DELTA, DKW, DVW, N, DQK, DV, W,
                        HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr):
    """Grid (key tiles, column chunks, B·H): dkw[cols, chunk·BLOCK_D…] and dvw[cols, chunk·BLOCK_DV…]
    (a chunk past Dqk or Dv skips that half)."""
    n0 = tl.program_id(0) * BLOCK_N
    chunk = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    QW += bh * N * DQK
    KW += bh * N * DQK
    DKW += bh * N * DQK
    VW += bh * N * DV
    DO += bh * N * DV
    DVW += bh * N * DV
    BIAS += bh * N * W
    LSE += bh * N
    DELTA += bh * N
    cols = n0 + tl.arange(0, BLOCK_N)
    dims_k = chunk * BLOCK_D + tl.arange(0, BLOCK_D)
    dims_v = chunk * BLOCK_DV + tl.arange(0, BLOCK_DV)
    acc_k = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    acc_v = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    has_k = chunk * BLOCK_D < DQK
    has_v = chunk * BLOCK_DV < DV
    # query tiles from `far` on have i - j >= W for every j in this key tile
    far = tl.cdiv(n0 + BLOCK_N - 1 + W, BLOCK_M) * BLOCK_M
    for m0 in range(n0 // BLOCK_M * BLOCK_M, tl.minimum(far, N), BLOCK_M):
        acc_k, acc_v = _backward_kv_tile(acc_k, acc_v, QW, KW, VW, BIAS, DO, LSE, DELTA, cols, m0, dims_k, dims_v,
                                         has_k, has_v, N, DQK, DV, W, HAS_BIAS, True,
                                         BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, PRECISION)
    for m0 in range(far, N, BLOCK_M):
        acc_k, acc_v = _backward_kv_tile(acc_k, acc_v, QW, KW, VW, BIAS, DO, LSE, DELTA, cols, m0, dims_k, dims_v,
                                         has_k, has_v, N, DQK, DV, W, HAS_BIAS, False,
                                         BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, PRECISION)
    _store_tile(DKW, acc_k, cols, dims_k, N, DQK)
    _store_tile(DVW, acc_v, cols, dims_v, N, DV)


@triton.jit
def _backward_q_tile(acc, QW, KW, VW, BIAS, DO, DBIAS, lse, delta, rows, n0, dims_k, write_bias, N, DQK, DV, W,
                     HAS_BIAS: tl.constexpr, NEAR: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr):
    cols = n0 + tl.arange(0, BLOCK_N)
    s = _dot_rows(QW, KW, rows, cols, N, DQK, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    if NEAR:
        s = _near_diagonal(s, BIAS, rows, cols, N, W, HAS_BIAS)
    p = tl.exp(s - lse[:, None])
    dp = _dot_rows(DO, VW, rows, cols, N, DV, BLOCK_M, BLOCK_N, BLOCK_DV, PRECISION)
    ds = p * (dp - delta[:, None])
    if NEAR and HAS_BIAS:
        diag = rows[:, None] - cols[None, :]
        band = (diag >= 0) & (diag < W) & (rows[:, None] < N) & write_bias
        tl.store(DBIAS + rows[:, None] * W + diag, ds, mask=band)
    kw = _load_tile(KW, cols, dims_k, N, DQK)
    return acc + tl.dot(ds.to(kw.dtype), kw, input_precision=PRECISION)


@triton.jit
def _backward_q_kernel(QW, KW, VW, BIAS, DO, LSE, DELTA, DQW, DBIAS, N, DQK, DV, W,
                       HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                       BLOCK_DV: tl.constexpr, BLOCK_W: tl.constexpr, PRECISION: tl.constexpr):
    """Grid (query tiles, Dqk chunks, B·H): dqw[rows, chunk], and dbias[rows, :] (float32) from chunk 0."""
    m0 = tl.program_id(0) * BLOCK_M
    chunk = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    QW += bh * N * DQK
    KW += bh * N * DQK
    DQW += bh * N * DQK
    VW += bh * N * DV
    DO += bh * N * DV
    BIAS += bh * N * W
    DBIAS += bh * N * W
    LSE += bh * N
    DELTA += bh * N
    rows = m0 + tl.arange(0, BLOCK_M)
    dims_k = chunk * BLOCK_D + tl.arange(0, BLOCK_D)
    lse = tl.load(LSE + rows, mask=rows < N, other=0.0)
    delta = tl.load(DELTA + rows, mask=rows < N, other=0.0)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    band_start = _first_band_tile(m0, W, BLOCK_N)
    write_bias = chunk == 0
    for n0 in range(0, band_start, BLOCK_N):
        acc = _backward_q_tile(acc, QW, KW, VW, BIAS, DO, DBIAS, lse, delta, rows, n0, dims_k, write_bias,
                               N, DQK, DV, W, HAS_BIAS, False, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, PRECISION)
    for n0 in range(band_start, tl.minimum(m0 + BLOCK_M, N), BLOCK_N):
        acc = _backward_q_tile(acc, QW, KW, VW, BIAS, DO, DBIAS, lse, delta, rows, n0, dims_k, write_bias,
                               N, DQK, DV, W, HAS_BIAS, True, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, PRECISION)
    if HAS_BIAS:
        # taps t > i have no key (j = i - t < 0): their gradient is 0
        taps = tl.arange(0, BLOCK_W)
        before_start = (taps[None, :] > rows[:, None]) & (taps[None, :] < W) & (rows[:, None] < N) & write_bias
        tl.store(DBIAS + rows[:, None] * W + taps[None, :], tl.zeros([BLOCK_M, BLOCK_W], tl.float32),
                 mask=before_start)
    _store_tile(DQW, acc, rows, dims_k, N, DQK)
