"""The Multi-Token Attention op: argument validation and backend dispatch (docs/design.md, the op's contract)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .chunked import chunked_attention
from .conv import qk_conv_dispatch
from .reference import reference_attention
from .triton import is_available as triton_available
from .triton import triton_attention
from .validation import check_kernel, check_mixer, check_qkv

__all__ = ["mta_attention", "available_backends", "BACKENDS"]

BACKENDS = ("auto", "reference", "chunked", "triton")
# Below this many tokens the materialised map is small and one batched computation beats the block loop.
AUTO_REFERENCE_MAX_TOKENS = 1024


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on `device`: the pure-PyTorch ones everywhere, triton on CUDA (or interpreted)."""
    return ["reference", "chunked"] + (["triton"] if triton_available(device) else [])


def mta_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kernel_pre: torch.Tensor | None = None,
    kernel_post: torch.Tensor | None = None,
    head_mix_pre: torch.Tensor | None = None,
    head_mix_post: torch.Tensor | None = None,
    causal: bool = True,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Causal Multi-Token Attention (docs/spec.md §1).

    q: [B, H, N, d]; k: [B, H_kv, N, d]; v: [B, H_kv, N, d_v], with H a multiple of H_kv (grouped-query heads).
    kernel_pre, kernel_post: [H, c_q, c_k] q–k convolutions before / after softmax, c_k odd, official orientation
        (row c_q-1 = current query, column (c_k-1)/2 = same key).
    head_mix_pre, head_mix_post: [G, c, c] with G·c = H; W[g, i, o] weights input head g·c+i into output head g·c+o.
    scale: logit scale, default d^-1/2. dropout_p: dropout on the final attention weights (pass 0 in eval).
    backend: "reference" (materialised N×N map, the oracle), "chunked" (query blocks, O(block·N) memory forward
        and backward), "triton" (CUDA, fp16/bf16/fp32, no dropout: fused kernels with O(N) memory, or for head
        mixing in groups wider than 4 heads, map blocks with O(block·N) memory) or "auto": SDPA when no MTA
        option is set; else triton on CUDA when it can serve the call (no dropout); else reference for short and
        chunked for long sequences.
    Kernels and mixers must be on q's device with q's dtype, or float32 when q is float16/bfloat16.
    Returns [B, H, N, d_v] with q's dtype. Half-precision inputs are computed in float32.
    An empty output (B = 0, N = 0 or d_v = 0) is returned without running a backend; its gradients are zeros.
    Double backward (create_graph=True) is supported by "reference" and "chunked"; "triton" raises a
    RuntimeError when it is attempted.
    """
    check_qkv(q, k, v)
    for name, kernel in (("kernel_pre", kernel_pre), ("kernel_post", kernel_post)):
        check_kernel(name, kernel, q)
    for name, mixer in (("head_mix_pre", head_mix_pre), ("head_mix_post", head_mix_post)):
        check_mixer(name, mixer, q)
    if not causal:
        raise ValueError("causal=False is not supported: MTA's query-direction convolution is defined causally")
    if scale is None:
        scale = q.shape[-1] ** -0.5
    elif not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    if not (isinstance(dropout_p, (int, float)) and 0.0 <= dropout_p < 1.0):
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")

    options = dict(kernel_pre=kernel_pre, kernel_post=kernel_post, head_mix_pre=head_mix_pre, head_mix_post=head_mix_post)
    if q.shape[0] == 0 or q.shape[2] == 0 or v.shape[3] == 0:
        return _EmptyAttention.apply(q, k, v, *options.values())
    plain = all(value is None for value in options.values())
    with torch.autocast(device_type=q.device.type, enabled=False):
        if backend == "auto" and plain:
            return F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout_p, is_causal=True, scale=scale, enable_gqa=k.shape[1] != q.shape[1]
            )
        if backend == "triton" or (backend == "auto" and _triton_serves(q, dropout_p)):
            out = triton_attention(q, k, v, **options, scale=float(scale), dropout_p=float(dropout_p))
            return _FirstOrderOnly.apply(out, "triton")
        if backend == "reference" or (backend == "auto" and q.shape[2] <= AUTO_REFERENCE_MAX_TOKENS):
            return reference_attention(q, k, v, **options, scale=float(scale), dropout_p=float(dropout_p),
                                       conv=qk_conv_dispatch)
        return chunked_attention(q, k, v, **options, scale=float(scale), dropout_p=float(dropout_p))


class _EmptyAttention(torch.autograd.Function):
    """The op when its output has no elements (B = 0, N = 0 or d_v = 0): (q, k, v, *params) -> an empty
    [B, H, N, d_v] tensor in q's dtype, whose gradients (of any order) are zeros of the inputs' shapes; params
    (kernels, mixers) may be None."""

    generate_vmap_rule = True

    @staticmethod
    def forward(q, *tensors):
        return q.new_empty(q.shape[:3] + tensors[1].shape[3:])

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.inputs = [None if t is None else (t.shape, t.dtype, t.device) for t in inputs]

    @staticmethod
    def backward(ctx, grad_out):
        return tuple(
            None if spec is None or not need else torch.zeros(spec[0], dtype=spec[1], device=spec[2])
            for spec, need in zip(ctx.inputs, ctx.needs_input_grad)
        )


class _FirstOrderOnly(torch.autograd.Function):
    """Identity on a backend's output [B, H, N, d_v] whose backward is not differentiable: raises a RuntimeError
    when the backward runs with create_graph=True (double backward), where the gradient would silently lack a
    graph."""

    generate_vmap_rule = True

    @staticmethod
    def forward(out, backend):
        return out.view_as(out)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.backend = inputs[1]

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            raise RuntimeError(
                f"backend {ctx.backend!r} does not support double backward (create_graph=True): its backward is "
                "not differentiable; use backend='reference' or backend='chunked'"
            )
        return grad_out, None


def _triton_serves(q: torch.Tensor, dropout_p: float) -> bool:
    """Whether `auto` takes the triton backend: a CUDA tensor of a dtype it supports, and no dropout."""
    return q.device.type == "cuda" and triton_available(q.device) and q.dtype != torch.float64 and dropout_p == 0.0
