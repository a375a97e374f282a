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


def operands(heads, seq_len, head_dim, taps, group, scores_width, q_dtype, kw_dtype):
    """q, kw (scaled so that logits are of order 1), band scores (None when scores_width is None) and lse, all
    leaves."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, heads, seq_len, head_dim, generator=gen) / head_dim**0.25
    kw = torch.randn(2, heads, seq_len, group * taps * head_dim, generator=gen) / (group * taps * head_dim) ** 0.25
    lse = 2.0 + torch.randn(2, heads, seq_len, generator=gen)
    scores = None if scores_width is None else torch.randn(2, heads, seq_len, scores_width, generator=gen)
    leaves = [q.to(q_dtype), kw.to(kw_dtype), scores, lse]
    return [None if x is None else x.to(DEVICE).requires_grad_() for x in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize(
    "heads,seq_len,head_dim,taps,group,width,scores_width",
    [
        (2, 19, 16, 1, 1, 3, None),  # no window, no band scores
        (4, BLOCK_R + 5, 8, 3, 2, 5, 10),  # taps and head groups, a row-tile tail, scores wider than the band
        (4, BLOCK_R + 5, 8, 3, 2, 5, 3),  # ... scores narrower than the band
        (2, 3, 16, 2, 1, 5, 5),  # a band wider than the sequence
    ],
)
def test_band_matches_torch(heads, seq_len, head_dim, taps, group, width, scores_width, dtype):
    inputs = operands(heads, seq_len, head_dim, taps, group, scores_width, dtype, dtype)
    fused = probability_band(*inputs, width, taps, group)
    oracle = probability_band_torch(*inputs, width, taps, group)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(fused, oracle, rtol=tol, atol=tol)
    cotangent = torch.randn(oracle.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    leaves = [x for x in inputs if x is not None]
    got = torch.autograd.grad(fused, leaves, cotangent)
    # scores as wide as the band leave q and kw unused by the oracle: their gradients are zeros
    want = torch.autograd.grad(oracle, leaves, cotangent, allow_unused=True, materialize_grads=True)
    names = [name for name, x in zip(["q", "kw", "band scores", "lse"], inputs) if x is not None]
    for name, g, w in zip(names, got, want):
        assert g.dtype == w.dtype, name
        torch.testing.assert_close(g.float(), w.float(), rtol=tol, atol=tol * 10, msg=lambda m: f"{name}: {m}")


def test_float32_queries_half_keys():
    """float32 q (shared with the band's dots, as the glue passes it) with a float16 kernel operand kw."""
    inputs = operands(2, 11, 8, 2, 2, 2, torch.float32, torch.float16)
    fused = probability_band(*inputs, 3, 2, 2)
    oracle = probability_band_torch(*inputs, 3, 2, 2)
    torch.testing.assert_close(fused, oracle, rtol=1e-5, atol=1e-5)
    d_q, = torch.autograd.grad(fused.sum(), inputs[0])
    assert d_q.dtype == torch.float32
    torch.testing.assert_close(d_q, torch.autograd.grad(oracle.sum(), inputs[0])[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_replaced_scores_never_read_the_product(dtype):
    """A NaN in kw that only the replaced diagonals (t < W) would read reaches neither the band nor a gradient."""
    inputs = operands(2, 11, 8, 2, 1, 3, dtype, dtype)
    cotangent = torch.randn(2, 2, 11, 5, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    poisoned = [x.detach().clone().requires_grad_() for x in inputs]
    with torch.no_grad():
        poisoned[1][:, :, 9] = float("nan")  # key 9 of 11: rows 9 and 10 on diagonals 0 and 1 (all replaced)
    results = []
    for leaves in (inputs, poisoned):
        band = probability_band(*leaves, 5, 2, 1)
        results.append((band, torch.autograd.grad(band, leaves, cotangent)))
    (clean, clean_grads), (band, grads) = results
    assert torch.equal(band, clean)
    for name, got, want in zip(["q", "kw", "band scores", "lse"], grads, clean_grads):
        assert torch.equal(got, want), name
