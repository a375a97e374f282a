"""RoPE: the interleaved convention, position offsets and relative-position invariance."""

import math

import torch

from mta.layers import apply_rope


def test_rotates_interleaved_pairs():
    theta, position = 100.0, 3
    x = torch.zeros(1, 1, position + 1, 4, dtype=torch.float64)
    x[..., 0] = 1.0  # first pair, frequency 1
    x[..., 2] = 1.0  # second pair, frequency theta^(-2/4)
    out = apply_rope(x, theta)[0, 0, position]
    slow = position * theta**-0.5
    expected = torch.tensor([math.cos(position), math.sin(position), math.cos(slow), math.sin(slow)], dtype=x.dtype)
    torch.testing.assert_close(out, expected)


def test_offset_equals_slicing_a_longer_sequence():
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    full = apply_rope(x)
    torch.testing.assert_close(apply_rope(x[:, :, 4:], position_offset=4), full[:, :, 4:])
    torch.testing.assert_close(apply_rope(x[:, :, 4:], position_offset=torch.tensor(4)), full[:, :, 4:])


def test_per_row_offsets_equal_each_row_with_its_own_offset():
    x = torch.randn(3, 2, 5, 8, dtype=torch.float64)
    offsets = torch.tensor([0, -2, 7])
    out = apply_rope(x, position_offset=offsets)
    for row, offset in enumerate(offsets.tolist()):
        assert torch.equal(out[row : row + 1], apply_rope(x[row : row + 1], position_offset=offset))


def test_scores_depend_only_on_relative_position_and_norms_are_kept():
    q, k = torch.randn(2, 1, 1, 1, 16, dtype=torch.float64).unbind(0)
    score = lambda m, n: (apply_rope(q, position_offset=m) * apply_rope(k, position_offset=n)).sum()  # noqa: E731
    torch.testing.assert_close(score(7, 2), score(105, 100))
    torch.testing.assert_close(apply_rope(q, position_offset=11).norm(), q.norm())


def test_keeps_half_precision_dtype():
    x = torch.randn(1, 2, 5, 8)
    out = apply_rope(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), apply_rope(x), atol=2e-2, rtol=2e-2)
