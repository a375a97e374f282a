"""The chunked backend against the reference: forward and every gradient, every option, odd shapes, memory."""

import pytest
import torch

from mta.ops import mta_attention
from mta.ops.chunked import ChunkedMTA, chunked_attention
from mta.cli.backends import LargestTensorProbe
from op_cases import OPTION_COMBINATIONS, OPTION_NAMES, assert_matches_reference, build_options, combination_id, make_inputs

def compare_backends(q, k, v, options, block_size, rtol=1e-10, atol=1e-10, reference_dtype=torch.float64):
    def run(q, k, v, options, scale):
        return chunked_attention(q, k, v, **options, scale=scale, dropout_p=0.0, block_size=block_size)

    assert_matches_reference(run, q, k, v, options, rtol, atol, reference_dtype=reference_dtype)


@pytest.mark.parametrize("enabled", OPTION_COMBINATIONS, ids=combination_id)
def test_every_option_combination(enabled):
    q, k, v = make_inputs(seq_len=19)
    compare_backends(q, k, v, build_options(enabled), block_size=5)


@pytest.mark.parametrize(
    "seq_len,block_size,pre,post",
    [
        (1, 4, (3, 5), (2, 3)),      # a single token
        (17, 4, (1, 5), (1, 3)),     # c_q = 1: no halo
        (17, 4, (3, 1), (2, 1)),     # c_k = 1
        (23, 3, (7, 3), (5, 5)),     # c_q larger than the block: the halo spans several blocks
        (13, 8, (2, 15), (2, 15)),   # c_k wider than most rows
        (33, 32, (6, 11), (6, 11)),  # the paper's kernel, N one past the block
    ],
)
def test_shapes(seq_len, block_size, pre, post):
    q, k, v = make_inputs(seq_len=seq_len)
    compare_backends(q, k, v, build_options(OPTION_NAMES, pre=pre, post=post), block_size)


def test_grouped_query_heads():
    q, k, v = make_inputs(heads=4, kv_heads=2, seq_len=15)
    compare_backends(q, k, v, build_options(OPTION_NAMES), block_size=4)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_low_precision_matches_reference(dtype, tol):
    q, k, v = make_inputs(seq_len=21, dtype=dtype)
    # float32 kernels beside half-precision q, as mixed-precision training passes them
    options = build_options(OPTION_NAMES, dtype=torch.float32 if dtype != torch.float32 else dtype)
    compare_backends(q, k, v, options, block_size=6, rtol=tol, atol=tol, reference_dtype=None)
    out = chunked_attention(q, k, v, **options, scale=0.3, dropout_p=0.0)
    assert out.dtype == dtype


def test_auto_uses_chunked_for_long_sequences(monkeypatch):
    import mta.ops as ops

    calls = []
    monkeypatch.setattr(ops, "chunked_attention", lambda *a, **kw: calls.append("chunked"))
    monkeypatch.setattr(ops, "reference_attention", lambda *a, **kw: calls.append("reference"))
    kernel = torch.zeros(1, 1, 1)
    short = torch.zeros(1, 1, ops.AUTO_REFERENCE_MAX_TOKENS, 2)
    long = torch.zeros(1, 1, ops.AUTO_REFERENCE_MAX_TOKENS + 1, 2)
    mta_attention(short, short, short, kernel_pre=kernel)
    mta_attention(long, long, long, kernel_pre=kernel)
    assert calls == ["reference", "chunked"]


def test_dropout_is_reproducible_and_its_backward_exact():
    q, k, v = make_inputs(batch=1, heads=2, seq_len=9, head_dim=3)
    options = build_options(OPTION_NAMES, heads=2, pre=(2, 3), post=(2, 3), groups=(1, 1))
    torch.manual_seed(0)
    first = mta_attention(q, k, v, **options, dropout_p=0.3, backend="chunked")
    torch.manual_seed(0)
    second = mta_attention(q, k, v, **options, dropout_p=0.3, backend="chunked")
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    without = mta_attention(q, k, v, **options, backend="chunked")
    assert not torch.allclose(first, without)
    inputs = (q, k, v, *options.values())

    def with_fixed_mask(*tensors):
        return ChunkedMTA.apply(*tensors, 0.5, 0.3, 1234, 4)

    assert torch.autograd.gradcheck(with_fixed_mask, inputs)


def largest_tensor_in_forward_backward(backend, seq_len, block_size=32):
    q, k, v = make_inputs(batch=1, heads=2, seq_len=seq_len, head_dim=4, dtype=torch.float32)
    options = build_options(OPTION_NAMES, heads=2, pre=(6, 11), post=(6, 11), groups=(1, 1), dtype=torch.float32)
    with LargestTensorProbe() as probe:
        if backend == "chunked":
            out = chunked_attention(q, k, v, **options, scale=0.5, dropout_p=0.0, block_size=block_size)
        else:
            out = mta_attention(q, k, v, **options, backend="reference")
        out.sum().backward()
    return probe.largest_bytes // 4


def test_chunked_memory_grows_linearly():
    """Quadrupling N multiplies the largest tensor by ~4 for chunked (block × N), by ~16 for the reference."""
    chunked = [largest_tensor_in_forward_backward("chunked", n) for n in (256, 1024)]
    reference = [largest_tensor_in_forward_backward("reference", n) for n in (256, 1024)]
    assert reference[1] / reference[0] > 12, "the probe must see the reference's N×N maps"
    assert chunked[1] / chunked[0] < 5
    assert chunked[1] <= 2 * (32 + 10) * 1024 * 4, "no tensor beyond B·H·(block + halo)·N scores"
