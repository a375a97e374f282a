"""Every attention kind: causality, the factory, and kinds refusing MTA options."""

import pytest
import torch

from mta.layers import ATTENTION_KINDS, AttentionConfig, build_attention

DIM, SEQ = 32, 10
MTA_OPTIONS = dict(
    pre_kernel=(3, 5), post_kernel=(2, 3), pre_mix_group=2, post_mix_group=4, group_norm=True,
    depth_scaling=True, gate=True,
)


@pytest.mark.parametrize("kind", list(ATTENTION_KINDS))
def test_causal(kind):
    torch.manual_seed(0)
    options = MTA_OPTIONS if kind == "mta" else {}
    layer = build_attention(kind, AttentionConfig(dim=DIM, n_heads=4, n_kv_heads=2, **options)).double()
    with torch.no_grad():  # away from identity, so the convolutions and mixers really mix positions and heads
        for name, param in layer.named_parameters():
            if name.startswith(("kernel", "head_mix")):
                param.add_(torch.randn_like(param) * 0.5)
    x = torch.randn(2, SEQ, DIM, dtype=torch.float64)
    for t in (0, 4, SEQ - 1):
        changed = x.clone()
        changed[:, t:] += torch.randn_like(changed[:, t:])
        before, after = layer(x), layer(changed)
        torch.testing.assert_close(after[:, :t], before[:, :t], rtol=1e-12, atol=1e-12)
        assert not torch.allclose(after[:, t], before[:, t])


@pytest.mark.parametrize("kind", list(ATTENTION_KINDS))
def test_bad_inputs_are_named(kind):
    options = MTA_OPTIONS if kind == "mta" else {}
    layer = build_attention(kind, AttentionConfig(dim=DIM, n_heads=4, **options))
    with pytest.raises(ValueError, match=rf"^x: got shape \(10, 32\), expected \[B, N, D={DIM}\]"):
        layer(torch.randn(SEQ, DIM))
    with pytest.raises(ValueError, match=rf"^x: got shape \(2, 10, 16\), expected \[B, N, D={DIM}\]"):
        layer(torch.randn(2, SEQ, 16))
    with pytest.raises(ValueError, match=r"^x: got dtype torch.int64, expected a floating-point tensor"):
        layer(torch.ones(2, SEQ, DIM, dtype=torch.long))


@pytest.mark.parametrize("kind", list(ATTENTION_KINDS))
@pytest.mark.parametrize("shape", [(0, SEQ, DIM), (2, 0, DIM)], ids=["batch0", "tokens0"])
def test_empty_inputs(kind, shape):
    options = MTA_OPTIONS if kind == "mta" else {}
    layer = build_attention(kind, AttentionConfig(dim=DIM, n_heads=4, **options))
    x = torch.randn(shape, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    assert out.shape == shape and x.grad.shape == shape


def test_unknown_kind():
    with pytest.raises(ValueError, match="^kind: got 'linear'.*'transformer'"):
        build_attention("linear", AttentionConfig(dim=DIM, n_heads=4))


@pytest.mark.parametrize("kind", ["transformer", "talking_heads", "diff"])
@pytest.mark.parametrize("option", list(MTA_OPTIONS))
def test_other_kinds_refuse_mta_options(kind, option):
    value = MTA_OPTIONS[option]
    extra = dict(group_norm=True) if option == "depth_scaling" else {}
    cfg = AttentionConfig(dim=DIM, n_heads=4, **{option: value, **extra})
    with pytest.raises(ValueError, match=f"^{next(iter(cfg.mta_options_set()))}:"):
        build_attention(kind, cfg)
