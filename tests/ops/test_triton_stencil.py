"""The Triton stencil of the q–k convolution (mta.ops.triton.stencil) against qk_conv's depthwise convolution:
the output and both gradients, odd map sizes, every tap shape the op allows. Without a GPU the kernels run under
TRITON_INTERPRET=1 (set here before triton is imported)."""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from mta.ops.reference import qk_conv  # noqa: E402
from mta.ops.triton import stencil  # noqa: E402
from mta.ops.triton.maps import DOT_PRECISIONS  # noqa: E402
from mta.ops.triton.stencil import BLOCK_M, BLOCK_R, conv_maps_kernel_grad, qk_conv_stencil  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"


@pytest.mark.parametrize(
    "batch,heads,rows,cols,c_q,c_k",
    [
        (1, 2, 9, 13, 6, 11),  # the paper's kernel on a map smaller than it
        (2, 3, BLOCK_R + 3, BLOCK_M + 5, 2, 9),  # the toy task's kernel, tile tails on both axes
        (1, 1, 2 * BLOCK_R + 1, 7, 8, 15),  # the largest kernel the issue asks for, several row tiles
        (1, 2, 3 * BLOCK_R + 2, 3 * BLOCK_M + 3, 6, 11),  # interior tiles (the unmasked path) among edge tiles
        (2, 2, 5, 6, 1, 1),  # a 1×1 kernel: a scaled copy
        (1, 2, 11, 4, 3, 1),  # query taps only
    ],
)
def test_stencil_equals_depthwise_conv(batch, heads, rows, cols, c_q, c_k):
    gen = torch.Generator().manual_seed(rows * 31 + c_k)
    scores = torch.randn(batch, heads, rows, cols, generator=gen)
    kernel = torch.randn(heads, c_q, c_k, generator=gen)
    d_out = torch.randn(batch, heads, rows, cols, generator=gen)
    exact = [t.double().requires_grad_() for t in (scores, kernel)]
    expected = qk_conv(*exact)
    expected_grads = torch.autograd.grad(expected, exact, d_out.double())
    fused = [t.to(DEVICE).requires_grad_() for t in (scores, kernel)]
    got = qk_conv_stencil(*fused)
    got_grads = torch.autograd.grad(got, fused, d_out.to(DEVICE))
    torch.testing.assert_close(got.double().cpu(), expected, rtol=1e-5, atol=1e-5)
    for name, g, w in zip(("scores", "kernel"), got_grads, expected_grads):
        torch.testing.assert_close(g.double().cpu(), w, rtol=1e-5, atol=1e-4, msg=lambda m: f"grad of {name}: {m}")


# the kernel gradient's tile products on tensor cores: tf32x3 keeps float32's accuracy, tf32 about 1e-3
PRECISION_TOLERANCES = {"ieee": 1e-5, "tf32x3": 1e-5, "tf32": 1e-2}


@pytest.mark.parametrize("precision", DOT_PRECISIONS)
def test_kernel_gradient_in_each_dot_precision(precision):
    gen = torch.Generator().manual_seed(5)
    scores, d_out = (torch.randn(2, 2, 2 * BLOCK_R + 3, BLOCK_M + 7, generator=gen) for _ in range(2))
    kernel = torch.randn(2, 6, 11, generator=gen)
    exact = kernel.double().requires_grad_()
    want = torch.autograd.grad(qk_conv(scores.double(), exact), exact, d_out.double())[0]
    got = conv_maps_kernel_grad(scores.to(DEVICE), d_out.to(DEVICE), kernel.to(DEVICE), precision)
    tol = PRECISION_TOLERANCES[precision]
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol * want.abs().max().item())


@pytest.mark.parametrize("tap_rows", [1, 4, 8])  # 4: the second group of the 6 tap rows is half empty
def test_kernel_gradient_with_any_tap_rows_per_program(monkeypatch, tap_rows):
    monkeypatch.setattr(stencil, "GRAD_TAP_ROWS", tap_rows)
    gen = torch.Generator().manual_seed(tap_rows)
    scores, d_out = (torch.randn(1, 2, 2 * BLOCK_R + 3, BLOCK_M + 7, generator=gen) for _ in range(2))
    kernel = torch.randn(2, 6, 11, generator=gen)
    exact = kernel.double().requires_grad_()
    want = torch.autograd.grad(qk_conv(scores.double(), exact), exact, d_out.double())[0]
    got = stencil.conv_maps_kernel_grad(scores.to(DEVICE), d_out.to(DEVICE), kernel.to(DEVICE))
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-5, atol=1e-4)


def test_stencil_writes_every_element():
    """An output filled with NaN beforehand has no NaN left (every tile, tail included, is written)."""
    scores = torch.randn(1, 2, BLOCK_R + 1, BLOCK_M + 1, device=DEVICE)
    kernel = torch.randn(2, 2, 3, device=DEVICE)
    original_empty = torch.empty_like

    def nan_empty(x, **kwargs):
        return original_empty(x, **kwargs).fill_(float("nan"))

    torch.empty_like = nan_empty
    try:
        out = qk_conv_stencil(scores, kernel)
    finally:
        torch.empty_like = original_empty
    assert not out.isnan().any()


def test_stencil_rejects_what_it_cannot_serve():
    with pytest.raises(ValueError, match="float32"):
        qk_conv_stencil(torch.zeros(1, 1, 2, 2, dtype=torch.float64), torch.zeros(1, 1, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="c_k odd"):
        qk_conv_stencil(torch.zeros(1, 2, 3, 3), torch.zeros(2, 2, 2))


def test_reference_routes_float32_maps_to_the_stencil(monkeypatch):
    """The op's reference backend takes the stencil where `conv._stencil_serves` says so (float32 maps on a GPU;
    forced here) and computes what the depthwise convolution computes, end to end."""
    from mta.ops import conv, mta_attention
    from op_cases import make_inputs, make_kernel

    q, k, v = (t.detach().float().to(DEVICE) for t in make_inputs(batch=1, heads=2, seq_len=11, head_dim=4))
    kernel = make_kernel(2, 2, 3).detach().float().to(DEVICE)
    monkeypatch.setattr(conv, "_stencil_serves", lambda scores: False)  # the depthwise convolution
    expected = mta_attention(q, k, v, kernel_pre=kernel, kernel_post=kernel, backend="reference")
    calls = []

    def serves(scores):
        calls.append(scores.shape)
        return True

    monkeypatch.setattr(conv, "_stencil_serves", serves)
    got = mta_attention(q, k, v, kernel_pre=kernel, kernel_post=kernel, backend="reference")
    assert len(calls) == 2  # the pre- and post-softmax convolutions
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
