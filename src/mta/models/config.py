"""The configuration of a Llama-style decoder and of its attention in each layer (docs/spec.md §3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from mta.layers import ATTENTION_KINDS, MTA_OPTIONS, AttentionConfig


def default_ffn_hidden(dim: int) -> int:
    """SwiGLU hidden width 256·ceil(8D/3/256) (docs/spec.md §3)."""
    return 256 * math.ceil(8 * dim / 3 / 256)


@dataclass
class ModelConfig:
    """A Llama-style decoder: embedding, n_layers pre-norm blocks (attention, SwiGLU), final RMSNorm, output head.

    vocab_size, dim (D), n_layers, n_heads (H), n_kv_heads (grouped-query, default H): the shapes; head width D/H.
    ffn_hidden: SwiGLU hidden width, default 256·ceil(8D/3/256). norm_eps: RMSNorm eps. rope_theta: RoPE base.
    max_seq_len: the longest input `DecoderLM` accepts. tie_embeddings: the output head reuses the embedding.
    attention: "transformer", "mta", "talking_heads" or "diff" (mta.layers.build_attention).
    MTA options (attention="mta" only; see mta.layers.AttentionConfig): pre_kernel, post_kernel, pre_mix_group,
    post_mix_group, group_norm, depth_scaling, gate. Head mixing, norm and gate apply to every layer; the q–k
    convolutions only to the 0-based layers in qk_conv_layers (None = every layer), as in the official configs.
    dropout: dropout on attention weights, training only. backend: the mta_attention backend.
    Every field is a Python int, float, bool, str or int tuple; `DecoderLM(config)` maps tokens [B, N] long to
    logits [B, N, vocab_size].
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None
    ffn_hidden: int | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 1e5
    max_seq_len: int = 2048
    tie_embeddings: bool = True
    attention: str = "transformer"
    pre_kernel: tuple[int, int] | None = None
    post_kernel: tuple[int, int] | None = None
    pre_mix_group: int | None = None
    post_mix_group: int | None = None
    group_norm: bool = False
    depth_scaling: bool = False
    gate: bool = False
    qk_conv_layers: tuple[int, ...] | None = None
    dropout: float = 0.0
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "max_seq_len"):
            _check_positive_int(name, getattr(self, name))
        if self.ffn_hidden is None:
            self.ffn_hidden = default_ffn_hidden(self.dim)
        _check_positive_int("ffn_hidden", self.ffn_hidden)
        if not (isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0):
            raise ValueError(f"norm_eps: got {self.norm_eps!r}, expected a positive number")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention: got {self.attention!r}, expected one of {tuple(ATTENTION_KINDS)}")
        if self.attention != "mta":
            for name in MTA_OPTIONS + ("qk_conv_layers",):
                if getattr(self, name) not in (None, False):
                    raise ValueError(f"{name}: got {getattr(self, name)!r}, but only attention='mta' takes it")
        self._check_qk_conv_layers()
        # AttentionConfig validates the shared fields (heads, kernels, groups, dropout, backend), naming them.
        resolved = self._attention_config(0, convolutions=True)
        self.n_kv_heads = resolved.n_kv_heads
        self.pre_kernel, self.post_kernel = resolved.pre_kernel, resolved.post_kernel  # lists from JSON -> tuples
        if self.attention == "diff":
            for name in ("n_heads", "n_kv_heads"):
                if getattr(self, name) % 2:
                    raise ValueError(f"{name}: got {getattr(self, name)}, expected an even number for DIFF attention")

    def attention_config(self, layer: int) -> AttentionConfig:
        """The AttentionConfig of the 0-based `layer`: q–k convolutions only if it is in qk_conv_layers."""
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer: got {layer}, expected 0 <= layer < n_layers={self.n_layers}")
        convolutions = self.qk_conv_layers is None or layer in self.qk_conv_layers
        return self._attention_config(layer, convolutions)

    def _attention_config(self, layer: int, convolutions: bool) -> AttentionConfig:
        shared = {name: getattr(self, name) for name in ATTENTION_FIELDS}
        if not convolutions:
            shared.update(pre_kernel=None, post_kernel=None)
        return AttentionConfig(**shared, layer_index=layer)

    def _check_qk_conv_layers(self) -> None:
        if self.qk_conv_layers is None:
            return
        if not isinstance(self.qk_conv_layers, (tuple, list)):
            raise ValueError(f"qk_conv_layers: got {self.qk_conv_layers!r}, expected a tuple of layer indices")
        self.qk_conv_layers = tuple(self.qk_conv_layers)  # lists come from JSON
        if self.pre_kernel is None and self.post_kernel is None:
            raise ValueError("qk_conv_layers: set, but neither pre_kernel nor post_kernel is")
        for layer in self.qk_conv_layers:
            if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < self.n_layers:
                raise ValueError(
                    f"qk_conv_layers: got {self.qk_conv_layers!r}, expected indices in [0, n_layers={self.n_layers})"
                )


# The AttentionConfig fields a ModelConfig sets in every layer: those of the same name. AttentionConfig's others are
# per layer (layer_index) or derived (head_dim = dim // n_heads).
ATTENTION_FIELDS = tuple(f.name for f in fields(AttentionConfig) if f.name in {g.name for g in fields(ModelConfig)})


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: got {value!r}, expected a positive integer")
