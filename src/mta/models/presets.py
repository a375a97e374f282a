"""Named model configurations: the paper's sizes and families (docs/spec.md §3), its toy models (§5) and
tiny ones for tests and CPU demos.

Names are "<size>-<family>", family in {transformer, diff, talking_heads, mta}:
  300M / 550M / 880M / 1B  docs/spec.md §3, vocabulary 128256 (Llama 3's tokenizer, as the official runs),
                           sequence 2048.
  small                    D 512, 8 layers, 8 heads, sequence 1024, vocabulary 8192 (`mta data prepare`'s default):
                           ≈ 31M parameters, for the small-scale comparison (q–k convolutions in layers 2 and 6).
  tiny                     D 64, 4 layers, 4 heads, vocabulary 256, sequence 128, q–k convolutions in layer 2.
  toy (transformer, mta)   docs/spec.md §5: D 256, 4 layers, 2 heads, attention dropout 0.1, the 31-token character
                           vocabulary of mta.data.toy; the MTA variant has a 2×9 pre-softmax convolution in every
                           layer and nothing else.
`get_preset(name, **overrides)` builds the ModelConfig; derived defaults (ffn_hidden) follow the overrides.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .config import ModelConfig

LLAMA3_VOCAB_SIZE = 128256
TOY_VOCAB_SIZE = 31  # pad, BOS, EOS, '.', '#', a–z: mta.data.toy.VOCAB_SIZE
FAMILIES = ("transformer", "diff", "talking_heads", "mta")
MTA_KERNEL = (6, 11)  # (c_q, c_k) of the paper's q–k convolutions, before and after softmax

_EVERY_FOURTH_FROM_2 = (2, 6, 10, 14, 18, 22)
_SIZES: dict[str, dict[str, Any]] = {
    "300M": dict(vocab_size=LLAMA3_VOCAB_SIZE, dim=1024, n_layers=20, n_heads=16, max_seq_len=2048),
    "550M": dict(vocab_size=LLAMA3_VOCAB_SIZE, dim=1280, n_layers=24, n_heads=10, max_seq_len=2048),
    "880M": dict(vocab_size=LLAMA3_VOCAB_SIZE, dim=1536, n_layers=24, n_heads=16, max_seq_len=2048),
    "1B": dict(vocab_size=LLAMA3_VOCAB_SIZE, dim=2048, n_layers=24, n_heads=16, max_seq_len=2048),
    "small": dict(vocab_size=8192, dim=512, n_layers=8, n_heads=8, max_seq_len=1024),
    "tiny": dict(vocab_size=256, dim=64, n_layers=4, n_heads=4, max_seq_len=128),
}
_QK_CONV_LAYERS = {
    "300M": (2, 6, 10, 14, 18),
    "550M": _EVERY_FOURTH_FROM_2,
    "880M": _EVERY_FOURTH_FROM_2,
    "1B": _EVERY_FOURTH_FROM_2,
    "small": (2, 6),
    "tiny": (2,),
}


def _family(family: str, size: str) -> dict[str, Any]:
    """The attention fields of `family` at `size` (docs/spec.md §3)."""
    if family != "mta":
        return dict(attention=family)
    heads = _SIZES[size]["n_heads"]
    return dict(
        attention="mta",
        pre_kernel=MTA_KERNEL,
        post_kernel=MTA_KERNEL,
        qk_conv_layers=_QK_CONV_LAYERS[size],
        pre_mix_group=heads,
        post_mix_group=heads,
        group_norm=True,
        gate=True,
    )


_TOY = dict(vocab_size=TOY_VOCAB_SIZE, dim=256, n_layers=4, n_heads=2, max_seq_len=512, dropout=0.1)
_PRESETS: dict[str, dict[str, Any]] = {
    f"{size}-{family}": {**_SIZES[size], **_family(family, size)} for size in _SIZES for family in FAMILIES
}
_PRESETS["toy-transformer"] = dict(_TOY, attention="transformer")
_PRESETS["toy-mta"] = dict(_TOY, attention="mta", pre_kernel=(2, 9))


def list_presets() -> list[str]:
    """The preset names (list[str]), in definition order."""
    return list(_PRESETS)


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """The ModelConfig of preset `name` with `overrides` (ModelConfig field names) applied, then validated.
    `DecoderLM(get_preset(name))` maps tokens [B, N] long to logits [B, N, vocab_size] (float32 parameters)."""
    if name not in _PRESETS:
        raise ValueError(f"name: unknown preset {name!r}, expected one of {list_presets()}")
    known = {field.name for field in fields(ModelConfig)}
    for key in overrides:
        if key not in known:
            raise ValueError(f"{key}: not a ModelConfig field, expected one of {sorted(known)}")
    return ModelConfig(**{**_PRESETS[name], **overrides})
