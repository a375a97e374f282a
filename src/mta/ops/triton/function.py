"""`banded_flash_attention`: the autograd.Function around the Triton kernels, and their launch configurations."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import triton

from . import kernels

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _fix_interpreter_scalar_index() -> None:
    """Triton 3.6's interpreter turns a scalar into a Python int with int(array of shape [1]), which numpy >= 2.4
    rejects, so any loop with a runtime bound fails (triton-lang/triton#9171). Re-patch it through .item()."""
    from triton.runtime import interpreter

    patch = interpreter._patch_lang_tensor
    if getattr(patch, "scalar_index_fixed", False):
        return

    def fixed(tensor, scope):
        patch(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    fixed.scalar_index_fixed = True
    interpreter._patch_lang_tensor = fixed


if INTERPRETING:
    _fix_interpreter_scalar_index()


@dataclass(frozen=True)
class BlockConfig:
    """Tiles of one launch: query rows, key rows, Dqk and Dv column chunks (powers of 2, >= 16); GPU warps/stages."""

    block_m: int = 32
    block_n: int = 32
    block_d: int = 32
    block_dv: int = 32
    num_warps: int = 4
    num_stages: int = 2

    def meta(self) -> dict:
        return dict(BLOCK_M=self.block_m, BLOCK_N=self.block_n, BLOCK_D=self.block_d, BLOCK_DV=self.block_dv)


# Candidates for the GPU autotuner, keyed on (Dqk, Dv); the interpreter takes the single default config.
FORWARD_CONFIGS = (
    BlockConfig(128, 64, 64, 128, 8, 3),
    BlockConfig(64, 64, 64, 128, 4, 3),
    BlockConfig(128, 64, 64, 64, 4, 3),
    BlockConfig(64, 32, 64, 64, 4, 2),
)
BACKWARD_CONFIGS = (
    BlockConfig(64, 64, 64, 64, 4, 2),
    BlockConfig(32, 64, 64, 64, 4, 2),
    BlockConfig(64, 32, 64, 64, 4, 2),
    BlockConfig(64, 128, 64, 64, 8, 2),
)


@functools.cache
def _tuned(name: str):
    """The kernel `name` wrapped in triton.autotune over its candidate configs (built on first GPU use)."""
    configs = FORWARD_CONFIGS if name == "_forward_kernel" else BACKWARD_CONFIGS
    return triton.autotune(
        configs=[triton.Config(c.meta(), num_warps=c.num_warps, num_stages=c.num_stages) for c in configs],
        key=["DQK", "DV"],
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


class BandedFlashAttention(torch.autograd.Function):
    """(qw, kw, vw, bias) -> (out, lse); see kernels' module docstring. Arguments are prepared by
    `banded_flash_attention`: contiguous, bias float32 or None."""

    @staticmethod
    def forward(ctx, qw, kw, vw, bias, config):
        batch, n_heads, seq_len, dqk = qw.shape
        dv = vw.shape[-1]
        width = 0 if bias is None else bias.shape[-1]
        out = empty_output(vw.shape, vw.dtype, vw.device)
        lse = empty_output((batch, n_heads, seq_len), torch.float32, qw.device)

        def grid(meta):
            return triton.cdiv(seq_len, meta["BLOCK_M"]), triton.cdiv(dv, meta["BLOCK_DV"]), batch * n_heads

        _launch("_forward_kernel", grid, config, qw, kw, vw, qw if bias is None else bias, out, lse,
                seq_len, dqk, dv, width, HAS_BIAS=width > 0, PRECISION=_precision(qw.dtype))
        ctx.save_for_backward(qw, kw, vw, bias, out, lse)
        ctx.config = config
        return out, lse

    @staticmethod
    def backward(ctx, d_out, d_lse):
        qw, kw, vw, bias, out, lse = ctx.saved_tensors
        batch, n_heads, seq_len, dqk = qw.shape
        dv = vw.shape[-1]
        width = 0 if bias is None else bias.shape[-1]
        d_out = d_out.to(out.dtype).contiguous()
        delta = (d_out.float() * out.float()).sum(-1) - d_lse
        dqw, dkw = (empty_output(qw.shape, qw.dtype, qw.device) for _ in range(2))
        dvw = empty_output(vw.shape, vw.dtype, vw.device)
        dbias = None if bias is None else empty_output(bias.shape, torch.float32, bias.device)
        common = dict(HAS_BIAS=width > 0, PRECISION=_precision(qw.dtype))
        bias_arg = qw if bias is None else bias

        def kv_grid(meta):
            chunks = max(triton.cdiv(dqk, meta["BLOCK_D"]), triton.cdiv(dv, meta["BLOCK_DV"]))
            return triton.cdiv(seq_len, meta["BLOCK_N"]), chunks, batch * n_heads

        def q_grid(meta):
            return triton.cdiv(seq_len, meta["BLOCK_M"]), triton.cdiv(dqk, meta["BLOCK_D"]), batch * n_heads

        _launch("_backward_kv_kernel", kv_grid, ctx.config, qw, kw, vw, bias_arg, d_out, lse, delta, dkw, dvw,
                seq_len, dqk, dv, width, **common)
        _launch("_backward_q_kernel", q_grid, ctx.config, qw, kw, vw, bias_arg, d_out, lse, delta, dqw,
                qw if dbias is None else dbias, seq_len, dqk, dv, width,
                BLOCK_W=triton.next_power_of_2(max(width, 1)), **common)
        return dqw, dkw, dvw, dbias, None


def banded_flash_attention(
    qw: torch.Tensor,
    kw: torch.Tensor,
    vw: torch.Tensor,
    bias: torch.Tensor | None = None,
    config: BlockConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused banded causal attention (kernels' module docstring), differentiable in every input.

    qw, kw: [B, H, N, Dqk]; vw: [B, H, N, Dv], one dtype among float16, bfloat16, float32 (any Dqk, Dv >= 1;
    multiples of 16 keep the tiles full). bias: [B, H, N, W] (W >= 0, computed in float32) or None.
    config: tile sizes; None autotunes on a GPU and takes BlockConfig() under TRITON_INTERPRET=1.
    Returns out [B, H, N, Dv] in vw's dtype and lse [B, H, N] float32 (the row logsumexp of the scores).
    """
    if qw.dtype not in KERNEL_DTYPES or kw.dtype != qw.dtype or vw.dtype != qw.dtype:
        raise ValueError(
            f"qw, kw, vw must share one dtype among {KERNEL_DTYPES}, got {qw.dtype}, {kw.dtype}, {vw.dtype}"
        )
    if qw.dim() != 4 or kw.shape != qw.shape or vw.shape[:3] != qw.shape[:3]:
        raise ValueError(f"qw, kw must be [B, H, N, Dqk] and vw [B, H, N, Dv], got {qw.shape}, {kw.shape}, {vw.shape}")
    if bias is not None and (bias.dim() != 4 or bias.shape[:3] != qw.shape[:3]):
        raise ValueError(f"bias must be [B, H, N, W] with [B, H, N] = {tuple(qw.shape[:3])}, got {tuple(bias.shape)}")
    if bias is not None:
        bias = bias.float().contiguous()
    return BandedFlashAttention.apply(qw.contiguous(), kw.contiguous(), vw.contiguous(), bias, config)
