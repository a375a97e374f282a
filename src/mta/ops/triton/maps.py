"""Head mixing of materialised attention-map blocks as Triton kernels, forward and backward.

`mix_maps(x, mixer)` computes `mta.ops.reference.head_mix` on float32 maps [B, H, R, M] of one query block
(rows are queries row_start … row_start+R-1, columns keys 0 … M-1): each program reads the c maps of one
group at BLOCK consecutive positions and writes their c mixtures, one float32 product [c, c] × [c, BLOCK]
(tl.dot in the caller's precision, DOT_PRECISIONS; c padded to at least 16), so the head axis never moves (the einsum of the reference
copies the maps twice each way). It can also write a fill value at the causally masked (future)
positions, which saves the masked_fill pass before a softmax.

Backward (`mix_maps_backward`): the maps' gradient, dX_i = Σ_o W[i, o] dY_o, and the mixer's,
dW[i, o] = Σ_p X_i[p] dY_o[p], both products of tiles, the latter summed per program over a stripe of
positions into a partial sum that torch adds up (deterministic, no atomics).
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


def check_precision(precision: str) -> None:
    if precision not in DOT_PRECISIONS:
        raise ValueError(f"precision must be one of {DOT_PRECISIONS}, got {precision!r}")


def _check(x: torch.Tensor, mixer: torch.Tensor, precision: str) -> None:
    check_precision(precision)
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
    _check(x, mixer, precision)
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
    _check(x, mixer, precision)
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
