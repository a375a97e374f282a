"""A Llama-style decoder-only language model with a choice of attention (docs/spec.md §3).

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

from mta.layers import AttentionState, RMSNorm, build_attention
from mta.layers.init import trunc_normal_

from .cache import DecodeCache
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

    def forward(
        self, x: torch.Tensor, start: torch.Tensor | None = None, state: AttentionState | None = None
    ) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]; start (left padding) and state (decoding cache) as the attention's forward."""
        h = x + self.attention(self.attention_norm(x), start=start, state=state)
        return h + self.feed_forward(self.ffn_norm(h))

    def reset_parameters(self) -> None:
        for module in (self.attention_norm, self.attention, self.ffn_norm, self.feed_forward):
            module.reset_parameters()


class DecoderLM(nn.Module):
    """The decoder of `config` (a ModelConfig, e.g. from `mta.models.get_preset`), float32 parameters as built.

    forward: tokens [B, N] long -> logits [B, N, V] in the activations' dtype (V = vocab_size), or with targets
    [B, N] long the mean float32 cross-entropy (0-dim); `hidden` gives the final-normed states [B, N, D].
    """

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

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        ignore_index: int = -100,
        *,
        start: torch.Tensor | None = None,
        cache: DecodeCache | None = None,
    ):
        """tokens: [B, N] long; N (plus the positions cached) <= max_seq_len.

        Without `targets`: returns logits [B, N, V] (in the activations' dtype). With `targets` [B, N] long:
        returns the mean float32 cross-entropy over positions whose target is not `ignore_index` (a 0-dim
        tensor); going through forward keeps module hooks (FSDP, compile) in the loss path.
        start and cache (generation) as `hidden`.
        """
        logits = self.head(self.hidden(tokens, start=start, cache=cache))
        if targets is None:
            return logits
        if targets.shape != tokens.shape:
            raise ValueError(f"targets: got shape {tuple(targets.shape)}, expected tokens' {tuple(tokens.shape)}")
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index)

    def hidden(
        self, tokens: torch.Tensor, *, start: torch.Tensor | None = None, cache: DecodeCache | None = None
    ) -> torch.Tensor:
        """The final-normed hidden states [B, N, D] of tokens [B, N] long.

        start: [B] long, the number of left-padding tokens of each row (tokens[b, :start[b]] are padding, at
            least one real token per row): padding lies outside the sequence and RoPE positions count from the
            first real token, so each row computes what its tokens compute unpadded (mta.layers attention
            forward). With a cache, given with the prompt only (later calls may repeat it).
        cache: a DecodeCache (generation, docs/spec.md §6). Empty: tokens are the prompt, and the cache is filled from
            it. Otherwise tokens are the positions after the cached ones, and the cache is extended by them.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens: got shape {tuple(tokens.shape)}, expected [B, N]")
        self._check_token_ids(tokens)
        past = 0 if cache is None else cache.length
        if past + tokens.shape[1] > self.config.max_seq_len:
            cached = f" ({past} of them cached)" if past else ""
            raise ValueError(f"tokens: got {past + tokens.shape[1]} positions{cached}, expected <= "
                             f"max_seq_len={self.config.max_seq_len}")
        if cache is not None and len(cache.layers) != len(self.layers):
            raise ValueError(f"cache: holds {len(cache.layers)} layers, the model has {len(self.layers)}")
        start = self._start(tokens, start, cache)
        states = [None] * len(self.layers) if cache is None else cache.layers
        h = self.tok_embeddings(tokens)
        for layer, state in zip(self.layers, states):
            h = layer(h, start=start, state=state)
        return self.norm(h)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits [..., V] of hidden states [..., D] (the tied embedding or the output layer)."""
        return F.linear(h, self.tok_embeddings.weight) if self.output is None else self.output(h)

    def _check_token_ids(self, tokens: torch.Tensor) -> None:
        """tokens must be long or int ids in [0, vocab_size). The values are checked eagerly only (one device
        synchronisation): not while torch.compile traces nor under vmap (the stacked toy trainer), where the
        embedding's own index check remains."""
        if tokens.dtype not in (torch.long, torch.int32):
            raise ValueError(f"tokens: got dtype {tokens.dtype}, expected torch.long or torch.int32 ids")
        if tokens.numel() == 0 or torch.compiler.is_compiling() or torch._C._functorch.is_batchedtensor(tokens):
            return
        low, high = torch.aminmax(tokens)
        if bool((low < 0) | (high >= self.config.vocab_size)):
            raise ValueError(f"tokens: got ids in [{int(low)}, {int(high)}], expected ids in "
                             f"[0, vocab_size={self.config.vocab_size})")

    def _start(self, tokens: torch.Tensor, start: torch.Tensor | None, cache: DecodeCache | None):
        """The validated left padding of this call: None when no row is padded."""
        if cache is not None and cache.length:
            if start is not None and not torch.equal(start, _or_zeros(cache.start, start)):
                raise ValueError(f"start: got {start.tolist()}, but the cache was filled with "
                                 f"{_or_zeros(cache.start, start).tolist()}")
            return cache.start
        if start is not None:
            batch, length = tokens.shape
            if not isinstance(start, torch.Tensor) or start.shape != (batch,) or start.dtype != torch.long:
                raise ValueError(f"start: expected a long tensor of shape [B={batch}], got {_describe(start)}")
            if bool(((start < 0) | (start >= length)).any()):
                raise ValueError(f"start: expected values in [0, N={length}) (a real token per row), got {start.tolist()}")
            start = start.to(tokens.device) if bool(start.any()) else None
        if cache is not None:
            cache.start = start
        return start

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Mean float32 cross-entropy of predicting `targets` [B, N] from `tokens` [B, N] (a 0-dim tensor)."""
        return self(tokens, targets, ignore_index)

    def num_parameters(self) -> int:
        """The number of parameters, each shared tensor (the tied embedding) counted once."""
        return sum(p.numel() for p in self.parameters())


def _or_zeros(start: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if start is None else start.to(like.device)


def _describe(value: object) -> str:
    return f"{value.dtype} of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
