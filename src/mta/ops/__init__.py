"""The Multi-Token Attention op: argument validation and backend dispatch (docs/design.md, the op's contract)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .chunked import chunked_attention
from .reference import reference_attention
from .triton import is_available as triton_available
from .triton import triton_attention

__all__ = ["mta_attention", "available_backends", "BACKENDS"]

BACKENDS = ("auto", "reference", "chunked", "triton")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
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
    _check_qkv(q, k, v)
    for name, kernel in (("kernel_pre", kernel_pre), ("kernel_post", kernel_post)):
        _check_kernel(name, kernel, q)
    for name, mixer in (("head_mix_pre", head_mix_pre), ("head_mix_post", head_mix_post)):
        _check_mixer(name, mixer, q)
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
            return reference_attention(q, k, v, **options, scale=float(scale), dropout_p=float(dropout_p))
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


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != 4:
            raise ValueError(f"{name} must have shape [B, H, N, d] (4 dimensions), got shape {tuple(tensor.shape)}")
    if q.dtype not in FLOAT_DTYPES:
        raise ValueError(f"q must be float16, bfloat16, float32 or float64, got {q.dtype}")
    batch, n_heads, seq_len, head_dim = q.shape
    if n_heads == 0:
        raise ValueError(f"q must have at least one head (H >= 1), got shape {tuple(q.shape)}")
    if head_dim == 0:
        raise ValueError(f"q must have a head dim d >= 1, got shape {tuple(q.shape)}")
    for name, tensor in (("k", k), ("v", v)):
        if tensor.dtype != q.dtype or tensor.device != q.device:
            raise ValueError(
                f"{name} must match q's dtype and device ({q.dtype}, {q.device}), got ({tensor.dtype}, {tensor.device})"
            )
    if k.shape != (batch, k.shape[1], seq_len, head_dim):
        raise ValueError(f"k must have shape [B={batch}, H_kv, N={seq_len}, d={head_dim}], got {tuple(k.shape)}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must have shape [B={batch}, H_kv={k.shape[1]}, N={seq_len}, d_v], got {tuple(v.shape)}")
    if k.shape[1] == 0 or n_heads % k.shape[1] != 0:
        raise ValueError(f"the number of k/v heads must divide q's {n_heads} heads, got {k.shape[1]}")


def _check_param_dtype(name: str, param: torch.Tensor, q: torch.Tensor) -> None:
    if param.device != q.device:
        raise ValueError(f"{name} must be on q's device {q.device}, got {param.device}")
    allowed = {q.dtype, torch.float32} if q.dtype in (torch.float16, torch.bfloat16) else {q.dtype}
    if param.dtype not in allowed:
        expected = " or ".join(sorted(str(d) for d in allowed))
        raise ValueError(f"{name} must have dtype {expected} (q is {q.dtype}), got {param.dtype}")


def _check_kernel(name: str, kernel: torch.Tensor | None, q: torch.Tensor) -> None:
    if kernel is None:
        return
    n_heads = q.shape[1]
    if not isinstance(kernel, torch.Tensor) or kernel.dim() != 3:
        raise ValueError(f"{name} must be a tensor of shape [H, c_q, c_k], got {_describe(kernel)}")
    heads, c_q, c_k = kernel.shape
    if heads != n_heads or c_q < 1 or c_k < 1:
        raise ValueError(f"{name} must have shape [H={n_heads}, c_q>=1, c_k>=1], got {tuple(kernel.shape)}")
    if c_k % 2 == 0:
        raise ValueError(f"{name} must have an odd key width c_k (centred on the key), got c_k={c_k}")
    _check_param_dtype(name, kernel, q)


def _check_mixer(name: str, mixer: torch.Tensor | None, q: torch.Tensor) -> None:
    if mixer is None:
        return
    n_heads = q.shape[1]
    if not isinstance(mixer, torch.Tensor) or mixer.dim() != 3 or mixer.shape[1] != mixer.shape[2]:
        raise ValueError(f"{name} must be a tensor of shape [G, c, c], got {_describe(mixer)}")
    groups, size, _ = mixer.shape
    if groups * size != n_heads:
        raise ValueError(f"{name} must have G·c equal to the {n_heads} heads, got G={groups}, c={size}")
    _check_param_dtype(name, mixer, q)


def _describe(value: object) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
