"""Head mixing of materialised attention-map blocks as Triton kernels, forward and backward.

`mix_maps(x, mixer)` computes `mta.ops.reference.head_mix` on float32 maps [B, H, R, M] of one query block
(rows are queries row_start … row_start+R-1, columns keys 0 … M-1): each program reads the c maps of one
group at BLOCK consecutive positions and writes their c mixtures, so the head axis never moves (the einsum of
the reference copies the maps twice each way). It can also write a fill value at the causally masked (future)
positions, which saves the masked_fill pass before a softmax.

Backward (`mix_maps_backward`): the maps' gradient, dX_i = Σ_o W[i, o] dY_o, and the mixer's,
dW[i, o] = Σ_p X_i[p] dY_o[p], summed per program over a stripe of positions into a partial sum that torch adds
up (deterministic, no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreter  # noqa: F401  (patches Triton's interpreter before any launch)

BLOCK = 256  # positions of one map per program step
STRIPE_PROGRAMS = 512  # aim for about this many programs per (batch, group) in the backward's partial sums

# As in stencil and token_ops, loads are written out in each kernel: nested jit helpers slow the interpreter.


@triton.jit
def _mix_kernel(X, W, Y, N_GROUPS, R, M, ROW_START, C: tl.constexpr, C_PAD: tl.constexpr, FILL: tl.constexpr,
                FILL_VALUE: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (position blocks, B·G). Y[b, g·C+o, p] = Σ_i W[g, i, o] X[b, g·C+i, p] over positions p = r·M + j;
    where FILL, Y = FILL_VALUE at the future positions j > ROW_START + r."""
    block, bg = tl.program_id(0), tl.program_id(1).to(tl.int64)
    size = R * M
    pos = block * BLOCK + tl.arange(0, BLOCK)
    inside = pos < size
    outs = tl.arange(0, C_PAD)
    base = bg * C * size  # heads g·C … g·C+C-1 of batch b, as H = G·C
    W += (bg % N_GROUPS) * C * C
    acc = tl.zeros([C_PAD, BLOCK], dtype=tl.float32)
    for i in tl.static_range(C):
        x = tl.load(X + base + i * size + pos, mask=inside, other=0.0).to(tl.float32)
        w = tl.load(W + i * C + outs, mask=outs < C, other=0.0).to(tl.float32)
        acc += w[:, None] * x[None, :]
    if FILL:
        future = (pos % M) > ROW_START + pos // M
        acc = tl.where(future[None, :], FILL_VALUE, acc)
    tl.store(Y + base + outs[:, None] * size + pos[None, :], acc.to(Y.dtype.element_ty),
             mask=(outs < C)[:, None] & inside[None, :])


@triton.jit
def _mix_backward_kernel(X, DY, W, DX, PARTIAL, N_GROUPS, R, M, ROW_START, STEPS, C: tl.constexpr,
                         C_PAD: tl.constexpr, ZERO_FUTURE: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (stripes, B·G); a stripe is STEPS consecutive position blocks.
    DX[b, g·C+i, p] = Σ_o W[g, i, o] DY[b, g·C+o, p] (0 at future positions where ZERO_FUTURE);
    PARTIAL[bg, stripe, i, o] = Σ_{p in stripe} X[b, g·C+i, p] DY[b, g·C+o, p]."""
    stripe, bg = tl.program_id(0), tl.program_id(1).to(tl.int64)
    size = R * M
    outs = tl.arange(0, C_PAD)
    base = bg * C * size
    W += (bg % N_GROUPS) * C * C
    d_mix = tl.zeros([C_PAD, C_PAD], dtype=tl.float32)
    for step in range(STEPS):
        pos = (stripe * STEPS + step) * BLOCK + tl.arange(0, BLOCK)
        inside = pos < size
        dy = tl.load(DY + base + outs[:, None] * size + pos[None, :], mask=(outs < C)[:, None] & inside[None, :],
                     other=0.0).to(tl.float32)
        future = (pos % M) > ROW_START + pos // M
        for i in tl.static_range(C):
            w = tl.load(W + i * C + outs, mask=outs < C, other=0.0).to(tl.float32)
            dx = tl.sum(w[:, None] * dy, 0)
            if ZERO_FUTURE:
                dx = tl.where(future, 0.0, dx)
            tl.store(DX + base + i * size + pos, dx.to(DX.dtype.element_ty), mask=inside)
            x = tl.load(X + base + i * size + pos, mask=inside, other=0.0).to(tl.float32)
            row = tl.sum(x[None, :] * dy, 1)  # [C_PAD]: this step's dW[g, i, :]
            d_mix = tl.where((outs == i)[:, None], d_mix + row[None, :], d_mix)
    slot = (bg * tl.num_programs(0) + stripe) * C_PAD * C_PAD
    tl.store(PARTIAL + slot + outs[:, None] * C_PAD + outs[None, :], d_mix)


def _check(x: torch.Tensor, mixer: torch.Tensor) -> None:
    if x.dim() != 4 or mixer.dim() != 3 or mixer.shape[1] != mixer.shape[2] or mixer.shape[0] * mixer.shape[1] != x.shape[1]:
        raise ValueError(f"maps must be [B, H, R, M] and mixer [G, c, c] with G·c = H, got {tuple(x.shape)} and "
                         f"{tuple(mixer.shape)}")
    if x.shape[2] * x.shape[3] >= 2**31:
        raise ValueError(f"a map must hold fewer than 2^31 elements, got {tuple(x.shape[2:])}")


def mix_maps(x: torch.Tensor, mixer: torch.Tensor, row_start: int = 0, fill: float | None = None,
             out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """`head_mix(x, mixer)` with Triton (module docstring); not differentiable (see `mix_maps_backward`).

    x: [B, H, R, M] contiguous, rows are queries row_start …; mixer: [G, c, c], mixer[g, i, o] weighting head
    g·c+i into g·c+o. fill: written at the future positions (key > query) when given. Returns [B, H, R, M] in
    out_dtype (default x's), accumulated in float32.
    """
    _check(x, mixer)
    batch, n_heads, rows, cols = x.shape
    groups, size, _ = mixer.shape
    out = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
    grid = (triton.cdiv(rows * cols, BLOCK), batch * groups)
    _mix_kernel[grid](x, mixer.contiguous(), out, groups, rows, cols, row_start, C=size,
                      C_PAD=triton.next_power_of_2(size), FILL=fill is not None,
                      FILL_VALUE=0.0 if fill is None else fill, BLOCK=BLOCK)
    return out


def mix_maps_backward(x: torch.Tensor, d_out: torch.Tensor, mixer: torch.Tensor, row_start: int = 0,
                      zero_future: bool = False, out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of `mix_maps(x, mixer)` given d_out [B, H, R, M]: (d_x in out_dtype (default x's), with zeros at
    the future positions when zero_future; d_mixer [G, c, c] float32)."""
    _check(x, mixer)
    batch, n_heads, rows, cols = x.shape
    groups, size, _ = mixer.shape
    blocks = triton.cdiv(rows * cols, BLOCK)
    steps = triton.cdiv(blocks, min(blocks, STRIPE_PROGRAMS))
    stripes = triton.cdiv(blocks, steps)
    pad = triton.next_power_of_2(size)
    d_x = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
    partial = torch.empty((batch, groups, stripes, pad, pad), dtype=torch.float32, device=x.device)
    _mix_backward_kernel[(stripes, batch * groups)](
        x, d_out.contiguous(), mixer.contiguous(), d_x, partial, groups, rows, cols, row_start, steps, C=size,
        C_PAD=pad, ZERO_FUTURE=zero_future, BLOCK=BLOCK,
    )
    return d_x, partial.sum((0, 2))[:, :size, :size]
