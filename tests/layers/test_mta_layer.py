"""MultiTokenAttention and talking heads against plain attention and a manual docs/spec.md §1–§2 computation."""

import pytest
import torch

from mta.layers import AttentionConfig, MultiTokenAttention, SoftmaxAttention, TalkingHeadsAttention, apply_rope
from mta.layers.config import lambda_init
from mta.ops.reference import attention_weights, causal_future

DIM, HEADS, KV_HEADS, SEQ = 32, 4, 2, 9
EVERY_OPTION = dict(pre_kernel=(3, 5), post_kernel=(2, 3), pre_mix_group=2, post_mix_group=4)


def make_layer(cls, seed=0, **options):
    torch.manual_seed(seed)
    cfg = AttentionConfig(dim=DIM, n_heads=HEADS, n_kv_heads=KV_HEADS, **options)
    return cls(cfg).double()


def randomize_(layer, *names):
    """Overwrite the named parameters with random values (non-identity kernels and mixers, norm, gate)."""
    with torch.no_grad():
        for name in names:
            param = layer.get_parameter(name)
            param.copy_(torch.randn_like(param) * 0.5 + (1.0 if name == "group_norm.weight" else 0.0))


def project(layer, x, offset):
    """q, k, v [B, H or H_kv, N, d] by hand: bias-free projections, then RoPE on q and k."""
    cfg = layer.config
    heads = lambda t, n: t.view(x.shape[0], x.shape[1], n, cfg.head_dim).transpose(1, 2)  # noqa: E731
    q = apply_rope(heads(x @ layer.wq.weight.T, cfg.n_heads), cfg.rope_theta, offset)
    k = apply_rope(heads(x @ layer.wk.weight.T, cfg.n_kv_heads), cfg.rope_theta, offset)
    return q, k, heads(x @ layer.wv.weight.T, cfg.n_kv_heads)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_identity_init_equals_softmax_attention(backend):
    mta = make_layer(MultiTokenAttention, backend=backend, **EVERY_OPTION)
    softmax = make_layer(SoftmaxAttention, seed=1)
    softmax.load_state_dict({name: mta.state_dict()[name] for name in softmax.state_dict()})
    x = torch.randn(2, SEQ, DIM, dtype=torch.float64)
    torch.testing.assert_close(mta(x, position_offset=5), softmax(x, position_offset=5), rtol=1e-12, atol=1e-12)


def test_talking_heads_identity_init_equals_softmax_attention():
    talking = make_layer(TalkingHeadsAttention)
    assert talking.head_mix_pre.shape == talking.head_mix_post.shape == (1, HEADS, HEADS)
    softmax = make_layer(SoftmaxAttention, seed=1)
    assert sum(p.numel() for p in talking.parameters()) - sum(p.numel() for p in softmax.parameters()) == 2 * HEADS**2
    softmax.load_state_dict({name: talking.state_dict()[name] for name in softmax.state_dict()})
    x = torch.randn(2, SEQ, DIM, dtype=torch.float64)
    torch.testing.assert_close(talking(x), softmax(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_layer_matches_manual_computation(backend):
    layer = make_layer(
        MultiTokenAttention, backend=backend, group_norm=True, depth_scaling=True, gate=True, layer_index=3,
        **EVERY_OPTION,
    )
    randomize_(layer, "kernel_pre", "kernel_post", "head_mix_pre", "head_mix_post", "group_norm.weight", "gate.bias")
    x = torch.randn(2, SEQ, DIM, dtype=torch.float64)

    q, k, v = project(layer, x, offset=2)
    k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = q @ k.transpose(-1, -2) / layer.config.head_dim**0.5
    weights = attention_weights(
        scores, causal_future(SEQ, SEQ, 0, x.device),
        layer.kernel_pre, layer.kernel_post, layer.head_mix_pre, layer.head_mix_post,
    )
    out = (weights @ v).transpose(1, 2)  # [B, N, H, d]
    out = out / torch.sqrt(out.pow(2).mean(-1, keepdim=True) + 1e-5) * layer.group_norm.weight
    out = out * (1 - lambda_init(3))
    out = out * torch.sigmoid(out @ layer.gate.weight.T + layer.gate.bias)
    expected = out.flatten(2) @ layer.wo.weight.T

    torch.testing.assert_close(layer(x, position_offset=2), expected, rtol=1e-10, atol=1e-10)


def test_identity_initialisation_of_kernels_and_mixers():
    layer = make_layer(MultiTokenAttention, **EVERY_OPTION)
    kernel = torch.zeros(HEADS, 3, 5, dtype=torch.float64)
    kernel[:, 2, 2] = 1.0
    torch.testing.assert_close(layer.kernel_pre, kernel)
    assert layer.kernel_post.shape == (HEADS, 2, 3) and layer.kernel_post[:, 1, 1].eq(1).all()
    assert layer.kernel_post.sum() == HEADS
    torch.testing.assert_close(layer.head_mix_pre, torch.eye(2, dtype=torch.float64).expand(2, 2, 2))
    torch.testing.assert_close(layer.head_mix_post, torch.eye(4, dtype=torch.float64)[None])


def test_group_norm_shares_one_vector_and_gate_is_one_scalar_per_token_and_head():
    plain = make_layer(MultiTokenAttention)
    layer = make_layer(MultiTokenAttention, group_norm=True, gate=True)
    head_dim = layer.config.head_dim
    assert layer.group_norm.weight.shape == (head_dim,)
    assert layer.gate.weight.shape == (1, head_dim) and layer.gate.bias.shape == (1,)
    assert layer.gate.bias.eq(0).all() and layer.gate.weight.abs().max() <= 3 * DIM**-0.5
    extra = sum(p.numel() for p in layer.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 2 * head_dim + 1

    seen = {}
    layer.gate.register_forward_hook(lambda module, args, out: seen.update(gate_in=args[0], gate_out=out))
    layer(torch.randn(2, SEQ, DIM, dtype=torch.float64))
    assert seen["gate_out"].shape == (2, SEQ, HEADS, 1)
    # The gate reads the group-normed output: unit RMS per (token, head) with the initial weight of ones
    # (up to eps = 1e-5 against small activations).
    torch.testing.assert_close(
        seen["gate_in"].pow(2).mean(-1), torch.ones(2, SEQ, HEADS, dtype=torch.float64), rtol=0, atol=1e-2
    )


def test_attention_dropout_only_in_training():
    layer = make_layer(MultiTokenAttention, dropout=0.5, pre_kernel=(2, 3))
    x = torch.randn(1, SEQ, DIM, dtype=torch.float64)
    layer.eval()
    reference = make_layer(MultiTokenAttention, pre_kernel=(2, 3)).eval()
    torch.testing.assert_close(layer(x), reference(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))
