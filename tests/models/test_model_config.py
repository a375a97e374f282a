"""ModelConfig validation, per-layer attention configs and the named presets (docs/spec.md §3, §5)."""

import dataclasses

import pytest

from mta.data.toy import VOCAB_SIZE as TOY_VOCAB_SIZE
from mta.layers import AttentionConfig
from mta.models import ModelConfig, get_preset, list_presets
from mta.models.config import ATTENTION_FIELDS

SIZES = {"300M": (1024, 20, 16, 64), "550M": (1280, 24, 10, 128), "880M": (1536, 24, 16, 96), "1B": (2048, 24, 16, 128)}
FAMILIES = ("transformer", "diff", "talking_heads", "mta")


def test_preset_names():
    expected = {f"{size}-{family}" for size in (*SIZES, "small", "tiny") for family in FAMILIES}
    assert set(list_presets()) == expected | {"toy-transformer", "toy-mta"}


def test_small_preset_follows_the_paper_recipe():
    cfg = get_preset("small-mta")
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.vocab_size, cfg.max_seq_len) == (512, 8, 8, 8192, 1024)
    conv_layers = [layer for layer in range(cfg.n_layers) if cfg.attention_config(layer).pre_kernel]
    assert conv_layers == [2, 6] and cfg.pre_kernel == cfg.post_kernel == (6, 11)
    assert cfg.pre_mix_group == cfg.post_mix_group == 8 and cfg.group_norm and cfg.gate


@pytest.mark.parametrize("size", list(SIZES))
def test_paper_sizes(size):
    dim, n_layers, n_heads, head_dim = SIZES[size]
    cfg = get_preset(f"{size}-mta")
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.vocab_size) == (dim, n_layers, n_heads, 128256)
    assert cfg.dim // cfg.n_heads == head_dim
    assert (cfg.rope_theta, cfg.norm_eps, cfg.tie_embeddings, cfg.max_seq_len) == (1e5, 1e-5, True, 2048)
    conv_layers = [layer for layer in range(n_layers) if cfg.attention_config(layer).pre_kernel]
    assert conv_layers == list(range(2, n_layers, 4))
    for layer in (0, 2):
        att = cfg.attention_config(layer)
        assert att.layer_index == layer
        assert (att.pre_mix_group, att.post_mix_group, att.group_norm, att.gate) == (n_heads, n_heads, True, True)
        assert not att.depth_scaling
    assert cfg.attention_config(2).post_kernel == (6, 11) and cfg.attention_config(3).post_kernel is None


def test_ffn_hidden_default_follows_overrides():
    assert get_preset("880M-transformer").ffn_hidden == 4096
    assert get_preset("300M-transformer").ffn_hidden == 2816
    assert get_preset("tiny-transformer", dim=128).ffn_hidden == 512


def test_toy_presets():
    base, mta = get_preset("toy-transformer"), get_preset("toy-mta")
    assert base.vocab_size == mta.vocab_size == TOY_VOCAB_SIZE == 31
    assert (mta.dim, mta.n_layers, mta.n_heads, mta.dropout) == (256, 4, 2, 0.1)
    for layer in range(4):
        att = mta.attention_config(layer)
        assert att.pre_kernel == (2, 9) and att.mta_options_set() == ["pre_kernel"]
    assert base.attention == "transformer" and base.attention_config(0).mta_options_set() == []


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ValueError, match="unknown preset '2B-mta'.*'880M-mta'"):
        get_preset("2B-mta")


def test_unknown_override_is_named():
    with pytest.raises(ValueError, match="^n_head:"):
        get_preset("tiny-mta", n_head=8)


def test_lists_from_json_become_tuples():
    cfg = get_preset("tiny-mta", pre_kernel=[2, 3], qk_conv_layers=[1, 3])
    assert cfg.pre_kernel == (2, 3) and cfg.qk_conv_layers == (1, 3)


@pytest.mark.parametrize(
    ("preset", "overrides", "field"),
    [
        ("tiny-transformer", dict(vocab_size=0), "vocab_size"),
        ("tiny-transformer", dict(n_layers=0), "n_layers"),
        ("tiny-transformer", dict(ffn_hidden=0), "ffn_hidden"),
        ("tiny-transformer", dict(attention="linear"), "attention"),
        ("tiny-transformer", dict(n_heads=5), "n_heads"),
        ("tiny-transformer", dict(n_kv_heads=3), "n_kv_heads"),
        ("tiny-transformer", dict(dropout=1.5), "dropout"),
        ("tiny-transformer", dict(norm_eps=0.0), "norm_eps"),
        ("tiny-transformer", dict(gate=True), "gate"),
        ("tiny-talking_heads", dict(pre_mix_group=2), "pre_mix_group"),
        ("tiny-mta", dict(attention="transformer"), "pre_kernel"),
        ("tiny-mta", dict(qk_conv_layers=(4,)), "qk_conv_layers"),
        ("tiny-mta", dict(pre_kernel=None, post_kernel=None), "qk_conv_layers"),
        ("tiny-mta", dict(post_kernel=(6, 10)), "post_kernel"),
        ("tiny-mta", dict(post_mix_group=3), "post_mix_group"),
        ("tiny-diff", dict(dim=48, n_heads=3), "n_heads"),
        ("tiny-diff", dict(n_kv_heads=1), "n_kv_heads"),
    ],
)
def test_invalid_field_is_named(preset, overrides, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        get_preset(preset, **overrides)


def test_attention_config_layer_out_of_range():
    with pytest.raises(ValueError, match="^layer:"):
        ModelConfig(vocab_size=8, dim=16, n_layers=2, n_heads=2).attention_config(2)


def test_attention_config_derives_every_field():
    """Each AttentionConfig field comes from the ModelConfig field of the same name, except the per-layer
    layer_index and head_dim (dim // n_heads): a new field of both cannot be left behind."""
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    attention_fields = {f.name for f in dataclasses.fields(AttentionConfig)}
    assert set(ATTENTION_FIELDS) == attention_fields & model_fields
    assert attention_fields - model_fields == {"head_dim", "layer_index"}
    # Every shared field off its default, so a field that is not passed on shows.
    cfg = ModelConfig(vocab_size=8, dim=64, n_layers=3, n_heads=4, n_kv_heads=2, rope_theta=1e4, attention="mta",
                      pre_kernel=(2, 3), post_kernel=(3, 1), pre_mix_group=2, post_mix_group=4, group_norm=True,
                      depth_scaling=True, gate=True, qk_conv_layers=(1,), dropout=0.1, backend="reference")
    defaults = AttentionConfig(dim=2, n_heads=1)
    for layer in range(cfg.n_layers):
        attention = cfg.attention_config(layer)
        convolutions = layer == 1
        for name in ATTENTION_FIELDS:
            expected = getattr(cfg, name) if convolutions or name not in ("pre_kernel", "post_kernel") else None
            assert getattr(attention, name) == expected, (layer, name)
            assert expected is None or getattr(attention, name) != getattr(defaults, name), name
        assert (attention.layer_index, attention.head_dim) == (layer, cfg.dim // cfg.n_heads)
