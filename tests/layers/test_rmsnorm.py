"""RMSNorm: the formula, computed in float32 for half-precision inputs."""

import torch

from mta.layers import RMSNorm


def test_matches_formula():
    norm = RMSNorm(6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6))
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_half_precision_is_computed_in_float32():
    norm = RMSNorm(8)
    x = torch.randn(5, 8) * 100
    out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, norm(x.bfloat16().float()).bfloat16())
