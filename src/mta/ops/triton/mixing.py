"""Fused Triton kernels for wide head mixing without convolutions (talking-heads attention, docs/spec.md §1).

Every head of a mixing group lives in one program, so the mixing happens on tiles of scores held on chip and no
N×N map (or block of one) ever reaches global memory. Per batch element, group of C heads (C a power of two,
at least 16) and tile of query rows, tensors are [C, rows, ·], head first:

    S_i = scale · q_i k_iᵀ,   X_o = Σ_i W[i, o] S_i          (pre-softmax mixing; X = S without it)
    P_o = softmax_j(X_o + (-inf on j > r)),   Y_o = Σ_i W'[i, o] P_i   (post-softmax mixing; Y = P without it)
    out_o = Y_o v_o

Each mixing step is one matrix product of the [C, C] mixer with the tile seen as [C, rows·cols]. Without
post-softmax mixing the forward is one online-softmax pass; with it, a first pass finds each row's logsumexp
and a second normalises, mixes and multiplies by V. The backward, with dY = dO vᵀ, dP_i = Σ_o W'[i, o] dY_o,
dX = P ⊙ (dP − δ) with δ_o = rowsum(P_o ⊙ dP_o), dS_i = Σ_o W[i, o] dX_o:
    dq_i = scale · dS_i k_i,  dk_i = scale · dS_iᵀ q_i,  dv_o = Y_oᵀ dO_o,
    dW[i, o] = Σ S_i ⊙ dX_o,  dW'[i, o] = Σ P_i ⊙ dY_o,
runs as launches of a query-major kernel (δ, when there is post-softmax mixing; then dq, and the mixer
gradients as per-tile partial sums added up in PyTorch: deterministic) and of a key-major kernel (dk, then dv).
A program holds every head of its group, so its tiles are small: q·kᵀ and dO·vᵀ are summed over column chunks,
and each output is split over programs of `block_d` columns that each recompute the scores. Nothing N×N is
stored: memory is O(N) per head beyond the inputs and gradients.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import function
from .interpreter import INTERPRETING

MIN_GROUP = 16  # tl.dot needs operand sides of at least 16, and the mixer is one operand


@dataclass(frozen=True)
class MixConfig:
    """Tiles of one launch (powers of 2, >= 16): query rows, key rows, columns of q·kᵀ and dO·vᵀ per product step,
    and columns of an output (out, dq, dk, dv) per program; GPU warps and pipeline stages."""

    block_m: int = 16
    block_n: int = 16
    block_k: int = 16
    block_d: int = 16
    num_warps: int = 4
    num_stages: int = 1

    def meta(self) -> dict:
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, BLOCK_K=self.block_k, BLOCK_D=self.block_d)


# GPU autotuning candidates (the interpreter takes MixConfig()). A program holds [C, rows, cols] score tiles and a
# [C, rows, block_d] accumulator for all C heads of a group, so the tiles are small; outputs wider than block_d
# are split over programs that each recompute the scores. Compiled for sm_90 (benchmarks/compile_report.py,
# results/perf/mixing_compile_report.json), wider tiles spill registers heavily.
CONFIGS = (
    MixConfig(16, 16, 16, 32, 8, 1),
    MixConfig(16, 16, 16, 64, 8, 1),
    MixConfig(16, 16, 32, 32, 8, 1),
)


# ----------------------------------------------------------------------------------------------------- kernels


@triton.jit
def _load_rows(X, heads, rows, dims, N, WIDTH):
    """X[heads, rows, dims] of a row-major [·, N, WIDTH] tensor -> [C, R, Dp]; zeros outside."""
    ptrs = X + heads[:, None, None].to(tl.int64) * N * WIDTH + rows[None, :, None] * WIDTH + dims[None, None, :]
    return tl.load(ptrs, mask=(rows[None, :, None] < N) & (dims[None, None, :] < WIDTH), other=0.0)


@triton.jit
def _load_cols(X, heads, rows, dims, N, WIDTH):
    """The transpose of _load_rows: X[heads, rows, dims] as [C, Dp, R]."""
    ptrs = X + heads[:, None, None].to(tl.int64) * N * WIDTH + rows[None, None, :] * WIDTH + dims[None, :, None]
    return tl.load(ptrs, mask=(rows[None, None, :] < N) & (dims[None, :, None] < WIDTH), other=0.0)


@triton.jit
def _store_rows(X, value, heads, rows, dims, N, WIDTH):
    ptrs = X + heads[:, None, None].to(tl.int64) * N * WIDTH + rows[None, :, None] * WIDTH + dims[None, None, :]
    tl.store(ptrs, value.to(X.dtype.element_ty), mask=(rows[None, :, None] < N) & (dims[None, None, :] < WIDTH))


@triton.jit
def _dots(A, B, heads_a, heads_b, rows, cols, N, WIDTH, C: tl.constexpr, BLOCK_M: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """float32 [C, BLOCK_M, BLOCK_N] = A[heads_a, rows] · B[heads_b, cols]ᵀ for row-major [·, N, WIDTH] tensors,
    BLOCK_K columns at a time (small operand tiles: a program holds C heads of everything)."""
    acc = tl.zeros([C, BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, WIDTH, BLOCK_K):
        dims = k0 + tl.arange(0, BLOCK_K)
        acc += tl.dot(_load_rows(A, heads_a, rows, dims, N, WIDTH), _load_cols(B, heads_b, cols, dims, N, WIDTH),
                      input_precision=PRECISION)
    return acc


@triton.jit
def _mixer(W, g, C: tl.constexpr, FORWARD: tl.constexpr):
    """The group's mixer W[g] [C(in), C(out)] as float32 [C, C]: transposed (out, in) for the forward mix
    y = Wᵀ x, as stored (in, out) for the backward mix dx = W dy."""
    first = tl.arange(0, C)[:, None]
    second = tl.arange(0, C)[None, :]
    offsets = second * C + first if FORWARD else first * C + second
    return tl.load(W + g * C * C + offsets).to(tl.float32)


@triton.jit
def _mix(x, w, C: tl.constexpr, R: tl.constexpr, S: tl.constexpr, PRECISION: tl.constexpr):
    """y[o] = Σ_i w[o, i] x[i] for a float32 tile x [C, R, S] and w [C, C]: one product over [C, R·S]."""
    y = tl.dot(w, tl.reshape(x, (C, R * S)), input_precision=PRECISION)
    return tl.reshape(y, (C, R, S))


@triton.jit
def _gram(a, b, C: tl.constexpr, R: tl.constexpr, S: tl.constexpr, PRECISION: tl.constexpr):
    """[C, C] with entry (i, o) = Σ a[i] ⊙ b[o], for float32 tiles a, b [C, R, S]."""
    return tl.dot(tl.reshape(a, (C, R * S)), tl.trans(tl.reshape(b, (C, R * S))), input_precision=PRECISION)


@triton.jit
def _logits(Q, K, heads, kv_heads, rows, cols, wpre, N, HD, scale, C: tl.constexpr, HAS_PRE: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
            MIX_PRECISION: tl.constexpr):
    """(s, x): the scores S [C, BLOCK_M, BLOCK_N] (zero where masked) and the mixed logits X (-inf where masked)
    of query rows `rows` against keys `cols`."""
    s = _dots(Q, K, heads, kv_heads, rows, cols, N, HD, C, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION) * scale
    valid = (cols[None, None, :] <= rows[None, :, None]) & (cols[None, None, :] < N)
    x = _mix(s, wpre, C, BLOCK_M, BLOCK_N, MIX_PRECISION) if HAS_PRE else s
    # masked entries never enter a sum: a NaN or Inf there (a later token's key) is dropped, not multiplied by 0
    return tl.where(valid, s, 0.0), tl.where(valid, x, float("-inf"))


@triton.jit
def _probabilities(Q, K, heads, kv_heads, rows, cols, wpre, lse, N, HD, scale, C: tl.constexpr,
                   HAS_PRE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   PRECISION: tl.constexpr, MIX_PRECISION: tl.constexpr):
    """(s, p): masked scores and normalised probabilities [C, BLOCK_M, BLOCK_N] from the forward's lse."""
    s, x = _logits(Q, K, heads, kv_heads, rows, cols, wpre, N, HD, scale, C, HAS_PRE, BLOCK_M, BLOCK_N, BLOCK_K,
                   PRECISION, MIX_PRECISION)
    return s, tl.exp(x - lse[:, :, None])


@triton.jit
def _group(G, H, HKV, C: tl.constexpr):
    """(b, g, heads [C], kv_heads [C]) of the program's batch element and head group (grid axis 1 = B·G)."""
    b = tl.program_id(1) // G
    g = tl.program_id(1) % G
    heads = g * C + tl.arange(0, C)
    return b.to(tl.int64), g, heads, heads // (H // HKV)


@triton.jit
def _forward_kernel(Q, K, V, WPRE, WPOST, OUT, LSE, N, H, HKV, G, HD, DV, scale,
                    C: tl.constexpr, HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                    PRECISION: tl.constexpr, MIX_PRECISION: tl.constexpr):
    """Grid (query tiles, B·G, DV chunks): out [C, rows, chunk] of one group, and lse [C, rows] from chunk 0."""
    m0 = tl.program_id(0) * BLOCK_M
    b, g, heads, kv_heads = _group(G, H, HKV, C)
    Q += b * H * N * HD
    K += b * HKV * N * HD
    V += b * HKV * N * DV
    OUT += b * H * N * DV
    LSE += b * H * N
    rows = m0 + tl.arange(0, BLOCK_M)
    dims_v = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    wpre = _mixer(WPRE, g, C, True) if HAS_PRE else 0.0
    end = tl.minimum(m0 + BLOCK_M, N)
    m_i = tl.full([C, BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([C, BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([C, BLOCK_M, BLOCK_D], dtype=tl.float32)
    if HAS_POST:
        for n0 in range(0, end, BLOCK_N):  # pass 1: each row's logsumexp
            cols = n0 + tl.arange(0, BLOCK_N)
            _, x = _logits(Q, K, heads, kv_heads, rows, cols, wpre, N, HD, scale, C, HAS_PRE, BLOCK_M, BLOCK_N,
                           BLOCK_K, PRECISION, MIX_PRECISION)
            m_new = tl.maximum(m_i, tl.max(x, 2))
            l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(x - m_new[:, :, None]), 2)
            m_i = m_new
        lse = m_i + tl.log(l_i)
        wpost = _mixer(WPOST, g, C, True)
        for n0 in range(0, end, BLOCK_N):  # pass 2: normalised probabilities, mixed, times V
            cols = n0 + tl.arange(0, BLOCK_N)
            _, p = _probabilities(Q, K, heads, kv_heads, rows, cols, wpre, lse, N, HD, scale, C, HAS_PRE, BLOCK_M,
                                  BLOCK_N, BLOCK_K, PRECISION, MIX_PRECISION)
            y = _mix(p, wpost, C, BLOCK_M, BLOCK_N, MIX_PRECISION)
            v = _load_rows(V, kv_heads, cols, dims_v, N, DV)
            acc += tl.dot(y.to(v.dtype), v, input_precision=PRECISION)
    else:
        for n0 in range(0, end, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            _, x = _logits(Q, K, heads, kv_heads, rows, cols, wpre, N, HD, scale, C, HAS_PRE, BLOCK_M, BLOCK_N,
                           BLOCK_K, PRECISION, MIX_PRECISION)
            m_new = tl.maximum(m_i, tl.max(x, 2))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(x - m_new[:, :, None])
            v = _load_rows(V, kv_heads, cols, dims_v, N, DV)
            acc = acc * alpha[:, :, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            l_i = l_i * alpha + tl.sum(p, 2)
            m_i = m_new
        acc = acc / l_i[:, :, None]
        lse = m_i + tl.log(l_i)
    _store_rows(OUT, acc, heads, rows, dims_v, N, DV)
    if tl.program_id(2) == 0:
        tl.store(LSE + heads[:, None] * N + rows[None, :], lse, mask=rows[None, :] < N)


@triton.jit
def _backward_query_kernel(Q, K, V, WPRE, WPOST, DO, LSE, DELTA, DQ, DWPRE, DWPOST, SLOTS, N, H, HKV, G, HD, DV,
                           scale, C: tl.constexpr, HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           BLOCK_D: tl.constexpr, DELTA_ONLY: tl.constexpr, PRECISION: tl.constexpr,
                           MIX_PRECISION: tl.constexpr):
    """Grid (query tiles, B·G, d chunks). With DELTA_ONLY (post-softmax mixing; one chunk): δ = rowsum(P ⊙ dP)
    of the tile's rows into DELTA and the tile's partial gradient of the post-softmax mixer [C, C] at
    DWPOST[g, b, tile] of [G, B, SLOTS] slots. Otherwise dq [C, rows, chunk] from DELTA's δ, and from chunk 0 the
    tile's partial gradient of the pre-softmax mixer at DWPRE[g, b, tile]."""
    m0 = tl.program_id(0) * BLOCK_M
    b, g, heads, kv_heads = _group(G, H, HKV, C)
    Q += b * H * N * HD
    DQ += b * H * N * HD
    K += b * HKV * N * HD
    V += b * HKV * N * DV
    DO += b * H * N * DV
    LSE += b * H * N
    DELTA += b * H * N
    rows = m0 + tl.arange(0, BLOCK_M)
    dims = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    first = tl.program_id(2) == 0
    stats = heads[:, None] * N + rows[None, :]
    lse = tl.load(LSE + stats, mask=rows[None, :] < N, other=float("inf"))  # rows past N: P = 0
    wpre = _mixer(WPRE, g, C, True) if HAS_PRE else 0.0
    wpre_back = _mixer(WPRE, g, C, False) if HAS_PRE else 0.0
    wpost_back = _mixer(WPOST, g, C, False) if HAS_POST else 0.0
    end = tl.minimum(m0 + BLOCK_M, N)
    program = ((g * tl.num_programs(1) // G + b) * SLOTS + tl.program_id(0)) * C * C
    square = tl.arange(0, C)[:, None] * C + tl.arange(0, C)[None, :]
    if DELTA_ONLY:  # δ and the post-softmax mixer's gradient, which needs no δ
        delta = tl.zeros([C, BLOCK_M], dtype=tl.float32)
        dwpost = tl.zeros([C, C], dtype=tl.float32)
        for n0 in range(0, end, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            _, p = _probabilities(Q, K, heads, kv_heads, rows, cols, wpre, lse, N, HD, scale, C, HAS_PRE, BLOCK_M,
                                  BLOCK_N, BLOCK_K, PRECISION, MIX_PRECISION)
            dy = _dots(DO, V, heads, kv_heads, rows, cols, N, DV, C, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
            dwpost += _gram(p, dy, C, BLOCK_M, BLOCK_N, MIX_PRECISION)
            delta += tl.sum(p * _mix(dy, wpost_back, C, BLOCK_M, BLOCK_N, MIX_PRECISION), 2)
        tl.store(DELTA + stats, delta, mask=rows[None, :] < N)
        tl.store(DWPOST + program + square, dwpost)
        return
    delta = tl.load(DELTA + stats, mask=rows[None, :] < N, other=0.0)
    dq = tl.zeros([C, BLOCK_M, BLOCK_D], dtype=tl.float32)
    dwpre = tl.zeros([C, C], dtype=tl.float32)
    for n0 in range(0, end, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        s, p = _probabilities(Q, K, heads, kv_heads, rows, cols, wpre, lse, N, HD, scale, C, HAS_PRE, BLOCK_M,
                              BLOCK_N, BLOCK_K, PRECISION, MIX_PRECISION)
        dp = _dots(DO, V, heads, kv_heads, rows, cols, N, DV, C, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
        if HAS_POST:
            dp = _mix(dp, wpost_back, C, BLOCK_M, BLOCK_N, MIX_PRECISION)
        ds = p * (dp - delta[:, :, None])
        if HAS_PRE:
            if first:
                dwpre += _gram(s, ds, C, BLOCK_M, BLOCK_N, MIX_PRECISION)
            ds = _mix(ds, wpre_back, C, BLOCK_M, BLOCK_N, MIX_PRECISION)
        k = _load_rows(K, kv_heads, cols, dims, N, HD)
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    _store_rows(DQ, dq * scale, heads, rows, dims, N, HD)
    if HAS_PRE and first:
        tl.store(DWPRE + program + square, dwpre)


@triton.jit
def _backward_key_kernel(Q, K, V, WPRE, WPOST, DO, LSE, DELTA, GRAD, N, H, HKV, G, HD, DV, scale,
                         C: tl.constexpr, HAS_PRE: tl.constexpr, HAS_POST: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                         VALUES: tl.constexpr, PRECISION: tl.constexpr, MIX_PRECISION: tl.constexpr):
    """Grid (key tiles, B·G, chunks): with VALUES dv [C, cols, chunk of DV], else dk [C, cols, chunk of HD], for
    every query head of the group (the caller sums grouped-query heads), from every query tile that sees them."""
    n0 = tl.program_id(0) * BLOCK_N
    b, g, heads, kv_heads = _group(G, H, HKV, C)
    Q += b * H * N * HD
    DO += b * H * N * DV
    K += b * HKV * N * HD
    V += b * HKV * N * DV
    GRAD += b * H * N * (DV if VALUES else HD)
    LSE += b * H * N
    DELTA += b * H * N
    cols = n0 + tl.arange(0, BLOCK_N)
    dims = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    wpre = _mixer(WPRE, g, C, True) if HAS_PRE else 0.0
    wpre_back = _mixer(WPRE, g, C, False) if HAS_PRE else 0.0
    wpost = _mixer(WPOST, g, C, True) if HAS_POST else 0.0
    wpost_back = _mixer(WPOST, g, C, False) if HAS_POST else 0.0
    acc = tl.zeros([C, BLOCK_N, BLOCK_D], dtype=tl.float32)
    for m0 in range(n0 // BLOCK_M * BLOCK_M, N, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        stats = heads[:, None] * N + rows[None, :]
        lse = tl.load(LSE + stats, mask=rows[None, :] < N, other=float("inf"))
        _, p = _probabilities(Q, K, heads, kv_heads, rows, cols, wpre, lse, N, HD, scale, C, HAS_PRE, BLOCK_M,
                              BLOCK_N, BLOCK_K, PRECISION, MIX_PRECISION)
        if VALUES:  # dv = Yᵀ dO
            y = _mix(p, wpost, C, BLOCK_M, BLOCK_N, MIX_PRECISION) if HAS_POST else p
            do = _load_rows(DO, heads, rows, dims, N, DV)
            acc += tl.dot(tl.permute(y, (0, 2, 1)).to(do.dtype), do, input_precision=PRECISION)
        else:  # dk = dSᵀ q
            delta = tl.load(DELTA + stats, mask=rows[None, :] < N, other=0.0)
            dp = _dots(DO, V, heads, kv_heads, rows, cols, N, DV, C, BLOCK_M, BLOCK_N, BLOCK_K, PRECISION)
            if HAS_POST:
                dp = _mix(dp, wpost_back, C, BLOCK_M, BLOCK_N, MIX_PRECISION)
            ds = p * (dp - delta[:, :, None])
            if HAS_PRE:
                ds = _mix(ds, wpre_back, C, BLOCK_M, BLOCK_N, MIX_PRECISION)
            q = _load_rows(Q, heads, rows, dims, N, HD)
            acc += tl.dot(tl.permute(ds, (0, 2, 1)).to(q.dtype), q, input_precision=PRECISION)
    if VALUES:
        _store_rows(GRAD, acc, heads, cols, dims, N, DV)
    else:
        _store_rows(GRAD, acc * scale, heads, cols, dims, N, HD)


# ---------------------------------------------------------------------------------------------- launches


@functools.cache
def _tuned(name: str):
    """The kernel `name` wrapped in triton.autotune over CONFIGS (built on first GPU use)."""
    configs = [triton.Config(c.meta(), num_warps=c.num_warps, num_stages=c.num_stages) for c in CONFIGS]
    # the query kernel's partial-sum slots depend on its tile: zero them before each trial and the final launch
    partials = ["DWPRE", "DWPOST"] if name == "_backward_query_kernel" else None
    flag = {"_backward_key_kernel": ["VALUES"], "_backward_query_kernel": ["DELTA_ONLY"]}.get(name, [])
    key = ["HD", "DV", "C", "HAS_PRE", "HAS_POST", *flag]
    return triton.autotune(configs=configs, key=key,
                           reset_to_zero=partials)(globals()[name])


def _launch(name: str, grid, config: MixConfig | None, *args, **constexprs) -> None:
    """Launch `name` with `config`, or autotuned on a GPU when config is None."""
    if config is None and not INTERPRETING:
        _tuned(name)[grid](*args, **constexprs)
        return
    config = config or MixConfig()
    globals()[name][grid(config.meta())](*args, **constexprs, **config.meta(), num_warps=config.num_warps,
                                         num_stages=config.num_stages)


def _precisions(dtype: torch.dtype) -> tuple[str, str]:
    """tl.dot input precisions (products of q, k, v; mixing of float32 tiles). Half inputs multiply in their own
    dtype; the float32 score tiles are mixed in three tf32 passes (about float32's accuracy) on a GPU."""
    if INTERPRETING:
        return "ieee", "ieee"
    return ("ieee" if dtype == torch.float32 else "tf32"), "tf32x3"


class _Problem:
    """Shapes, flattened pointers and the constexprs shared by every launch of one call."""

    def __init__(self, q, k, v, wpre, wpost, scale):
        self.batch, self.heads, self.seq_len, self.head_dim = q.shape
        self.kv_heads, self.dv = k.shape[1], v.shape[-1]
        self.size = (wpre if wpre is not None else wpost).shape[1]
        self.groups = self.heads // self.size
        placeholder = q.new_zeros(1, dtype=torch.float32)
        self.wpre = placeholder if wpre is None else wpre.float().contiguous()
        self.wpost = placeholder if wpost is None else wpost.float().contiguous()
        precision, mix_precision = _precisions(q.dtype)
        self.constexprs = dict(C=self.size, HAS_PRE=wpre is not None, HAS_POST=wpost is not None,
                               PRECISION=precision, MIX_PRECISION=mix_precision)
        self.sizes = (self.seq_len, self.heads, self.kv_heads, self.groups, self.head_dim, self.dv, scale)

    def grid(self, block: str, width: int):
        """Launch grid (tiles of `block` over N, B·G, chunks of BLOCK_D over `width`)."""
        return lambda meta: (triton.cdiv(self.seq_len, meta[block]), self.batch * self.groups,
                             triton.cdiv(width, meta["BLOCK_D"]))


def _forward(q, k, v, wpre, wpost, scale, config):
    problem = _Problem(q, k, v, wpre, wpost, scale)
    out = function.empty_output((*q.shape[:3], v.shape[-1]), v.dtype, q.device)
    lse = function.empty_output(q.shape[:3], torch.float32, q.device)
    _launch("_forward_kernel", problem.grid("BLOCK_M", problem.dv), config, q, k, v, problem.wpre, problem.wpost,
            out, lse, *problem.sizes, **problem.constexprs)
    return out, lse


def _backward(q, k, v, wpre, wpost, out, lse, d_out, scale, config):
    problem = _Problem(q, k, v, wpre, wpost, scale)
    d_out = d_out.contiguous()
    dq = function.empty_output(q.shape, q.dtype, q.device)
    # partial mixer gradients, one [C, C] per query tile, [G, B, slots] (slots for 16-row tiles; unused ones stay 0)
    slots = triton.cdiv(problem.seq_len, 16)
    size = problem.size
    dwpre = torch.zeros((problem.groups, problem.batch * slots, size, size), dtype=torch.float32, device=q.device)
    dwpost = torch.zeros_like(dwpre)
    query_args = (q, k, v, problem.wpre, problem.wpost, d_out, lse)
    query_outputs = (dq, dwpre, dwpost, slots, *problem.sizes)
    if wpost is None:  # δ = rowsum(P ⊙ dP) = rowsum(dO ⊙ O) when P itself multiplies V
        delta = (d_out.float() * out.float()).sum(-1)
    else:  # a first launch of the query kernel finds it
        delta = function.empty_output(q.shape[:3], torch.float32, q.device)
        _launch("_backward_query_kernel", problem.grid("BLOCK_M", 1), config, *query_args, delta, *query_outputs,
                DELTA_ONLY=True, **problem.constexprs)
    _launch("_backward_query_kernel", problem.grid("BLOCK_M", problem.head_dim), config, *query_args, delta,
            *query_outputs, DELTA_ONLY=False, **problem.constexprs)
    grouped_kv = problem.kv_heads != problem.heads
    grads = []
    for values, like, width in ((False, k, problem.head_dim), (True, v, problem.dv)):
        grad = function.empty_output((*q.shape[:3], width), torch.float32 if grouped_kv else like.dtype, q.device)
        _launch("_backward_key_kernel", problem.grid("BLOCK_N", width), config, q, k, v, problem.wpre, problem.wpost,
                d_out, lse, delta, grad, *problem.sizes, VALUES=values, **problem.constexprs)
        if grouped_kv:  # query heads h share key head h // (H / H_kv): sum their gradients
            grad = grad.view(problem.batch, problem.kv_heads, -1, *grad.shape[2:]).sum(2).to(like.dtype)
        grads.append(grad)
    mixer_grads = (None if m is None else w.sum(1).to(m.dtype) for m, w in ((wpre, dwpre), (wpost, dwpost)))
    return dq, *grads, *mixer_grads


class _MixedHeadsAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, wpre, wpost, scale, config):
        out, lse = _forward(q, k, v, wpre, wpost, scale, config)
        ctx.save_for_backward(q, k, v, wpre, wpost, out, lse)
        ctx.scale, ctx.config = scale, config
        return out

    @staticmethod
    def backward(ctx, d_out):
        if torch.is_grad_enabled():  # create_graph=True: a second derivative was asked for
            raise RuntimeError("the triton backend's head-mixing kernels are not twice differentiable; use "
                               "backend='reference' for double backward")
        q, k, v, wpre, wpost, out, lse = ctx.saved_tensors
        grads = _backward(q, k, v, wpre, wpost, out, lse, d_out, ctx.scale, ctx.config)
        return *grads, None, None


def fused_mixing_serves(kernel_pre, kernel_post, head_mix_pre, head_mix_post) -> bool:
    """Whether `mixed_heads_attention` computes the call: no convolutions, at least one mixer, every mixer given
    of one group size C, a power of two >= MIN_GROUP."""
    mixers = [m for m in (head_mix_pre, head_mix_post) if m is not None]
    if kernel_pre is not None or kernel_post is not None or not mixers:
        return False
    size = mixers[0].shape[1]
    return size >= MIN_GROUP and size & (size - 1) == 0 and all(m.shape[1] == size for m in mixers)


def mixed_heads_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, head_mix_pre: torch.Tensor | None,
                          head_mix_post: torch.Tensor | None, scale: float,
                          config: MixConfig | None = None) -> torch.Tensor:
    """Causal attention with head mixing before and/or after the softmax (docs/spec.md §1, no convolutions),
    fused: no N×N map is stored, forward or backward.

    q: [B, H, N, d]; k: [B, H_kv, N, d]; v: [B, H_kv, N, d_v] (H a multiple of H_kv; float16, bfloat16 or float32);
    head_mix_pre, head_mix_post: [G, C, C] or None (`fused_mixing_serves` must hold), float32 or q's dtype.
    config: tiles; None autotunes on a GPU. Returns [B, H, N, d_v] in q's dtype. Not twice differentiable.
    """
    q, k, v = (x.contiguous() for x in (q, k, v))
    return _MixedHeadsAttention.apply(q, k, v, head_mix_pre, head_mix_post, float(scale), config)
