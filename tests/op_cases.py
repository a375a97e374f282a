"""Shared builders for tests of the op: random inputs, random (non-identity) kernels and mixers, and the check of
a backend's output and every gradient against the reference."""

from __future__ import annotations

import itertools

import torch

from mta.ops.decode import mta_attention_step
from mta.ops.reference import reference_attention

OPTION_NAMES = ("kernel_pre", "kernel_post", "head_mix_pre", "head_mix_post")
OPTION_COMBINATIONS = [combo for r in range(len(OPTION_NAMES) + 1) for combo in itertools.combinations(OPTION_NAMES, r)]


def combination_id(combo: tuple[str, ...]) -> str:
    return "+".join(combo) or "plain"


def make_inputs(batch=2, heads=4, kv_heads=None, seq_len=19, head_dim=8, dtype=torch.float64, seed=0):
    """Random q [B, H, N, d], k and v [B, H_kv, N, d] that require grad."""
    gen = torch.Generator().manual_seed(seed)
    kv_heads = kv_heads or heads
    shapes = [(batch, heads, seq_len, head_dim), (batch, kv_heads, seq_len, head_dim), (batch, kv_heads, seq_len, head_dim)]
    return [torch.randn(shape, generator=gen, dtype=dtype).requires_grad_() for shape in shapes]


def make_kernel(heads, c_q, c_k, dtype=torch.float64, seed=1):
    """Identity plus noise, [H, c_q, c_k], so every tap matters."""
    gen = torch.Generator().manual_seed(seed)
    kernel = 0.3 * torch.randn(heads, c_q, c_k, generator=gen, dtype=dtype)
    kernel[:, c_q - 1, (c_k - 1) // 2] += 1.0
    return kernel.requires_grad_()


def make_mixer(groups, size, dtype=torch.float64, seed=2):
    """Identity plus noise, [G, c, c]."""
    gen = torch.Generator().manual_seed(seed)
    mixer = torch.eye(size, dtype=dtype).repeat(groups, 1, 1) + 0.3 * torch.randn(groups, size, size, generator=gen, dtype=dtype)
    return mixer.requires_grad_()


def build_options(enabled, heads=4, pre=(3, 5), post=(4, 3), groups=(2, 1), dtype=torch.float64, device="cpu"):
    """Random non-identity kernels/mixers for the enabled option names; groups = (G_pre, G_post)."""
    makers = {
        "kernel_pre": lambda: make_kernel(heads, *pre, dtype=dtype, seed=11),
        "kernel_post": lambda: make_kernel(heads, *post, dtype=dtype, seed=12),
        "head_mix_pre": lambda: make_mixer(groups[0], heads // groups[0], dtype=dtype, seed=13),
        "head_mix_post": lambda: make_mixer(groups[1], heads // groups[1], dtype=dtype, seed=14),
    }
    return {name: makers[name]().detach().to(device).requires_grad_() for name in enabled}


def output_and_grads(fn, tensors):
    """Run fn(), then back-propagate a fixed non-uniform cotangent; returns (output, grads of `tensors`)."""
    out = fn()
    cotangent = torch.sin(torch.arange(out.numel(), dtype=torch.float64)).reshape(out.shape).to(out)
    return out.detach(), torch.autograd.grad((out * cotangent).sum(), tensors)


def assert_matches_reference(run, q, k, v, options, rtol, atol=None, in_norm=False, reference_dtype=torch.float64):
    """`run(q, k, v, options, scale)` against `reference_attention` on the same inputs: output and every gradient.

    The reference sees the inputs cast to `reference_dtype` (None: as they are). Elementwise within (rtol, atol),
    or with in_norm, ‖got − ref‖ ≤ rtol·‖ref‖ (for bfloat16, whose rounding makes single near-zero elements
    meaningless). Outputs and gradients must keep their inputs' dtypes.
    """
    atol = rtol if atol is None else atol
    scale = q.shape[-1] ** -0.5
    tensors = [q, k, v, *options.values()]
    exact = [t.detach().to(reference_dtype or t.dtype).requires_grad_() for t in tensors]
    ref_out, ref_grads = output_and_grads(
        lambda: reference_attention(*exact[:3], **dict(zip(options, exact[3:])), scale=scale, dropout_p=0.0), exact
    )
    got_out, got_grads = output_and_grads(lambda: run(q, k, v, options, scale), tensors)
    for name, tensor, got, ref in zip(["out", "q", "k", "v", *options], [q, *tensors], [got_out, *got_grads],
                                      [ref_out, *ref_grads]):
        assert got.dtype == tensor.dtype, f"{name}: dtype {got.dtype}, expected {tensor.dtype}"
        if in_norm:
            error = (got.to(ref.dtype) - ref).norm() / ref.norm()
            assert error <= rtol, f"{name}: relative error {error:.2e} in norm, allowed {rtol}"
        else:
            torch.testing.assert_close(got.to(ref.dtype), ref, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def decode(q, k, v, options, steps, start=None):
    """Run mta_attention_step over consecutive slices of q (sizes `steps`); the outputs concatenated."""
    outs, q_past, weights_past, done = [], None, None, 0
    for size in steps:
        end = done + size
        result = mta_attention_step(q[:, :, done:end], k[:, :, :end], v[:, :, :end], q_past=q_past,
                                    weights_past=weights_past, start=start, **options)
        outs.append(result.out)
        q_past, weights_past, done = result.queries, result.weights, end
    return torch.cat(outs, dim=2)
