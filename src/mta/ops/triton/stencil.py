"""The q–k convolution of docs/spec.md §1 on materialised maps as a Triton stencil, forward and backward.

`qk_conv_stencil(scores, kernel)` computes `mta.ops.reference.qk_conv` (a depthwise 2-D cross-correlation over
[B, H, R, M] maps, causal over the c_q query rows, centred over the c_k keys, zeros outside the map) for the
reference and chunked backends on a GPU, where cuDNN's depthwise convolution is slow on such maps with small
kernels (it dominated a naive MTA op's time). Each program
computes one [BLOCK_R, BLOCK_M] output tile as c_q·c_k scaled, shifted, masked loads of the input (cache hits
after the first), accumulated in float32; nothing is padded or copied.

Backward: the gradient of the map is the adjoint stencil (anti-causal over rows, the key taps mirrored); that of
the kernel, Σ dY ⊙ shifted X for every tap, is summed per program over a stripe of row tiles (as products of
tiles whose diagonals are the taps) into a partial sum per tap, which torch adds up (deterministic, no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreter  # noqa: F401  (patches Triton's interpreter before any launch)
from .maps import check_precision

BLOCK_R, BLOCK_M = 16, 64  # output tile: query rows × keys
GRAD_BLOCK_R, GRAD_BLOCK_M = 32, 16  # the kernel gradient's tiles: rows (the products' inner dimension) × keys
GRAD_PROGRAMS = 4096  # aim for about this many programs in the kernel-gradient launch (stripes × tiles × maps)
# Tap rows (a power of 2) per kernel-gradient program: the paper's 6 rows in three programs of 2 made C's
# forward+backward at 8k fastest on the H200 (165 ms, against 176, 177 and 182 ms with 1, 4 and 8 rows;
# results/perf/map_tap_rows_sweep.json): wider programs hold larger float32 window tiles.
GRAD_TAP_ROWS = 2


# As in token_ops, loads are written out in each kernel: nested jit helpers slow the interpreter (CPU tests).
# Interior tiles, whose every tap reads inside the map, take a path without masks: one load (a constant offset
# from the tile's pointers) and one FMA per tap and element; the masked path only serves the map's edges. On the
# H200 this took a pass of the stencil over C's maps at 8k from about 41 to 9 ms.


@triton.jit
def _stencil_kernel(X, W, Y, H, R, M, ROW_START, C_Q: tl.constexpr, C_K: tl.constexpr, ADJOINT: tl.constexpr,
                    ZERO_FUTURE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr):
    """Grid (row tiles, key tiles, B·H) over row-major [R, M] maps; W [H, C_Q, C_K].

    Y[i, j] = Σ_{a,b} W[h, a, b] X[i - (C_Q-1) + a, j - (C_K-1)/2 + b]            (forward)
    Y[i, j] = Σ_{a,b} W[h, a, b] X[i + (C_Q-1) - a, j + (C_K-1)/2 - b]            (ADJOINT: the map's gradient)
    with X = 0 outside [0, R) × [0, M); where ZERO_FUTURE, Y = 0 at j > ROW_START + i (row i is query
    ROW_START + i)."""
    bh = tl.program_id(2).to(tl.int64)
    row0, col0 = tl.program_id(0) * BLOCK_R, tl.program_id(1) * BLOCK_M
    rows = row0 + tl.arange(0, BLOCK_R)
    cols = col0 + tl.arange(0, BLOCK_M)
    X += bh * R * M
    W += (bh % H) * C_Q * C_K
    half = (C_K - 1) // 2
    sign = -1 if ADJOINT else 1  # the source of tap (a, b) is row i + sign·(a - (C_Q-1)), column j + sign·(b - half)
    first_row = row0 if ADJOINT else row0 - (C_Q - 1)
    last_row = row0 + BLOCK_R - 1 + (C_Q - 1 if ADJOINT else 0)
    interior = (first_row >= 0) & (last_row < R) & (col0 - half >= 0) & (col0 + BLOCK_M - 1 + half < M)
    acc = tl.zeros([BLOCK_R, BLOCK_M], dtype=tl.float32)
    if interior:
        tile = X + rows[:, None] * M + cols[None, :]
        for a in tl.static_range(C_Q):
            row_tile = tile + sign * (a - (C_Q - 1)) * M
            for b in tl.static_range(C_K):
                acc += tl.load(W + a * C_K + b).to(tl.float32) * tl.load(row_tile + sign * (b - half)).to(tl.float32)
    else:
        for a in tl.static_range(C_Q):
            src_rows = rows + sign * (a - (C_Q - 1))
            in_rows = ((src_rows >= 0) & (src_rows < R))[:, None]
            for b in tl.static_range(C_K):
                src_cols = cols + sign * (b - half)
                inside = in_rows & ((src_cols >= 0) & (src_cols < M))[None, :]
                x = tl.load(X + src_rows[:, None] * M + src_cols[None, :], mask=inside, other=0.0)
                acc += tl.load(W + a * C_K + b).to(tl.float32) * x.to(tl.float32)
    if ZERO_FUTURE:
        acc = tl.where(cols[None, :] > ROW_START + rows[:, None], 0.0, acc)
    tl.store(Y + bh * R * M + rows[:, None] * M + cols[None, :], acc.to(Y.dtype.element_ty),
             mask=(rows < R)[:, None] & (cols < M)[None, :])


@triton.jit
def _kernel_grad_kernel(X, DY, PARTIAL, R, M, TILES_PER_STRIPE, C_Q: tl.constexpr, C_K: tl.constexpr,
                        TAPS: tl.constexpr, TAP_ROWS: tl.constexpr, WINDOW: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_M: tl.constexpr):
    """Grid (key tiles, row stripes × tap-row groups, B·H): PARTIAL[bh, program, a·C_K + b] = Σ DY[i, j]
    X[i - (C_Q-1) + a, j - (C_K-1)/2 + b] over the stripe's TILES_PER_STRIPE row tiles and the key tile's BLOCK_M
    columns, for the TAP_ROWS tap rows a of the program's group (0 for the other taps).

    As products of tiles: with the window of X read by the key tile, columns col0 - (C_K-1)/2 + w for w < WINDOW,
    G[j, t·WINDOW + w] = Σ_i DY[i, col0 + j] X[i - (C_Q-1) + a0 + t, col0 - (C_K-1)/2 + w] is one float32 tl.dot
    per row tile (the rows are its inner dimension), and tap (a0 + t, b) is the diagonal sum
    Σ_j G[j, t·WINDOW + j + b], taken once per program. No reduction per tap and tile (they made the element-wise
    version ~8× slower than the stencil itself on the H200). Fewer tap rows per program: smaller tiles (registers)
    and more programs, each reading DY again."""
    key_tile, stripe_group, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
    groups = (C_Q + TAP_ROWS - 1) // TAP_ROWS
    stripe, first_tap_row = stripe_group // groups, (stripe_group % groups) * TAP_ROWS
    col0 = key_tile * BLOCK_M
    cols = col0 + tl.arange(0, BLOCK_M)
    X += bh * R * M
    DY += bh * R * M
    half = (C_K - 1) // 2
    window = tl.arange(0, TAP_ROWS * WINDOW)  # column t·WINDOW + w of G
    tap_row, shift = first_tap_row + window // WINDOW, window % WINDOW
    src_cols = col0 - half + shift
    cols_ok = (tap_row < C_Q) & (src_cols >= 0) & (src_cols < M)
    g = tl.zeros([BLOCK_M, TAP_ROWS * WINDOW], dtype=tl.float32)
    for tile in range(TILES_PER_STRIPE):
        rows = (stripe * TILES_PER_STRIPE + tile) * BLOCK_R + tl.arange(0, BLOCK_R)
        dy = tl.load(DY + rows[:, None] * M + cols[None, :], mask=(rows < R)[:, None] & (cols < M)[None, :],
                     other=0.0).to(tl.float32)
        src_rows = rows[:, None] + (tap_row[None, :] - (C_Q - 1))
        inside = (src_rows >= 0) & (src_rows < R) & cols_ok[None, :]
        x = tl.load(X + src_rows * M + src_cols[None, :], mask=inside, other=0.0).to(tl.float32)
        g += tl.dot(tl.trans(dy), x, input_precision=PRECISION)
    diagonal = shift[None, :] - tl.arange(0, BLOCK_M)[:, None]  # b where w = j + b
    taps = tl.arange(0, TAPS)
    totals = tl.zeros([TAPS], dtype=tl.float32)
    for t in tl.static_range(TAP_ROWS):
        for b in tl.static_range(C_K):
            total = tl.sum(tl.sum(tl.where((tap_row[None, :] == first_tap_row + t) & (diagonal == b), g, 0.0), 1), 0)
            totals = tl.where(taps == (first_tap_row + t) * C_K + b, total, totals)
    programs = tl.num_programs(0) * tl.num_programs(1)
    slot = (bh * programs + stripe_group * tl.num_programs(0) + key_tile) * TAPS
    tl.store(PARTIAL + slot + taps, totals, mask=taps < C_Q * C_K)


def conv_maps(x: torch.Tensor, kernel: torch.Tensor, adjoint: bool = False, row_start: int | None = None) -> torch.Tensor:
    """The stencil on float32 maps x [B, H, R, M] with kernel [H, c_q, c_k] float32: qk_conv, or with adjoint its
    gradient with respect to the map. With row_start (the query of row 0), the output is 0 at future keys
    (key > query), as masked_fill would make it. Returns [B, H, R, M] float32; not differentiable."""
    batch, n_heads, rows, cols = x.shape
    out = torch.empty_like(x)
    grid = (triton.cdiv(rows, BLOCK_R), triton.cdiv(cols, BLOCK_M), batch * n_heads)
    _stencil_kernel[grid](x, kernel, out, n_heads, rows, cols, row_start or 0, C_Q=kernel.shape[1],
                          C_K=kernel.shape[2], ADJOINT=adjoint, ZERO_FUTURE=row_start is not None, BLOCK_R=BLOCK_R,
                          BLOCK_M=BLOCK_M)
    return out


def conv_maps_kernel_grad(x: torch.Tensor, d_out: torch.Tensor, kernel: torch.Tensor,
                          precision: str = "ieee") -> torch.Tensor:
    """The gradient of conv_maps(x, kernel) with respect to kernel, given d_out: [H, c_q, c_k] in kernel's dtype.
    precision: the tile products' tl.dot input precision (`maps.DOT_PRECISIONS`)."""
    check_precision(precision)
    batch, n_heads, rows, cols = x.shape
    c_q, c_k = kernel.shape[1:]
    tap_rows = min(GRAD_TAP_ROWS, triton.next_power_of_2(c_q))
    groups = triton.cdiv(c_q, tap_rows)
    key_tiles, row_tiles = triton.cdiv(cols, GRAD_BLOCK_M), triton.cdiv(rows, GRAD_BLOCK_R)
    stripes = max(1, min(row_tiles, GRAD_PROGRAMS // (key_tiles * groups * batch * n_heads)))
    tiles_per_stripe = triton.cdiv(row_tiles, stripes)
    stripes = triton.cdiv(row_tiles, tiles_per_stripe)
    taps = triton.next_power_of_2(c_q * c_k)
    partial = torch.empty((batch, n_heads, stripes * groups * key_tiles, taps), dtype=torch.float32, device=x.device)
    _kernel_grad_kernel[(key_tiles, stripes * groups, batch * n_heads)](
        x, d_out, partial, rows, cols, tiles_per_stripe, C_Q=c_q, C_K=c_k, TAPS=taps, TAP_ROWS=tap_rows,
        WINDOW=max(16, triton.next_power_of_2(GRAD_BLOCK_M + c_k - 1)), PRECISION=precision, BLOCK_R=GRAD_BLOCK_R,
        BLOCK_M=GRAD_BLOCK_M,
    )
    return partial.sum((0, 2))[:, : c_q * c_k].view(n_heads, c_q, c_k).to(kernel.dtype)


class _QKConvStencil(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, kernel):
        ctx.save_for_backward(scores, kernel)
        return conv_maps(scores, kernel)

    @staticmethod
    def backward(ctx, d_out):
        scores, kernel = ctx.saved_tensors
        d_out = d_out.contiguous()
        d_scores = conv_maps(d_out, kernel, adjoint=True) if ctx.needs_input_grad[0] else None
        d_kernel = conv_maps_kernel_grad(scores, d_out, kernel) if ctx.needs_input_grad[1] else None
        return d_scores, d_kernel


def qk_conv_stencil(scores: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """`mta.ops.reference.qk_conv` (docs/spec.md §1's conv) through the Triton stencil, differentiable in both inputs.

    scores: [B, H, R, M] float32 (zeros wherever the conv input is zero), R·M < 2^31; kernel: [H, c_q, c_k]
    (c_k odd) in scores' dtype. Returns [B, H, R, M] float32.
    """
    if scores.dtype != torch.float32 or kernel.dtype != torch.float32:
        raise ValueError(f"scores and kernel must be float32, got {scores.dtype} and {kernel.dtype}")
    if scores.dim() != 4 or kernel.dim() != 3 or kernel.shape[0] != scores.shape[1] or kernel.shape[2] % 2 == 0:
        raise ValueError(
            f"scores must be [B, H, R, M] and kernel [H, c_q, c_k] with c_k odd, got {tuple(scores.shape)} and "
            f"{tuple(kernel.shape)}"
        )
    if scores.shape[2] * scores.shape[3] >= 2**31:
        raise ValueError(f"a map of scores must hold fewer than 2^31 elements, got {tuple(scores.shape[2:])}")
    return _QKConvStencil.apply(scores.contiguous(), kernel.contiguous())
