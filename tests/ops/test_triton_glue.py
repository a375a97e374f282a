"""The Triton backend's algebra (mta.ops.triton.glue) with the PyTorch primitives, against the reference.

No Triton needed: this checks that MTA == glue + one banded causal attention, forward and every gradient,
in float64, before any kernel is involved; and the primitives against explicit loops.
"""


import pytest
import torch

from mta.ops.triton.glue import banded_mta
from mta.ops.triton.primitives import (
    TORCH_PRIMITIVES, band_matrix, banded_attention_torch, diagonal_dots_torch, query_window, token_conv_torch,
)
from op_cases import OPTION_COMBINATIONS, OPTION_NAMES, assert_matches_reference, build_options, combination_id, make_inputs

def compare_with_reference(q, k, v, options, rtol=1e-10, atol=1e-10):
    def run(q, k, v, options, scale):
        full = {name: options.get(name) for name in OPTION_NAMES}
        return banded_mta(q, k, v, **full, scale=scale, ops=TORCH_PRIMITIVES)

    assert_matches_reference(run, q, k, v, options, rtol, atol, reference_dtype=None)


@pytest.mark.parametrize("enabled", OPTION_COMBINATIONS, ids=combination_id)
def test_every_option_combination(enabled):
    q, k, v = make_inputs(seq_len=13, head_dim=3)
    compare_with_reference(q, k, v, build_options(enabled))


@pytest.mark.parametrize(
    "seq_len,pre,post,groups",
    [
        (1, (3, 5), (2, 3), (2, 1)),    # a single token
        (17, (1, 5), (1, 3), (1, 2)),   # c_q = 1
        (17, (3, 1), (2, 1), (4, 4)),   # c_k = 1, mixing groups of one head
        (9, (7, 3), (5, 5), (1, 1)),    # c_q close to N
        (5, (2, 15), (2, 15), (2, 2)),  # c_k wider than twice the sequence
        (14, (6, 11), (6, 11), (1, 1)), # the paper's kernel, full mixing
    ],
)
def test_shapes(seq_len, pre, post, groups):
    q, k, v = make_inputs(seq_len=seq_len, head_dim=4)
    compare_with_reference(q, k, v, build_options(OPTION_NAMES, pre=pre, post=post, groups=groups))


def test_grouped_query_heads():
    q, k, v = make_inputs(heads=4, kv_heads=2, seq_len=11, head_dim=3)
    compare_with_reference(q, k, v, build_options(OPTION_NAMES))


def test_value_dim_differs_from_query_dim():
    q, k, _ = make_inputs(seq_len=10, head_dim=3)
    v = torch.randn(2, 4, 10, 5, dtype=torch.float64, requires_grad=True)
    compare_with_reference(q, k, v, build_options(OPTION_NAMES))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2)])
def test_low_precision(dtype, tol):
    q, k, v = make_inputs(seq_len=12, head_dim=4, dtype=dtype)
    options = build_options(OPTION_NAMES, dtype=torch.float32)
    compare_with_reference(q, k, v, options, rtol=tol, atol=tol)


@pytest.mark.parametrize("skip", [0, 2])
def test_banded_attention_torch_matches_explicit_softmax(skip):
    gen = torch.Generator().manual_seed(5)
    qw, kw, vw = (torch.randn(1, 2, 7, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    band = torch.randn(1, 2, 7, 3, generator=gen, dtype=torch.float64)
    kw[0, 0, 3] = float("nan")  # read by rows 3 to 5 on the band only (replaced there), by row 6 off it
    out, lse = banded_attention_torch(qw, kw, vw, band, skip=skip)
    for i in range(7):
        scores = torch.stack(
            [band[0, :, i, i - j] if i - j < 3 else (qw[0, :, i] * kw[0, :, j]).sum(-1) for j in range(i + 1)], -1
        )
        torch.testing.assert_close(lse[0, :, i], torch.logsumexp(scores, -1), equal_nan=True)
        kept = max(0, i + 1 - skip)  # out leaves the diagonals i - j < skip out
        expected = torch.einsum("hj,hjd->hd", torch.softmax(scores, -1)[:, :kept], vw[0, :, :kept])
        torch.testing.assert_close(out[0, :, i], expected, equal_nan=True)
    assert torch.isfinite(out[0, :, :6]).all() and torch.isfinite(lse[0, :, :6]).all()
    matrix = band_matrix(band, 7)
    assert matrix[0, 1, 5, 3] == band[0, 1, 5, 2] and matrix[0, 1, 5, 2] == 0 and matrix[0, 1, 1, 2] == 0


def test_primitives_match_explicit_loops():
    gen = torch.Generator().manual_seed(6)
    batch, heads, seq_len, head_dim, size, c_q, c_k = 1, 4, 6, 2, 2, 2, 3
    x, y = (torch.randn(batch, heads, seq_len, head_dim, generator=gen, dtype=torch.float64) for _ in range(2))
    weight = torch.randn(heads, size, c_q, c_k, generator=gen, dtype=torch.float64)
    conv = token_conv_torch(x, weight, x.dtype).view(batch, heads, seq_len, size, c_q, head_dim)
    window = query_window(x, c_q, size).view(batch, heads, seq_len, size, c_q, head_dim)
    dots = diagonal_dots_torch(x, y, 3)
    for h in range(heads):
        for r in range(seq_len):
            for i in range(size):
                src = h // size * size + i
                for a in range(c_q):
                    expected = sum(weight[h, i, a, t] * x[0, src, r + t - 1] for t in range(c_k) if 0 <= r + t - 1 < seq_len)
                    torch.testing.assert_close(conv[0, h, r, i, a], expected + torch.zeros(head_dim, dtype=x.dtype))
                    row = r - (c_q - 1) + a
                    torch.testing.assert_close(window[0, h, r, i, a], x[0, src, row] if row >= 0 else x.new_zeros(head_dim))
            for e in range(3):
                expected = x[0, h, r] @ y[0, h, r - e] if r - e >= 0 else x.new_zeros(())
                torch.testing.assert_close(dots[0, h, r, e], expected)
