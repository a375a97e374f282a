"""DIFF attention against a materialised computation of its formula (arXiv 2410.05258)."""

import math

import pytest
import torch

from mta.layers import AttentionConfig, DiffAttention, SoftmaxAttention, apply_rope
from mta.layers.config import lambda_init

DIM, HEADS, SEQ = 32, 4, 8


def make_layer(n_kv_heads=HEADS, layer_index=2):
    torch.manual_seed(0)
    return DiffAttention(
        AttentionConfig(dim=DIM, n_heads=HEADS, n_kv_heads=n_kv_heads, layer_index=layer_index)
    ).double()


def causal_softmax(scores):
    n = scores.shape[-1]
    future = torch.ones(n, n, dtype=torch.bool).triu(1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


def manual_diff(layer, x, lam):
    """The DIFF formula with both [N, N] maps materialised: head i has q/k halves 2i, 2i+1 and a 2d value."""
    cfg, (batch, seq, _) = layer.config, x.shape
    d, rep = cfg.head_dim, cfg.n_heads // cfg.n_kv_heads
    q = apply_rope((x @ layer.wq.weight.T).view(batch, seq, cfg.n_heads, d).transpose(1, 2), cfg.rope_theta)
    k = apply_rope((x @ layer.wk.weight.T).view(batch, seq, cfg.n_kv_heads, d).transpose(1, 2), cfg.rope_theta)
    v = (x @ layer.wv.weight.T).view(batch, seq, cfg.n_kv_heads // 2, 2 * d).transpose(1, 2)
    heads = []
    for i in range(cfg.n_heads // 2):
        kv = i // rep
        a1 = causal_softmax(q[:, 2 * i] @ k[:, 2 * kv].transpose(-1, -2) / math.sqrt(d))
        a2 = causal_softmax(q[:, 2 * i + 1] @ k[:, 2 * kv + 1].transpose(-1, -2) / math.sqrt(d))
        o = (a1 - lam * a2) @ v[:, kv]  # [B, N, 2d]
        o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * layer.head_norm.weight
        heads.append(o * (1 - lambda_init(cfg.layer_index)))
    return torch.cat(heads, dim=-1) @ layer.wo.weight.T


@pytest.mark.parametrize("n_kv_heads", [HEADS, 2])
def test_matches_materialised_formula(n_kv_heads):
    layer = make_layer(n_kv_heads)
    with torch.no_grad():
        layer.head_norm.weight.copy_(torch.rand(2 * layer.config.head_dim) + 0.5)
    lam = (
        torch.exp(layer.lambda_q1 @ layer.lambda_k1) - torch.exp(layer.lambda_q2 @ layer.lambda_k2) + lambda_init(2)
    )
    torch.testing.assert_close(layer.differential_lambda(), lam)
    x = torch.randn(2, SEQ, DIM, dtype=torch.float64)
    torch.testing.assert_close(layer(x), manual_diff(layer, x, lam), rtol=1e-10, atol=1e-10)


def test_zero_lambda_is_softmax_attention_of_the_first_halves():
    layer = make_layer(layer_index=0)
    # λ = exp(λq1·λk1) - exp(0) + λ_init = 0 when λq1·λk1 = log(1 - λ_init).
    with torch.no_grad():
        a = math.sqrt(-math.log(1 - lambda_init(0)))
        for vector in (layer.lambda_q1, layer.lambda_k1, layer.lambda_q2):
            vector.zero_()
        layer.lambda_q1[0], layer.lambda_k1[0] = a, -a
    assert abs(layer.differential_lambda().item()) < 1e-12

    x = torch.randn(1, SEQ, DIM, dtype=torch.float64)
    d = layer.config.head_dim
    q = apply_rope((x @ layer.wq.weight.T).view(1, SEQ, HEADS, d).transpose(1, 2))[:, 0::2]
    k = apply_rope((x @ layer.wk.weight.T).view(1, SEQ, HEADS, d).transpose(1, 2))[:, 0::2]
    v = (x @ layer.wv.weight.T).view(1, SEQ, HEADS // 2, 2 * d).transpose(1, 2)
    o = (causal_softmax(q @ k.transpose(-1, -2) / math.sqrt(d)) @ v).transpose(1, 2)
    o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * (1 - lambda_init(0))
    torch.testing.assert_close(layer(x), o.flatten(2) @ layer.wo.weight.T, rtol=1e-10, atol=1e-10)


def test_parameters_beyond_the_transformer_are_six_head_widths():
    layer = make_layer()
    d = layer.config.head_dim
    baseline = SoftmaxAttention(AttentionConfig(dim=DIM, n_heads=HEADS))
    assert sum(p.numel() for p in layer.parameters()) - sum(p.numel() for p in baseline.parameters()) == 6 * d
    assert layer.head_norm.weight.shape == (2 * d,) and layer.lambda_q1.shape == (d,)


@pytest.mark.parametrize(("n_heads", "n_kv_heads", "field"), [(2, 1, "n_kv_heads"), (1, 1, "n_heads")])
def test_odd_heads_are_refused(n_heads, n_kv_heads, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        DiffAttention(AttentionConfig(dim=DIM, n_heads=n_heads, n_kv_heads=n_kv_heads))
