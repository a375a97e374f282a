"""AttentionConfig validation: each error names the field at fault."""

import pytest

from mta.layers import AttentionConfig


def test_defaults_are_resolved():
    cfg = AttentionConfig(dim=64, n_heads=4)
    assert (cfg.n_kv_heads, cfg.head_dim, cfg.rope_theta, cfg.mta_options_set()) == (4, 16, 1e5, [])
    assert AttentionConfig(dim=64, n_heads=4, pre_kernel=[2, 3]).pre_kernel == (2, 3)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(dim=30), "n_heads"),
        (dict(n_heads=0), "n_heads"),
        (dict(n_kv_heads=3), "n_kv_heads"),
        (dict(head_dim=7), "head_dim"),
        (dict(pre_kernel=(2, 4)), "pre_kernel"),
        (dict(post_kernel=(0, 3)), "post_kernel"),
        (dict(post_kernel=(2,)), "post_kernel"),
        (dict(pre_mix_group=3), "pre_mix_group"),
        (dict(post_mix_group=0), "post_mix_group"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(backend="flash"), "backend"),
        (dict(depth_scaling=True), "depth_scaling"),
        (dict(layer_index=-1), "layer_index"),
        (dict(rope_theta=0), "rope_theta"),
    ],
)
def test_invalid_field_is_named(overrides, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        AttentionConfig(**{"dim": 32, "n_heads": 4, **overrides})
