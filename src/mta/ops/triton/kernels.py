"""Triton kernels of banded causal flash attention (the generic op of mta.ops.triton.glue).

Per (batch, head) and for contiguous row-major tensors q [N, d], kw [N, Dqk], vw [N, Dv], band [N, W]:

    scores[i, j] = band[i, i-j] if 0 <= i-j < W else qw_i · kw_j   for j <= i, -inf for j > i
    P = softmax_j(scores) (online, float32), lse_i = logsumexp_j scores[i, j],
    out_i = Σ_{j <= i-SKIP} P[i, j] vw_j   (the diagonals i-j < SKIP count in the softmax, not in out),

where qw = query_window(q, taps, group) (mta.ops.triton.primitives), Dqk = group·taps·d, is never stored: the
kernels read its pieces from q (`_window_scores`). The band replaces the product, which is computed for the whole
tile but selected away (never added), so a NaN or Inf there cannot reach a score.
Dqk and Dv may be large (c_q·d or g·c_q·d): contractions loop over BLOCK_D / BLOCK_DV columns. Outputs as
wide as Dqk or Dv cannot live in one program's registers, so only a narrow out (Dv <= BLOCK_DV) is computed
in `_forward_kernel` itself; everything wider goes through `_pair_kernel`, which writes one block of the
probabilities (and of dS) at a time for `function` to multiply with cuBLAS: every score is computed once per
pass, whatever Dqk and Dv are.

Tiles of keys far below the diagonal (every i - j >= max(W, SKIP)) need neither the causal mask, the band nor
the exclusion; only the tiles within max(W, SKIP) of the diagonal ("near") load the band and exclude diagonals.
Loads mask every tail, so N, Dqk and Dv need not be multiples of any block.

Backward, with delta_i = rowsum(d_out ⊙ out) - d_lse_i, P' = P and dP' = d_out · vwᵀ both zero on the diagonals
i-j < SKIP, and dS = P ⊙ (dP' - delta) (the gradient of the scores):
    dband[i, t] = dS[i, i-t],   dqw = dS' · kw,   dkw = dS'ᵀ · qw,   dvw = P'ᵀ · d_out,
with dS' = dS zero on the band (its scores are not products).
`_pair_kernel` computes P and dS for one block of keys and all the queries that see them; `function` turns
each block into its slice of dkw and dvw and its contribution to dqw with three matrix products. No atomics:
deterministic.
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
def _query_window_tile(Q, rows, piece, dims, N, HD, TAPS):
    """qw[rows, piece's columns `dims`] of qw = query_window(q, TAPS, group), read from q in its own dtype.

    Q: the group's first head of row-major q [·, N, HD]. Piece c = i·TAPS + a of qw's row r is
    q[first head + i, r - (TAPS-1) + a]: zero before the first token, past the last and for dims >= HD.
    """
    source = rows - (TAPS - 1) + piece % TAPS
    return tl.load(Q + (piece // TAPS).to(tl.int64) * N * HD + source[:, None] * HD + dims[None, :],
                   mask=((source >= 0) & (source < N))[:, None] & (dims[None, :] < HD), other=0.0)


@triton.jit
def _window_scores(Q, KW, rows, cols, N, HD, TAPS, PIECES, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """float32 [BLOCK_M, BLOCK_N] = qw[rows] · KW[cols]ᵀ, qw = query_window(q, TAPS, group) read from q itself.

    Q: the group's first head of row-major q [·, N, HD]; KW: row-major [N, PIECES·HD], PIECES = group·TAPS.
    No [N, Dqk] copy of the window is stored (on the H200 this saved memory, not time: the pipelined loads of the
    overlapping rows go through shared memory, not a cache). Columns go BLOCK_D at a time within a piece, so
    every load is contiguous.
    """
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    sub = tl.cdiv(HD, BLOCK_D)
    dqk = PIECES * HD
    for step in range(0, PIECES * sub):
        piece = step // sub
        dims = (step - piece * sub) * BLOCK_D + tl.arange(0, BLOCK_D)
        a = _query_window_tile(Q, rows, piece, dims, N, HD, TAPS)
        b_t = tl.load(KW + cols[None, :] * dqk + piece * HD + dims[:, None],
                      mask=(cols[None, :] < N) & (dims[:, None] < HD), other=0.0)
        acc += tl.dot(a, b_t, input_precision=PRECISION)
    return acc


@triton.jit
def _near_diagonal(s, BAND, rows, cols, N, W, HAS_BAND: tl.constexpr):
    """Replace s by band[i, i-j] on the band 0 <= i-j < W (a select: s there is discarded, even a NaN) and set
    -inf where j > i or j >= N."""
    diag = rows[:, None] - cols[None, :]
    if HAS_BAND:
        band = (diag >= 0) & (diag < W) & (rows[:, None] < N)
        s = tl.where(band, tl.load(BAND + rows[:, None] * W + diag, mask=band, other=0.0).to(tl.float32), s)
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
    """Start of the first key tile that holds a j with i - j < W (or j > i) for some query i >= m0 (W: the wider
    of the band and the excluded diagonals)."""
    return tl.maximum(m0 - tl.maximum(W - 1, 0), 0) // BLOCK_N * BLOCK_N


@triton.jit
def _forward_tile(m_i, l_i, acc, Q, KW, VW, BAND, rows, n0, dims_v, N, HD, TAPS, PIECES, DV, W, SKIP,
                  HAS_BAND: tl.constexpr, HAS_SKIP: tl.constexpr, NEAR: tl.constexpr, WITH_OUTPUT: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    cols = n0 + tl.arange(0, BLOCK_N)
    s = _window_scores(Q, KW, rows, cols, N, HD, TAPS, PIECES, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
    if NEAR:
        s = _near_diagonal(s, BAND, rows, cols, N, W, HAS_BAND)
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new[:, None])
    if WITH_OUTPUT:
        v = _load_tile(VW, cols, dims_v, N, DV)
        kept = p
        if NEAR and HAS_SKIP:  # the diagonals i-j < SKIP stay out of out (they are in l_i)
            kept = tl.where(rows[:, None] - cols[None, :] >= SKIP, p, 0.0)
        acc = acc * alpha[:, None] + tl.dot(kept.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i * alpha + tl.sum(p, 1), acc


@triton.jit
def _forward_kernel(Q, KW, VW, BAND, OUT, LSE, N, HD, TAPS, PIECES, H, GROUP, DV, W, SKIP,
                    HAS_BAND: tl.constexpr, HAS_SKIP: tl.constexpr, WITH_OUTPUT: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                    PRECISION: tl.constexpr):
    """Grid (query tiles, Dv chunks, B·H): out[rows, chunk], and lse[rows] from chunk 0.
    Without WITH_OUTPUT (grid of one chunk): lse alone, vw and out untouched."""
    m0 = tl.program_id(0) * BLOCK_M
    chunk = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    Q += (bh - (bh % H) % GROUP) * N * HD  # the first head of bh's group
    KW += bh * N * PIECES * HD
    VW += bh * N * DV
    OUT += bh * N * DV
    BAND += bh * N * W
    LSE += bh * N
    rows = m0 + tl.arange(0, BLOCK_M)
    dims_v = chunk * BLOCK_DV + tl.arange(0, BLOCK_DV)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    band_start = _first_band_tile(m0, tl.maximum(W, SKIP), BLOCK_N)
    for n0 in range(0, band_start, BLOCK_N):
        m_i, l_i, acc = _forward_tile(m_i, l_i, acc, Q, KW, VW, BAND, rows, n0, dims_v, N, HD, TAPS, PIECES, DV,
                                      W, SKIP, HAS_BAND, HAS_SKIP, False, WITH_OUTPUT, BLOCK_M, BLOCK_N, BLOCK_D,
                                      PRECISION)
    for n0 in range(band_start, tl.minimum(m0 + BLOCK_M, N), BLOCK_N):
        m_i, l_i, acc = _forward_tile(m_i, l_i, acc, Q, KW, VW, BAND, rows, n0, dims_v, N, HD, TAPS, PIECES, DV,
                                      W, SKIP, HAS_BAND, HAS_SKIP, True, WITH_OUTPUT, BLOCK_M, BLOCK_N, BLOCK_D,
                                      PRECISION)
    if WITH_OUTPUT:
        _store_tile(OUT, acc / l_i[:, None], rows, dims_v, N, DV)
    if chunk == 0:
        tl.store(LSE + rows, m_i + tl.log(l_i), mask=rows < N)


@triton.jit
def _pair_kernel(Q, KW, VW, BAND, DO, LSE, DELTA, P, DS, DBAND, N, HD, TAPS, PIECES, H, GROUP, DV, W, SKIP, R0, ROWS,
                 C0, COLS, STRIDE,
                 HAS_BAND: tl.constexpr, HAS_SKIP: tl.constexpr, GRADS: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr):
    """Grid (query tiles of rows [R0, R0+ROWS), key tiles of columns [C0, C0+COLS), B·H): one block of the
    probabilities that out takes, P[i-R0, j-C0] = exp(score_ij - lse_i) (0 for j > i and for i-j < SKIP), in
    row-major [ROWS, STRIDE] buffers. With GRADS also dband[i, i-j] = dS on the band and DS[i-R0, j-C0] = dS off it
    (0 on it), dS = exp(score_ij - lse_i) ⊙ (d_out_i · vw_j - delta_i), the product 0 for i-j < SKIP (each band
    element lies in exactly one block of a launch sequence that covers every (i, j <= i) once)."""
    m0 = R0 + tl.program_id(0) * BLOCK_M
    n0 = C0 + tl.program_id(1) * BLOCK_N
    bh = tl.program_id(2).to(tl.int64)
    Q += (bh - (bh % H) % GROUP) * N * HD
    KW += bh * N * PIECES * HD
    VW += bh * N * DV
    DO += bh * N * DV
    BAND += bh * N * W
    DBAND += bh * N * W
    LSE += bh * N
    DELTA += bh * N
    P += bh * ROWS * STRIDE
    DS += bh * ROWS * STRIDE
    rows = m0 + tl.arange(0, BLOCK_M)
    cols = n0 + tl.arange(0, BLOCK_N)
    cell = (rows - R0)[:, None] * STRIDE + (cols - C0)[None, :]
    inside = (rows[:, None] < R0 + ROWS) & (cols[None, :] < C0 + COLS)
    if m0 + BLOCK_M - 1 < n0:  # every key after every query of the tile
        zero = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        tl.store(P + cell, zero.to(P.dtype.element_ty), mask=inside)
        if GRADS:
            tl.store(DS + cell, zero.to(DS.dtype.element_ty), mask=inside)
    else:
        s = _window_scores(Q, KW, rows, cols, N, HD, TAPS, PIECES, BLOCK_M, BLOCK_N, BLOCK_D, PRECISION)
        near = (m0 < n0 + BLOCK_N - 1 + tl.maximum(W, SKIP)) | (n0 + BLOCK_N > N)
        if near:
            s = _near_diagonal(s, BAND, rows, cols, N, W, HAS_BAND)
        # rows past N read lse = +inf, so their probabilities are 0
        p = tl.exp(s - tl.load(LSE + rows, mask=rows < N, other=float("inf"))[:, None])
        diag = rows[:, None] - cols[None, :]
        kept = p
        if HAS_SKIP and near:
            kept = tl.where(diag >= SKIP, p, 0.0)
        tl.store(P + cell, kept.to(P.dtype.element_ty), mask=inside)
        if GRADS:
            dp = _dot_rows(DO, VW, rows, cols, N, DV, BLOCK_M, BLOCK_N, BLOCK_DV, PRECISION)
            if HAS_SKIP and near:
                dp = tl.where(diag >= SKIP, dp, 0.0)
            ds = p * (dp - tl.load(DELTA + rows, mask=rows < N, other=0.0)[:, None])
            if HAS_BAND and near:
                band = (diag >= 0) & (diag < W) & (rows[:, None] < N) & inside
                tl.store(DBAND + rows[:, None] * W + diag, ds, mask=band)
                ds = tl.where(band, 0.0, ds)
            tl.store(DS + cell, ds.to(DS.dtype.element_ty), mask=inside)
