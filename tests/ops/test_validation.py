"""Bad arguments raise a ValueError naming the argument, what was given and what was expected."""

import pytest
import torch

from mta.ops import mta_attention


def qkv(shape=(1, 4, 6, 8), dtype=torch.float32):
    return [torch.randn(shape).to(dtype) for _ in range(3)]


def kernel(c_q=2, c_k=3, heads=4, dtype=torch.float32):
    return torch.zeros(heads, c_q, c_k, dtype=dtype)


@pytest.mark.parametrize(
    "make_call,pattern",
    [
        (lambda: mta_attention(*qkv((4, 6, 8))), r"q must have shape \[B, H, N, d\].*\(4, 6, 8\)"),
        (lambda: mta_attention(*qkv((1, 4, 6, 0))), r"q must have a head dim d >= 1.*\(1, 4, 6, 0\)"),
        (lambda: mta_attention(*qkv((1, 4, 6, 0)), kernel_pre=kernel()), r"q must have a head dim d >= 1"),
        (lambda: mta_attention(*qkv((1, 0, 6, 8))), r"q must have at least one head \(H >= 1\).*\(1, 0, 6, 8\)"),
        (lambda: mta_attention(*qkv(dtype=torch.int32)), r"q must be float16.*int32"),
        (lambda: mta_attention(qkv()[0], torch.randn(1, 4, 5, 8), qkv()[2]), r"k must have shape .*N=6"),
        (lambda: mta_attention(qkv()[0], torch.randn(1, 3, 6, 8), torch.randn(1, 3, 6, 8)), r"k/v heads must divide.*got 3"),
        (lambda: mta_attention(*qkv()[:2], torch.randn(1, 4, 6, 8, dtype=torch.float64)), r"v must match q's dtype"),
        (lambda: mta_attention(*qkv(), kernel_pre=kernel(c_k=4)), r"kernel_pre must have an odd key width.*c_k=4"),
        (lambda: mta_attention(*qkv(), kernel_post=kernel(heads=2)), r"kernel_post must have shape \[H=4.*\(2, 2, 3\)"),
        (lambda: mta_attention(*qkv(), kernel_pre=torch.zeros(4, 3)), r"kernel_pre must be a tensor of shape \[H, c_q, c_k\]"),
        (lambda: mta_attention(*qkv(), kernel_pre=kernel(dtype=torch.float64)), r"kernel_pre must have dtype torch.float32.*float64"),
        (lambda: mta_attention(*qkv(dtype=torch.bfloat16), kernel_pre=kernel(dtype=torch.float16)), r"kernel_pre must have dtype"),
        (lambda: mta_attention(*qkv(), head_mix_pre=torch.zeros(3, 2, 2)), r"head_mix_pre must have G·c equal to the 4 heads, got G=3, c=2"),
        (lambda: mta_attention(*qkv(), head_mix_post=torch.zeros(2, 2, 3)), r"head_mix_post must be a tensor of shape \[G, c, c\]"),
        (lambda: mta_attention(*qkv(), causal=False), r"causal=False is not supported"),
        (lambda: mta_attention(*qkv(), scale=-1.0), r"scale must be a positive finite number, got -1.0"),
        (lambda: mta_attention(*qkv(), dropout_p=1.0), r"dropout_p must be in \[0, 1\), got 1.0"),
        (lambda: mta_attention(*qkv(), backend="flash"), r"backend must be one of .*'flash'"),
    ],
)
def test_bad_arguments(make_call, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_call()


def test_float32_kernels_are_accepted_beside_half_inputs():
    q, k, v = qkv(dtype=torch.bfloat16)
    out = mta_attention(q, k, v, kernel_pre=kernel(), head_mix_post=torch.eye(4).unsqueeze(0))
    assert out.dtype == torch.bfloat16 and out.shape == q.shape


def test_triton_refuses_what_it_cannot_serve(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match=r"backend 'triton' needs Triton and a CUDA device"):
        mta_attention(*qkv(), kernel_pre=kernel(), backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match=r"dropout_p must be 0 for backend 'triton'"):
        mta_attention(*qkv(), kernel_pre=kernel(), dropout_p=0.1, backend="triton")
    with pytest.raises(ValueError, match=r"q must be float16, bfloat16 or float32 for backend 'triton'"):
        mta_attention(*qkv(dtype=torch.float64), kernel_pre=kernel(dtype=torch.float64), backend="triton")



def test_triton_sends_wide_head_mixing_to_map_blocks():
    from mta import ops
    from mta.ops.triton import banded_mixing

    pairs, quads, full = torch.eye(2).repeat(4, 1, 1), torch.eye(4).repeat(2, 1, 1), torch.eye(8)[None]
    assert banded_mixing(pairs, quads) and banded_mixing(None, None)
    assert not banded_mixing(None, full) and not banded_mixing(full, pairs)
    assert not ops._triton_serves(torch.zeros(1, 8, 4, 4), 0.0)  # auto never runs triton on a CPU


@pytest.mark.parametrize("backend", ["reference", "chunked", "triton"])
@pytest.mark.parametrize("shape,v_dim", [((0, 4, 6, 8), 8), ((2, 4, 0, 8), 8), ((2, 4, 6, 8), 0)],
                         ids=["batch0", "tokens0", "value_dim0"])
def test_empty_outputs_on_every_backend(backend, shape, v_dim):
    """B = 0, N = 0 or d_v = 0: an empty [B, H, N, d_v] output, and zero gradients for every input."""
    q, k = (torch.randn(shape, requires_grad=True) for _ in range(2))
    v = torch.randn(*shape[:3], v_dim, requires_grad=True)
    pre, mix = kernel().requires_grad_(), torch.eye(2).repeat(2, 1, 1).requires_grad_()
    out = mta_attention(q, k, v, kernel_pre=pre, head_mix_post=mix, backend=backend)
    assert out.shape == (*shape[:3], v_dim) and out.dtype == q.dtype
    grads = torch.autograd.grad(out.sum(), (q, k, v, pre, mix))
    for tensor, grad in zip((q, k, v, pre, mix), grads):
        assert torch.equal(grad, torch.zeros_like(tensor))


def test_chunked_backward_of_an_empty_batch():
    """The chunked backend called directly (not through mta_attention's empty-output path)."""
    from mta.ops.chunked import chunked_attention

    q = torch.randn(0, 4, 6, 8, requires_grad=True)
    k, v = (torch.randn(0, 2, 6, 8, requires_grad=True) for _ in range(2))  # grouped-query heads
    out = chunked_attention(q, k, v, kernel_pre=kernel(), scale=0.5, dropout_p=0.0, block_size=4)
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == (0, 2, 6, 8)
