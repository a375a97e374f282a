"""The fused probability band (mta.ops.triton.band) against its PyTorch definition: forward and every gradient.

Without a GPU the kernels run under TRITON_INTERPRET=1 (set here before triton is imported).
"""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from mta.ops.triton.band import BLOCK_R, probability_band  # noqa: E402
from mta.ops.triton.primitives import probability_band_torch  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}


def operands(heads, seq_len, head_dim, taps, group, bias_width, q_dtype, kw_dtype):
    """q, kw (scaled so that logits are of order 1), bias (None when bias_width is None) and lse, all leaves."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, heads, seq_len, head_dim, generator=gen) / head_dim**0.25
    kw = torch.randn(2, heads, seq_len, group * taps * head_dim, generator=gen) / (group * taps * head_dim) ** 0.25
    lse = 2.0 + torch.randn(2, heads, seq_len, generator=gen)
    bias = None if bias_width is None else torch.randn(2, heads, seq_len, bias_width, generator=gen)
    leaves = [q.to(q_dtype), kw.to(kw_dtype), bias, lse]
    return [None if x is None else x.to(DEVICE).requires_grad_() for x in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize(
    "heads,seq_len,head_dim,taps,group,width,bias_width",
    [
        (2, 19, 16, 1, 1, 3, None),  # no window, no bias
        (4, BLOCK_R + 5, 8, 3, 2, 5, 10),  # taps and head groups, a row-tile tail, bias wider than the band
        (2, 7, 12, 6, 1, 5, 2),  # d not a power of 2, more taps than half the tokens, bias narrower than the band
        (2, 3, 16, 2, 1, 5, 5),  # a band wider than the sequence
    ],
)
def test_band_matches_torch(heads, seq_len, head_dim, taps, group, width, bias_width, dtype):
    inputs = operands(heads, seq_len, head_dim, taps, group, bias_width, dtype, dtype)
    fused = probability_band(*inputs, width, taps, group)
    oracle = probability_band_torch(*inputs, width, taps, group)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(fused, oracle, rtol=tol, atol=tol)
    cotangent = torch.randn(oracle.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    leaves = [x for x in inputs if x is not None]
    got = torch.autograd.grad(fused, leaves, cotangent)
    want = torch.autograd.grad(oracle, leaves, cotangent)
    names = [name for name, x in zip(["q", "kw", "bias", "lse"], inputs) if x is not None]
    for name, g, w in zip(names, got, want):
        assert g.dtype == w.dtype, name
        torch.testing.assert_close(g.float(), w.float(), rtol=tol, atol=tol * 10, msg=lambda m: f"{name}: {m}")


def test_float32_queries_half_keys():
    """float32 q (shared with the Mask0 dots, as the glue passes it) with a float16 kernel operand kw."""
    inputs = operands(2, 11, 8, 2, 2, 4, torch.float32, torch.float16)
    fused = probability_band(*inputs, 3, 2, 2)
    oracle = probability_band_torch(*inputs, 3, 2, 2)
    torch.testing.assert_close(fused, oracle, rtol=1e-5, atol=1e-5)
    d_q, = torch.autograd.grad(fused.sum(), inputs[0])
    assert d_q.dtype == torch.float32
    torch.testing.assert_close(d_q, torch.autograd.grad(oracle.sum(), inputs[0])[0], rtol=1e-5, atol=1e-5)
