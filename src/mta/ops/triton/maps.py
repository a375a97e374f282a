"""Head mixing of materialised attention-map blocks as Triton kernels, forward and backward.

`mix_maps(x, mixer)` computes `mta.ops.reference.head_mix` on float32 maps [B, H, R, M] of one query block
(rows are queries row_start … row_start+R-1, columns keys 0 … M-1): each program reads the c maps of one
group at BLOCK consecutive positions and writes their c mixtures, one float32 product [c, c] × [c, BLOCK]
(tl.dot, IEEE precision, c padded to at least 16), so the head axis never moves (the einsum of the reference
copies the maps twice each way). It can also write a fill value at the causally masked (future)
positions, which saves the masked_fill pass before a softmax.

Backward (`mix_maps_backward`): the maps' gradient, dX_i = Σ_o W[i, o] dY_o, and the mixer's,
dW[i, o] = Σ_p X_i[p] dY_o[p], both products of tiles, the latter summed per program over a stripe of
positions into a partial sum that torch adds up (deterministic, no atomics).

For blocks without convolutions (talking heads), `mixed_softmax_rows`, `mixed_weights` and
`mixed_weights_backward` go from the scores to the final weights and back without writing the mixed logits or
the probabilities (the section before them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreter  # noqa: F401  (patches Triton's interpreter before any launch)

BLOCK = 128  # positions of one map per program step
MIN_PAD = 16  # tl.dot's smallest operand side: groups are padded to at least 16 heads
BACKWARD_PROGRAMS = 8192  # aim for about this many programs in all in the backward (stripes × batch × groups)
# tl.dot's input_precision for the float32 maps: "ieee" is exact float32 (CUDA cores); "tf32x3" splits each
# operand into two TF32 parts and keeps three of the four products (tensor cores, ~float32 accuracy); "tf32"
# rounds the operands to TF32 (10-bit mantissa, as the half-precision kernels of `kernels` do).
DOT_PRECISIONS = ("ieee", "tf32x3", "tf32")


@triton.jit
def _mix_kernel(X, W, Y, N_GROUPS, R, M, ROW_START, C: tl.constexpr, C_PAD: tl.constexpr, FILL: tl.constexpr,
                FILL_VALUE: tl.constexpr, PRECISION: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (position blocks, B·G). Y[b, g·C+o, p] = Σ_i W[g, i, o] X[b, g·C+i, p] over positions p = r·M + j;
    where FILL, Y = FILL_VALUE at the future positions j > ROW_START + r."""
    block, bg = tl.program_id(0), tl.program_id(1).to(tl.int64)
    size = R * M
    pos = block * BLOCK + tl.arange(0, BLOCK)
    heads = tl.arange(0, C_PAD)
    tile = (heads < C)[:, None] & (pos < size)[None, :]
    offsets = bg * C * size + heads[:, None] * size + pos[None, :]  # heads g·C … of batch b, as H = G·C
    x = tl.load(X + offsets, mask=tile, other=0.0).to(tl.float32)
    w_t = tl.load(W + (bg % N_GROUPS) * C * C + heads[None, :] * C + heads[:, None],
                  mask=(heads < C)[:, None] & (heads < C)[None, :], other=0.0).to(tl.float32)  # [o, i]
    y = tl.dot(w_t, x, input_precision=PRECISION)
    if FILL:
        future = (pos % M) > ROW_START + pos // M
        y = tl.where(future[None, :], FILL_VALUE, y)
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=tile)


@triton.jit
def _mix_backward_kernel(X, DY, W, DX, PARTIAL, N_GROUPS, R, M, ROW_START, STEPS, C: tl.constexpr,
                         C_PAD: tl.constexpr, ZERO_FUTURE: tl.constexpr, PRECISION: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (stripes, B·G); a stripe is STEPS consecutive position blocks.
    DX[b, g·C+i, p] = Σ_o W[g, i, o] DY[b, g·C+o, p] (0 at future positions where ZERO_FUTURE);
    PARTIAL[bg, stripe, i, o] = Σ_{p in stripe} X[b, g·C+i, p] DY[b, g·C+o, p]."""
    stripe, bg = tl.program_id(0), tl.program_id(1).to(tl.int64)
    size = R * M
    heads = tl.arange(0, C_PAD)
    square = (heads < C)[:, None] & (heads < C)[None, :]
    w = tl.load(W + (bg % N_GROUPS) * C * C + heads[:, None] * C + heads[None, :], mask=square,
                other=0.0).to(tl.float32)  # [i, o]
    d_mix = tl.zeros([C_PAD, C_PAD], dtype=tl.float32)
    for step in range(STEPS):
        pos = (stripe * STEPS + step) * BLOCK + tl.arange(0, BLOCK)
        tile = (heads < C)[:, None] & (pos < size)[None, :]
        offsets = bg * C * size + heads[:, None] * size + pos[None, :]
        dy = tl.load(DY + offsets, mask=tile, other=0.0).to(tl.float32)
        dx = tl.dot(w, dy, input_precision=PRECISION)
        if ZERO_FUTURE:
            future = (pos % M) > ROW_START + pos // M
            dx = tl.where(future[None, :], 0.0, dx)
        tl.store(DX + offsets, dx.to(DX.dtype.element_ty), mask=tile)
        x = tl.load(X + offsets, mask=tile, other=0.0).to(tl.float32)
        d_mix += tl.dot(x, tl.trans(dy), input_precision=PRECISION)
    slot = (bg * tl.num_programs(0) + stripe) * C_PAD * C_PAD
    tl.store(PARTIAL + slot + heads[:, None] * C_PAD + heads[None, :], d_mix)


def _stripes(positions: int, maps: int) -> tuple[int, int]:
    """(position blocks per program, programs per map) of a backward launch over `maps` groups of maps of
    `positions` positions each: about BACKWARD_PROGRAMS programs in all."""
    blocks = triton.cdiv(positions, BLOCK)
    steps = triton.cdiv(blocks, min(blocks, max(1, BACKWARD_PROGRAMS // maps)))
    return steps, triton.cdiv(blocks, steps)


def _check(x: torch.Tensor, mixer: torch.Tensor) -> None:
    if x.dim() != 4 or mixer.dim() != 3 or mixer.shape[1] != mixer.shape[2] or mixer.shape[0] * mixer.shape[1] != x.shape[1]:
        raise ValueError(f"maps must be [B, H, R, M] and mixer [G, c, c] with G·c = H, got {tuple(x.shape)} and "
                         f"{tuple(mixer.shape)}")
    if x.shape[2] * x.shape[3] >= 2**31:
        raise ValueError(f"a map must hold fewer than 2^31 elements, got {tuple(x.shape[2:])}")


def mix_maps(x: torch.Tensor, mixer: torch.Tensor, row_start: int = 0, fill: float | None = None,
             out_dtype: torch.dtype | None = None, precision: str = "ieee") -> torch.Tensor:
    """`head_mix(x, mixer)` with Triton (module docstring); not differentiable (see `mix_maps_backward`).

    x: [B, H, R, M] contiguous, rows are queries row_start …; mixer: [G, c, c], mixer[g, i, o] weighting head
    g·c+i into g·c+o. fill: written at the future positions (key > query) when given. precision: the products'
    (`DOT_PRECISIONS`). Returns [B, H, R, M] in out_dtype (default x's), accumulated in float32.
    """
    _check(x, mixer)
    batch, n_heads, rows, cols = x.shape
    groups, size, _ = mixer.shape
    out = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
    grid = (triton.cdiv(rows * cols, BLOCK), batch * groups)
    _mix_kernel[grid](x, mixer.contiguous(), out, groups, rows, cols, row_start, C=size,
                      C_PAD=max(MIN_PAD, triton.next_power_of_2(size)), FILL=fill is not None,
                      FILL_VALUE=0.0 if fill is None else fill, PRECISION=precision, BLOCK=BLOCK)
    return out


def mix_maps_backward(x: torch.Tensor, d_out: torch.Tensor, mixer: torch.Tensor, row_start: int = 0,
                      zero_future: bool = False, out_dtype: torch.dtype | None = None,
                      precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of `mix_maps(x, mixer, precision=precision)` given d_out [B, H, R, M]: (d_x in out_dtype
    (default x's), with zeros at the future positions when zero_future; d_mixer [G, c, c] float32)."""
    _check(x, mixer)
    batch, n_heads, rows, cols = x.shape
    groups, size, _ = mixer.shape
    steps, stripes = _stripes(rows * cols, batch * groups)
    pad = max(MIN_PAD, triton.next_power_of_2(size))
    d_x = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
    partial = torch.empty((batch, groups, stripes, pad, pad), dtype=torch.float32, device=x.device)
    _mix_backward_kernel[(stripes, batch * groups)](
        x, d_out.contiguous(), mixer.contiguous(), d_x, partial, groups, rows, cols, row_start, steps, C=size,
        C_PAD=pad, ZERO_FUTURE=zero_future, PRECISION=precision, BLOCK=BLOCK,
    )
    return d_x, partial.sum((0, 2))[:, :size, :size]


# Talking-heads blocks (head mixing without convolutions): the logits and probabilities never reach memory. From
# the scores S, one kernel takes each row's log-sum-exp of the mixed logits T = mixᵀ S, and the next recomputes
# T and P = exp(T - lse) per tile and writes only the post-mixed weights; the backward likewise, with the
# softmax's row sums Σ_j P dP from a third kernel.


@triton.jit
def _mixed_rows_kernel(S, DW, WPRE, WPOST, LSE, OUT, N_GROUPS, R, M, ROW_START, C: tl.constexpr,
                       C_PAD: tl.constexpr, BACKWARD: tl.constexpr, PRECISION: tl.constexpr, BLOCK_R: tl.constexpr,
                       BLOCK_N: tl.constexpr):
    """Grid (row tiles, B·G), looping over the keys each row tile can see. With T_o = Σ_i WPRE[g, i, o] S_i:
    forward, OUT[b, g·C+o, r] = logsumexp over keys j <= ROW_START + r of T_o[r, j]; BACKWARD, with
    P = exp(T - LSE) and dP_i = Σ_o WPOST[g, i, o] DW_o, OUT[b, g·C+i, r] = Σ_j P_i[r, j] dP_i[r, j]."""
    row_tile, bg = tl.program_id(0), tl.program_id(1).to(tl.int64)
    heads = tl.arange(0, C_PAD)
    rows = row_tile * BLOCK_R + tl.arange(0, BLOCK_R)
    square = (heads < C)[:, None] & (heads < C)[None, :]
    g = bg % N_GROUPS
    w_pre_t = tl.load(WPRE + g * C * C + heads[None, :] * C + heads[:, None], mask=square, other=0.0)  # [o, i]
    w_post = tl.load(WPOST + g * C * C + heads[:, None] * C + heads[None, :], mask=square, other=0.0)  # [i, o]
    base = bg * C * R * M
    row_offsets = bg * C * R + heads[:, None] * R + rows[None, :]  # [C_PAD, BLOCK_R] into [B, H, R]
    row_mask = (heads < C)[:, None] & (rows < R)[None, :]
    total = tl.zeros([C_PAD, BLOCK_R], dtype=tl.float32)
    if BACKWARD:
        lse = tl.load(LSE + row_offsets, mask=row_mask, other=0.0)
    else:
        high = tl.full([C_PAD, BLOCK_R], float("-inf"), dtype=tl.float32)
    last_key = tl.minimum(M, ROW_START + row_tile * BLOCK_R + BLOCK_R)  # later keys are future for every row
    for key0 in range(0, last_key, BLOCK_N):
        keys = key0 + tl.arange(0, BLOCK_N)
        offsets = base + heads[:, None, None] * R * M + rows[None, :, None] * M + keys[None, None, :]
        inside = (heads < C)[:, None, None] & (rows < R)[None, :, None] & (keys < M)[None, None, :]
        s = tl.reshape(tl.load(S + offsets, mask=inside, other=0.0), [C_PAD, BLOCK_R * BLOCK_N])
        t = tl.reshape(tl.dot(w_pre_t, s, input_precision=PRECISION), [C_PAD, BLOCK_R, BLOCK_N])
        future = keys[None, None, :] > ROW_START + rows[None, :, None]
        if BACKWARD:
            p = tl.where(future, 0.0, tl.exp(t - lse[:, :, None]))
            dw = tl.reshape(tl.load(DW + offsets, mask=inside, other=0.0), [C_PAD, BLOCK_R * BLOCK_N])
            dp = tl.reshape(tl.dot(w_post, dw, input_precision=PRECISION), [C_PAD, BLOCK_R, BLOCK_N])
            total += tl.sum(p * dp, 2)
        else:
            t = tl.where(future, float("-inf"), t)
            new_high = tl.maximum(high, tl.max(t, 2))
            total = total * tl.exp(high - new_high) + tl.sum(tl.exp(t - new_high[:, :, None]), 2)
            high = new_high
    if not BACKWARD:
        total = high + tl.log(total)
    tl.store(OUT + row_offsets, total, mask=row_mask)


@triton.jit
def _mixed_probs_kernel(S, DW, WPRE, WPOST, LSE, DROW, OUT, PARTIAL, N_GROUPS, R, M, ROW_START, STEPS,
                        C: tl.constexpr, C_PAD: tl.constexpr, BACKWARD: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK: tl.constexpr):
    """Grid (stripes, B·G); a stripe is STEPS consecutive blocks of BLOCK positions p = r·M + j. With
    T = mixᵀ S by WPRE and P = exp(T - LSE) (0 at future keys): forward, OUT = mixᵀ P by WPOST, the weights;
    BACKWARD, with dP = WPOST·DW and dT = P (dP - DROW), OUT = WPRE·dT, the scores' gradient, and
    PARTIAL[bg, stripe] = (Σ_p P_i DW_o, Σ_p S_i dT_o), the two mixers' gradients."""
    stripe, bg = tl.program_id(0), tl.program_id(1).to(tl.int64)
    size = R * M
    heads = tl.arange(0, C_PAD)
    square = (heads < C)[:, None] & (heads < C)[None, :]
    g = bg % N_GROUPS
    w_pre = tl.load(WPRE + g * C * C + heads[:, None] * C + heads[None, :], mask=square, other=0.0)  # [i, o]
    w_post = tl.load(WPOST + g * C * C + heads[:, None] * C + heads[None, :], mask=square, other=0.0)
    d_post = tl.zeros([C_PAD, C_PAD], dtype=tl.float32)
    d_pre = tl.zeros([C_PAD, C_PAD], dtype=tl.float32)
    for step in range(STEPS):
        pos = (stripe * STEPS + step) * BLOCK + tl.arange(0, BLOCK)
        rows = pos // M
        tile = (heads < C)[:, None] & (pos < size)[None, :]
        offsets = bg * C * size + heads[:, None] * size + pos[None, :]
        s = tl.load(S + offsets, mask=tile, other=0.0)
        t = tl.dot(tl.trans(w_pre), s, input_precision=PRECISION)
        row_offsets = bg * C * R + heads[:, None] * R + rows[None, :]
        lse = tl.load(LSE + row_offsets, mask=tile, other=0.0)
        p = tl.where(tile & (pos % M <= ROW_START + rows)[None, :], tl.exp(t - lse), 0.0)
        if BACKWARD:
            dw = tl.load(DW + offsets, mask=tile, other=0.0)
            dp = tl.dot(w_post, dw, input_precision=PRECISION)
            dt = p * (dp - tl.load(DROW + row_offsets, mask=tile, other=0.0))
            out = tl.dot(w_pre, dt, input_precision=PRECISION)
            d_post += tl.dot(p, tl.trans(dw), input_precision=PRECISION)
            d_pre += tl.dot(s, tl.trans(dt), input_precision=PRECISION)
        else:
            out = tl.dot(tl.trans(w_post), p, input_precision=PRECISION)
        tl.store(OUT + offsets, out.to(OUT.dtype.element_ty), mask=tile)
    if BACKWARD:
        slot = (bg * tl.num_programs(0) + stripe) * 2 * C_PAD * C_PAD + heads[:, None] * C_PAD + heads[None, :]
        tl.store(PARTIAL + slot, d_post)
        tl.store(PARTIAL + slot + C_PAD * C_PAD, d_pre)


ROW_BLOCK, KEY_BLOCK = 16, 16  # the row kernels' tiles: [c, rows, keys] flattened to [c, 256] for the mixing


def _group_sizes(mixer: torch.Tensor) -> tuple[int, int, int]:
    """(groups, heads per group, heads per group padded for tl.dot) of a mixer [G, c, c]."""
    groups, size, _ = mixer.shape
    return groups, size, max(MIN_PAD, triton.next_power_of_2(size))


def mixed_softmax_rows(scores: torch.Tensor, mixer_pre: torch.Tensor, mixer_post: torch.Tensor, row_start: int,
                       lse: torch.Tensor | None = None, d_weights: torch.Tensor | None = None,
                       precision: str = "ieee") -> torch.Tensor:
    """Per-row statistics of the talking-heads block (section comment above). scores [B, H, R, M] float32
    (queries row_start …); mixers [G, c, c] float32, the same grouping. Without lse: the log-sum-exp of the
    mixed logits [B, H, R]; with lse and d_weights (the final weights' gradient): Σ_j P dP [B, H, R]."""
    _check(scores, mixer_pre)
    batch, n_heads, rows, cols = scores.shape
    groups, size, pad = _group_sizes(mixer_pre)
    out = torch.empty((batch, n_heads, rows), dtype=torch.float32, device=scores.device)
    backward = lse is not None
    _mixed_rows_kernel[(triton.cdiv(rows, ROW_BLOCK), batch * groups)](
        scores, d_weights if backward else scores, mixer_pre, mixer_post, lse if backward else out, out, groups,
        rows, cols, row_start, C=size, C_PAD=pad, BACKWARD=backward, PRECISION=precision, BLOCK_R=ROW_BLOCK,
        BLOCK_N=KEY_BLOCK,
    )
    return out


def mixed_weights(scores: torch.Tensor, mixer_pre: torch.Tensor, mixer_post: torch.Tensor, lse: torch.Tensor,
                  row_start: int, out_dtype: torch.dtype, precision: str = "ieee") -> torch.Tensor:
    """The talking-heads block's final weights mixᵀ_post softmax(mixᵀ_pre S) [B, H, R, M] in out_dtype, from the
    scores and the rows' log-sum-exp (`mixed_softmax_rows`)."""
    _check(scores, mixer_pre)
    batch, n_heads, rows, cols = scores.shape
    groups, size, pad = _group_sizes(mixer_pre)
    out = torch.empty(scores.shape, dtype=out_dtype, device=scores.device)
    _mixed_probs_kernel[(triton.cdiv(rows * cols, BLOCK), batch * groups)](
        scores, scores, mixer_pre, mixer_post, lse, lse, out, out, groups, rows, cols, row_start, 1, C=size,
        C_PAD=pad, BACKWARD=False, PRECISION=precision, BLOCK=BLOCK,
    )
    return out


def mixed_weights_backward(scores: torch.Tensor, d_weights: torch.Tensor, mixer_pre: torch.Tensor,
                           mixer_post: torch.Tensor, lse: torch.Tensor, row_start: int,
                           out_dtype: torch.dtype,
                           precision: str = "ieee") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of `mixed_weights` given d_weights [B, H, R, M] float32: (the scores' in out_dtype, mixer_pre's,
    mixer_post's, both [G, c, c] float32)."""
    batch, n_heads, rows, cols = scores.shape
    groups, size, pad = _group_sizes(mixer_pre)
    row_sums = mixed_softmax_rows(scores, mixer_pre, mixer_post, row_start, lse, d_weights, precision)
    steps, stripes = _stripes(rows * cols, batch * groups)
    d_scores = torch.empty(scores.shape, dtype=out_dtype, device=scores.device)
    partial = torch.empty((batch, groups, stripes, 2, pad, pad), dtype=torch.float32, device=scores.device)
    _mixed_probs_kernel[(stripes, batch * groups)](
        scores, d_weights, mixer_pre, mixer_post, lse, row_sums, d_scores, partial, groups, rows, cols, row_start,
        steps, C=size, C_PAD=pad, BACKWARD=True, PRECISION=precision, BLOCK=BLOCK,
    )
    sums = partial.sum((0, 2))[..., :size, :size]
    return d_scores, sums[:, 1], sums[:, 0]
