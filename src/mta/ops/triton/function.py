"""`banded_flash_attention`: the autograd.Function around the Triton kernels, and their launch configurations."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton

from . import kernels
from .interpreter import INTERPRETING
from .primitives import query_window

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class BlockConfig:
    """Tiles of one launch: query rows, key rows, Dqk and Dv column chunks (powers of 2, >= 16); GPU warps/stages;
    block: keys (backward) or queries (wide forward) whose probabilities one `_pair_kernel` launch buffers."""

    block_m: int = 32
    block_n: int = 32
    block_d: int = 32
    block_dv: int = 32
    num_warps: int = 4
    num_stages: int = 2
    block: int = 1024

    def meta(self) -> dict:
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, BLOCK_D=self.block_d, BLOCK_DV=self.block_dv)


# Candidates for the GPU autotuner, keyed on (d, group·taps, Dv); the interpreter takes the single default config.
# Forward: wide key tiles (128) halve the query tiles' reloads per score; on the H200 the first two took A's
# forward (Dqk = 6·128, Dv = 128) from 9.4 to 6.8-7.0 ms (benchmarks/results/triton_profile.json).
FORWARD_CONFIGS = (
    BlockConfig(128, 128, 128, 128, 8, 2),
    BlockConfig(128, 128, 64, 128, 8, 3),
    BlockConfig(64, 128, 64, 128, 4, 3),
    BlockConfig(64, 64, 64, 64, 4, 3),
)
PAIR_CONFIGS = (
    BlockConfig(128, 64, 64, 64, 8, 3),
    BlockConfig(64, 64, 64, 64, 4, 3),
    BlockConfig(128, 128, 64, 64, 8, 3),
    BlockConfig(64, 128, 64, 64, 4, 3),
)
# On a GPU, out is computed inside the forward kernel up to this width; wider outputs go through P blocks.
FUSED_DV_MAX = 128
BUFFER_BLOCK = BlockConfig().block


@functools.cache
def _tuned(name: str):
    """The kernel `name` wrapped in triton.autotune over its candidate configs (built on first GPU use)."""
    configs = FORWARD_CONFIGS if name == "_forward_kernel" else PAIR_CONFIGS
    return triton.autotune(
        configs=[triton.Config(c.meta(), num_warps=c.num_warps, num_stages=c.num_stages) for c in configs],
        key=["HD", "PIECES", "DV"],
    )(getattr(kernels, name))


def _launch(name: str, grid, config: BlockConfig | None, *args, **constexprs) -> None:
    """Launch kernels.<name> with `config`, or autotuned on a GPU when config is None.

    grid: function of the meta-parameters (BLOCK_M, …) giving the launch grid."""
    if config is None and not INTERPRETING:
        _tuned(name)[grid](*args, **constexprs)
        return
    config = config or BlockConfig()
    meta = config.meta()
    getattr(kernels, name)[grid(meta)](
        *args, **constexprs, **meta, num_warps=config.num_warps, num_stages=config.num_stages
    )


def empty_output(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocation of every kernel output (tests replace it with a NaN fill, so an unwritten element shows)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _precision(dtype: torch.dtype) -> str:
    # float32 inputs get exact float32 products, as torch's matmul does by default (no TF32)
    return "ieee" if dtype == torch.float32 else "tf32"


def _fused_forward(dv: int, config: BlockConfig | None) -> bool:
    """Whether `_forward_kernel` computes out itself (a narrow Dv), rather than P blocks and matrix products."""
    return dv <= (FUSED_DV_MAX if config is None else config.block_dv)


class _Operands:
    """q, kw, vw, band of one call flattened to [B·H, N, ·], with what every launch passes along; q stands for its
    window qw = query_window(q, taps, group), which the kernels read in place."""

    def __init__(self, q, kw, vw, band, config, taps, group, skip):
        self.batch, self.heads, self.seq_len, self.head_dim = q.shape
        self.dqk, self.dv = kw.shape[-1], vw.shape[-1]
        self.width, self.skip = 0 if band is None else band.shape[-1], skip
        self.bh = self.batch * self.heads
        self.q, self.kw, self.vw = (x.reshape(self.bh, self.seq_len, -1) for x in (q, kw, vw))
        self.band = kw if band is None else band  # a placeholder pointer when there is no band
        self.config = config
        self.block = BUFFER_BLOCK if config is None else config.block
        self.window = (self.head_dim, taps, group * taps, self.heads, group)  # HD, TAPS, PIECES, H, GROUP
        self.constexprs = dict(HAS_BAND=self.width > 0, HAS_SKIP=skip > 0, PRECISION=_precision(kw.dtype))

    def pairs(self, rows: tuple[int, int], cols: tuple[int, int], lse, d_out=None, delta=None, dband=None):
        """P without the diagonals i-j < skip (and, given d_out, delta and dband, dS off the band, dband on it)
        [B·H, rows, cols] for query rows [r0, r1), keys [c0, c1)."""
        (r0, r1), (c0, c1) = rows, cols
        n_rows, n_cols = r1 - r0, c1 - c0
        stride = -(-n_cols // 8) * 8  # 16-byte aligned rows for the matrix products
        grads = d_out is not None
        p = empty_output((self.bh, n_rows, stride), self.kw.dtype, self.kw.device)
        ds = empty_output((self.bh, n_rows, stride), self.kw.dtype, self.kw.device) if grads else p

        def grid(meta):
            return triton.cdiv(n_rows, meta["BLOCK_M"]), triton.cdiv(n_cols, meta["BLOCK_N"]), self.bh

        _launch("_pair_kernel", grid, self.config, self.q, self.kw, self.vw, self.band,
                d_out if grads else self.vw, lse, delta if grads else lse, p, ds, dband if grads else lse,
                self.seq_len, *self.window, self.dv, self.width, self.skip, r0, n_rows, c0, n_cols, stride,
                GRADS=grads, **self.constexprs)
        return p[..., :n_cols], ds[..., :n_cols]


class BandedFlashAttention(torch.autograd.Function):
    """(q, kw, vw, band, config, taps, group, skip) -> (out, lse) of qw = query_window(q, taps, group); see kernels'
    module docstring. Arguments are prepared by `banded_flash_attention`: contiguous, band float32 or None."""

    @staticmethod
    def forward(ctx, q, kw, vw, band, config, taps, group, skip):
        ops = _Operands(q.to(kw.dtype).contiguous(), kw, vw, band, config, taps, group, skip)
        n = ops.seq_len
        fused = _fused_forward(ops.dv, config)
        out = empty_output((ops.bh, n, ops.dv), vw.dtype, vw.device)
        lse = empty_output((ops.bh, n), torch.float32, vw.device)

        def grid(meta):
            return triton.cdiv(n, meta["BLOCK_M"]), triton.cdiv(ops.dv, meta["BLOCK_DV"]) if fused else 1, ops.bh

        _launch("_forward_kernel", grid, config, ops.q, ops.kw, ops.vw, ops.band, out, lse,
                n, *ops.window, ops.dv, ops.width, skip, WITH_OUTPUT=fused, **ops.constexprs)
        if not fused:  # out rows [r0, r1) = P'[r0:r1, :r1] · vw[:r1], a block of queries at a time
            for r0 in range(0, n, ops.block):
                r1 = min(n, r0 + ops.block)
                p, _ = ops.pairs((r0, r1), (0, r1), lse)
                torch.bmm(p, ops.vw[:, :r1], out=out[:, r0:r1])
        out, lse = out.view(vw.shape), lse.view(q.shape[:3])
        ctx.save_for_backward(q, kw, vw, band, out, lse)
        ctx.config, ctx.window = config, (taps, group, skip)
        return out, lse

    @staticmethod
    def backward(ctx, d_out, d_lse):
        q, kw, vw, band, out, lse = ctx.saved_tensors
        taps, group, skip = ctx.window
        ops = _Operands(q.to(kw.dtype).contiguous(), kw, vw, band, ctx.config, taps, group, skip)
        n = ops.seq_len
        qw = query_window(ops.q.view(q.shape), taps, group).reshape(ops.bh, n, ops.dqk)  # for dkw = dSᵀ · qw
        d_out = d_out.to(out.dtype).contiguous()
        delta = ((d_out.float() * out.float()).sum(-1) - d_lse).reshape(ops.bh, n)
        d_out = d_out.reshape(ops.bh, n, ops.dv)
        lse = lse.reshape(ops.bh, n)
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dkw = empty_output((ops.bh, n, ops.dqk), kw.dtype, kw.device)
        dvw = empty_output((ops.bh, n, ops.dv), vw.dtype, vw.device)
        dband = None if band is None else empty_output(band.shape, torch.float32, band.device)
        # keys [c0, c1) are seen by queries [c0, n): their P' and dS' give dkw, dvw there and a part of dq
        for c0 in range(0, n, ops.block):
            c1 = min(n, c0 + ops.block)
            p, ds = ops.pairs((c0, n), (c0, c1), lse, d_out, delta, ops.band if dband is None else dband)
            torch.bmm(ds.transpose(1, 2), qw[:, c0:], out=dkw[:, c0:c1])
            torch.bmm(p.transpose(1, 2), d_out[:, c0:], out=dvw[:, c0:c1])
            add_query_gradient(dq, ds, ops.kw[:, c0:c1], c0, taps, group)
        if dband is not None:
            # diagonals t > i have no key (j = i - t < 0): their gradient is 0
            rows, diagonals = torch.arange(n, device=kw.device)[:, None], torch.arange(ops.width, device=kw.device)
            dband.masked_fill_(diagonals > rows, 0.0)
        return dq.to(q.dtype), dkw.view(kw.shape), dvw.view(vw.shape), dband, None, None, None, None


def add_query_gradient(dq: torch.Tensor, ds: torch.Tensor, kw: torch.Tensor, first_row: int, taps: int,
                       group: int) -> None:
    """dq += the gradient of q through rows [first_row, N) of qw = query_window(q, taps, group), d(qw) = ds · kw.

    dq: [B, H, N, d] float32; ds: [B·H, N - first_row, keys]; kw: [B·H, keys, group·taps·d]. Row r, tap a, source
    head i of d(qw) feeds dq[first head + i, r - (taps-1) + a]: rows [first_row - (taps-1), N) of dq, summed in
    float32 from the product's rows in kw's dtype.
    """
    batch, n_heads, seq_len, head_dim = dq.shape
    pad, rows = taps - 1, seq_len - first_row
    width = group * taps * head_dim
    block = empty_output((batch * n_heads, pad + rows + pad, width), kw.dtype, dq.device)
    block[:, :pad].zero_()
    block[:, pad + rows:].zero_()
    torch.bmm(ds, kw, out=block[:, pad: pad + rows])
    # out row m' (dq row first_row - pad + m') = Σ_a' block[m' + a', (i, taps-1-a')]: one strided view holds each term
    terms = block.as_strided(
        (batch * n_heads, rows + pad, group, taps, head_dim),
        (block.shape[1] * width, width, taps * head_dim, width - head_dim, 1),
        block.storage_offset() + pad * head_dim,
    )
    part = terms.sum(3, dtype=torch.float32)  # [B·H, rows + pad, i, d] for each head h of a group
    if group > 1:
        part = part.view(batch, n_heads // group, group, rows + pad, group, head_dim).sum(2).transpose(2, 3)
    part = part.reshape(batch, n_heads, rows + pad, head_dim)
    skip = max(0, pad - first_row)  # rows before the first token
    dq[:, :, first_row - pad + skip:] += part[:, :, skip:]


def banded_flash_attention(
    q: torch.Tensor,
    kw: torch.Tensor,
    vw: torch.Tensor,
    band: torch.Tensor | None = None,
    config: BlockConfig | None = None,
    taps: int = 1,
    group: int = 1,
    skip: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused banded causal attention (kernels' module docstring) of qw = primitives.query_window(q, taps, group),
    differentiable in every input.

    q: [B, H, N, d] (H a multiple of group); kw: [B, H, N, Dqk], Dqk = group·taps·d; vw: [B, H, N, Dv]; kw and
    vw of one dtype among float16, bfloat16, float32 (any Dqk, Dv >= 1; multiples of 16 keep the tiles full), q
    of that dtype or float32 (rounded to kw's for the kernel; its gradient stays float32).
    band: [B, H, N, W] (W >= 0, computed in float32) or None: the scores of the diagonals i-j < W, which replace
    qw_i · kw_j there. skip >= 0: the diagonals i-j < skip stay out of out (not of the softmax). config: tile
    sizes; None autotunes on a GPU and takes BlockConfig() under TRITON_INTERPRET=1. Returns out [B, H, N, Dv] in
    vw's dtype and lse [B, H, N] float32 (the row logsumexp of the scores). The gradient of q is summed from qw's in
    float32.
    """
    if kw.dtype not in KERNEL_DTYPES or vw.dtype != kw.dtype or q.dtype not in (kw.dtype, torch.float32):
        raise ValueError(
            f"kw, vw must share one dtype among {KERNEL_DTYPES} and q have it or float32, got {q.dtype}, {kw.dtype}, "
            f"{vw.dtype}"
        )
    if q.dim() != 4 or q.shape[1] % group or kw.shape != (*q.shape[:3], group * taps * q.shape[3]):
        raise ValueError(
            f"q must be [B, H, N, d] with H a multiple of group = {group} and kw [B, H, N, group·taps·d] with "
            f"taps = {taps}, got {tuple(q.shape)}, {tuple(kw.shape)}"
        )
    if vw.dim() != 4 or vw.shape[:3] != q.shape[:3]:
        raise ValueError(f"vw must be [B, H, N, Dv] with [B, H, N] = {tuple(q.shape[:3])}, got {tuple(vw.shape)}")
    if band is not None and (band.dim() != 4 or band.shape[:3] != q.shape[:3]):
        raise ValueError(f"band must be [B, H, N, W] with [B, H, N] = {tuple(q.shape[:3])}, got {tuple(band.shape)}")
    if skip < 0:
        raise ValueError(f"skip must be >= 0, got {skip}")
    if band is not None:
        band = band.float().contiguous()
    return BandedFlashAttention.apply(q.contiguous(), kw.contiguous(), vw.contiguous(), band, config, taps, group,
                                      skip)
