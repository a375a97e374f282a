"""Shared builders for tests of the op: random inputs and random (non-identity) kernels and mixers."""

from __future__ import annotations

import torch


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


def output_and_grads(fn, tensors):
    """Run fn(), then back-propagate a fixed non-uniform cotangent; returns (output, grads of `tensors`)."""
    out = fn()
    cotangent = torch.sin(torch.arange(out.numel(), dtype=out.dtype)).reshape(out.shape)
    grads = torch.autograd.grad((out * cotangent).sum(), tensors)
    return out.detach(), grads
