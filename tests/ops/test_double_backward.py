"""Double backward (create_graph=True): exact on the backends that support it (gradgradcheck against finite
differences of the gradient), a clear RuntimeError on the one that does not (triton), never a gradient that
silently lacks its graph."""

import pytest
import torch

from mta.ops import mta_attention
from mta.ops.chunked import chunked_attention
from op_cases import OPTION_NAMES, build_options, make_inputs


def small_case(dtype=torch.float64):
    """q [1, 2, 6, 3], grouped k, v [1, 1, 6, 3] and every option (kernels 2×3, mixers of 1 and 2 heads)."""
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in make_inputs(batch=1, heads=2, kv_heads=1, seq_len=6,
                                                                         head_dim=3))
    options = build_options(OPTION_NAMES, heads=2, pre=(2, 3), post=(2, 3), groups=(1, 2), dtype=dtype)
    return (q, k, v), options


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_gradgradcheck(backend):
    (q, k, v), options = small_case()

    def attention(q, k, v, *params):
        return mta_attention(q, k, v, **dict(zip(options, params)), backend=backend)

    assert torch.autograd.gradgradcheck(attention, (q, k, v, *options.values()), fast_mode=True)


def test_chunked_gradgradcheck_across_blocks():
    """Blocks of 2 rows: the halo rows above each block carry second-order terms too (dropout on, fixed seed)."""
    (q, k, v), options = small_case()

    def attention(q, k, v, *params):
        torch.manual_seed(0)  # the dropout mask, drawn from the global generator, is the same at every call
        return chunked_attention(q, k, v, **dict(zip(options, params)), scale=0.5, dropout_p=0.2, block_size=2)

    assert torch.autograd.gradgradcheck(attention, (q, k, v, *options.values()), fast_mode=True)


def test_triton_refuses_double_backward():
    (q, k, v), options = small_case(torch.float32)
    out = mta_attention(q, k, v, **options, backend="triton")
    with pytest.raises(RuntimeError, match=r"backend 'triton' does not support double backward.*backend='reference'"):
        torch.autograd.grad(out.sum(), q, create_graph=True)
    first_order = torch.autograd.grad(mta_attention(q, k, v, **options, backend="triton").sum(), (q, k, v))
    expected = torch.autograd.grad(mta_attention(q, k, v, **options, backend="reference").sum(), (q, k, v))
    for got, want in zip(first_order, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
