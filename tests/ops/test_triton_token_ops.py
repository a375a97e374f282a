"""The fused token-axis ops (mta.ops.triton.token_ops) against their PyTorch definitions: forward and every gradient.

Without a GPU the kernels run under TRITON_INTERPRET=1 (set here before triton is imported), in every dtype.
"""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from mta.ops.triton.primitives import diagonal_dots_torch, token_conv_torch  # noqa: E402
from mta.ops.triton.token_ops import BLOCK_R, diagonal_dots, token_conv  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]  # no tl.dot here: bfloat16 runs interpreted too


def tensors(*shapes, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen).to(DEVICE, dtype).requires_grad_() for shape in shapes]


def assert_same(fused, oracle, inputs, dtype):
    """Outputs and the gradients of every input for a random cotangent (half outputs compared in float32)."""
    tol = TOLERANCE[dtype]
    cotangent = torch.randn(oracle.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, oracle.dtype)
    torch.testing.assert_close(fused, oracle, rtol=tol, atol=tol)
    got = torch.autograd.grad(fused, inputs, cotangent)
    want = torch.autograd.grad(oracle, inputs, cotangent)
    for name, g, w in zip(["first input", "second input"], got, want):
        torch.testing.assert_close(g.float(), w.float(), rtol=tol, atol=tol * 10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "heads,seq_len,head_dim,size,c_q,c_k",
    [
        (2, 19, 16, 1, 3, 5),  # no head groups
        (4, BLOCK_R + 5, 3, 2, 2, 3),  # groups of two heads, d not a power of 2, a token-tile tail
        (2, 5, 8, 2, 1, 11),  # a kernel wider than the sequence
        (3, 7, 4, 1, 1, 1),  # a 1×1 kernel: a scaled copy
    ],
)
def test_token_conv(heads, seq_len, head_dim, size, c_q, c_k, dtype):
    x, = tensors((2, heads, seq_len, head_dim), dtype=dtype)
    weight, = tensors((heads, size, c_q, c_k), dtype=torch.float32, seed=2)
    assert_same(token_conv(x, weight, dtype), token_conv_torch(x, weight, dtype), (x, weight), dtype)


def test_token_conv_float32_input_half_output():
    """float32 k (a leaf shared with the Mask0 dots) -> float16 kernel operand, float32 gradient."""
    x, = tensors((1, 2, 21, 8), dtype=torch.float32)
    weight, = tensors((2, 1, 3, 5), dtype=torch.float32, seed=2)
    fused = token_conv(x, weight, torch.float16)
    assert fused.dtype == torch.float16
    assert_same(fused, token_conv_torch(x, weight, torch.float16), (x, weight), torch.float16)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seq_len,head_dim,width", [(BLOCK_R + 7, 16, 10), (6, 5, 9), (2, 8, 3)])
def test_diagonal_dots(seq_len, head_dim, width, dtype):
    q, k = tensors((2, 2, seq_len, head_dim), (2, 2, seq_len, head_dim), dtype=dtype)
    fused = diagonal_dots(q, k, width)
    assert fused.dtype == torch.float32
    assert_same(fused, diagonal_dots_torch(q, k, width), (q, k), dtype)
