"""A Llama-style decoder-only language model with a choice of attention (shared/mta-spec.md §3).

    tokens [B, N] → embedding → n_layers × Block → RMSNorm → output head (tied: the embedding) → logits [B, N, V]
    Block: h = x + attention(RMSNorm(x)); out = h + SwiGLU(RMSNorm(h))

Initialisation (the official code's, lingua with its default "disabled" depth factor): embedding, attention
projections, SwiGLU w1/w3 and an untied head are truncated normal with std D^-1/2 at ±3σ; SwiGLU w2 uses
std hidden^-1/2; norms start at one; MTA kernels and mixers at identity (mta.layers.MultiTokenAttention); DIFF's
λ vectors at normal(0, 0.1). Every module re-initialises through `reset_parameters()`, so a model built on the
meta device can be materialised with `to_empty(device=...)` and then `reset_parameters()`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mta.layers import RMSNorm, build_attention
from mta.layers.init import trunc_normal_

from .config import ModelConfig


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) · w3 x), no biases. x [..., D] -> [..., D]."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))

    def reset_parameters(self) -> None:
        trunc_normal_(self.w1.weight, self.w1.in_features**-0.5)
        trunc_normal_(self.w3.weight, self.w3.in_features**-0.5)
        trunc_normal_(self.w2.weight, self.w2.in_features**-0.5)


class Block(nn.Module):
    """Pre-norm decoder block; its attention is `config.attention` built from `config.attention_config(layer)`."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = build_attention(config.attention, config.attention_config(layer))
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config.dim, config.ffn_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        h = x + self.attention(self.attention_norm(x))
        return h + self.feed_forward(self.ffn_norm(h))

    def reset_parameters(self) -> None:
        for module in (self.attention_norm, self.attention, self.ffn_norm, self.feed_forward):
            module.reset_parameters()


class DecoderLM(nn.Module):
    """The decoder of `config` (a ModelConfig, e.g. from `mta.models.get_preset`)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, layer) for layer in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = None if config.tie_embeddings else nn.Linear(config.dim, config.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """(Re-)initialise every parameter as the module docstring says."""
        std = self.config.dim**-0.5
        trunc_normal_(self.tok_embeddings.weight, std)
        if self.output is not None:
            trunc_normal_(self.output.weight, std)
        for layer in self.layers:
            layer.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, ignore_index: int = -100):
        """tokens: [B, N] long, N <= max_seq_len.

        Without `targets`: returns logits [B, N, V] (in the activations' dtype). With `targets` [B, N] long:
        returns the mean float32 cross-entropy over positions whose target is not `ignore_index` (a 0-dim
        tensor); going through forward keeps module hooks (FSDP, compile) in the loss path.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens: got shape {tuple(tokens.shape)}, expected [B, N]")
        if tokens.shape[1] > self.config.max_seq_len:
            raise ValueError(
                f"tokens: got {tokens.shape[1]} positions, expected <= max_seq_len={self.config.max_seq_len}"
            )
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h)
        h = self.norm(h)
        logits = F.linear(h, self.tok_embeddings.weight) if self.output is None else self.output(h)
        if targets is None:
            return logits
        if targets.shape != tokens.shape:
            raise ValueError(f"targets: got shape {tuple(targets.shape)}, expected tokens' {tuple(tokens.shape)}")
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index)

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Mean float32 cross-entropy of predicting `targets` [B, N] from `tokens` [B, N] (a 0-dim tensor)."""
        return self(tokens, targets, ignore_index)

    def num_parameters(self) -> int:
        """The number of parameters, each shared tensor (the tied embedding) counted once."""
        return sum(p.numel() for p in self.parameters())
