"""Attention by name: the four kinds the paper compares (docs/spec.md §3)."""

from __future__ import annotations

from torch import nn

from .attention import MultiTokenAttention, SoftmaxAttention, TalkingHeadsAttention
from .config import AttentionConfig
from .diff import DiffAttention

ATTENTION_KINDS = {
    "transformer": SoftmaxAttention,
    "mta": MultiTokenAttention,
    "talking_heads": TalkingHeadsAttention,
    "diff": DiffAttention,
}


def build_attention(kind: str, config: AttentionConfig) -> nn.Module:
    """The attention layer of `kind` ("transformer", "mta", "talking_heads" or "diff") for `config`.

    Only "mta" reads the MTA options of `config`; the other kinds raise a ValueError when one is set.
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"kind: got {kind!r}, expected one of {tuple(ATTENTION_KINDS)}")
    return ATTENTION_KINDS[kind](config)
