"""Causal self-attention layers: softmax (SDPA), Multi-Token Attention and talking heads (shared/mta-spec.md §2).

Every layer maps x [B, N, D] to [B, N, D] through bias-free projections wq (D→H·d), wk, wv (D→H_kv·d) and
wo (H·d→D), with RoPE on queries and keys; `position_offset` is the position of x's first token.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from mta.ops import mta_attention

from .config import AttentionConfig, lambda_init
from .init import trunc_normal_
from .norm import RMSNorm
from .rope import apply_rope


def reject_mta_options(kind: str, config: AttentionConfig) -> None:
    """Raise a ValueError naming the first MTA option set in `config` when attention `kind` has no such option."""
    options = config.mta_options_set()
    if options:
        raise ValueError(
            f"{options[0]}: got {getattr(config, options[0])!r}, but {kind} attention takes no MTA options "
            "(use kind 'mta')"
        )


class ProjectedAttention(nn.Module):
    """The part every attention kind shares: q/k/v/o projections and their initialisation.

    Weights are truncated normal with std D^-1/2 at ±3σ (the official code's default, no depth factor).
    """

    def __init__(self, config: AttentionConfig):
        super().__init__()
        self.config = config
        dim, heads, kv_heads, head_dim = config.dim, config.n_heads, config.n_kv_heads, config.head_dim
        self.wq = nn.Linear(dim, heads * head_dim, bias=False)
        self.wk = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.wv = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.wo = nn.Linear(heads * head_dim, dim, bias=False)

    def reset_parameters(self) -> None:
        std = self.config.dim**-0.5
        for linear in (self.wq, self.wk, self.wv, self.wo):
            trunc_normal_(linear.weight, std)

    def attention_dropout(self) -> float:
        """The dropout probability on attention weights: config.dropout in training, 0 in evaluation."""
        return self.config.dropout if self.training else 0.0

    def project(self, x: torch.Tensor, position_offset: int | torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x [B, N, D] -> q [B, H, N, d], k and v [B, H_kv, N, d], RoPE applied to q and k."""
        batch, seq_len, _ = x.shape
        cfg = self.config
        q = self.wq(x).view(batch, seq_len, cfg.n_heads, cfg.head_dim).transpose(1, 2)
        k = self.wk(x).view(batch, seq_len, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.wv(x).view(batch, seq_len, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        q = apply_rope(q, cfg.rope_theta, position_offset)
        k = apply_rope(k, cfg.rope_theta, position_offset)
        return q, k, v

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """Per-head outputs [B, N, H, d] -> wo(concat heads) [B, N, D]."""
        return self.wo(out.flatten(2))


class SoftmaxAttention(ProjectedAttention):
    """The Transformer baseline: causal softmax attention through `F.scaled_dot_product_attention`.

    Grouped-query heads are passed to SDPA as they are (enable_gqa). Takes no MTA options.
    """

    def __init__(self, config: AttentionConfig):
        reject_mta_options("transformer", config)
        super().__init__(config)
        self.reset_parameters()

    def forward(self, x: torch.Tensor, position_offset: int | torch.Tensor = 0) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        q, k, v = self.project(x, position_offset)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attention_dropout(), is_causal=True, enable_gqa=k.shape[1] != q.shape[1]
        )
        return self.merge(out.transpose(1, 2))


class MultiTokenAttention(ProjectedAttention):
    """Multi-Token Attention (arXiv 2504.00927), the layer of spec §2 around the op of spec §1.

    Parameters beyond the projections, each present only when its option is on:
      kernel_pre, kernel_post: [H, c_q, c_k] q–k convolutions, identity-initialised (θ[h, c_q-1, (c_k-1)/2] = 1).
      head_mix_pre, head_mix_post: [G, c, c] head mixers, W[g, i, o] from head g·c+i to head g·c+o, identity.
      group_norm: RMSNorm(d), one d-vector shared by all heads (not torch.nn.GroupNorm).
      gate: Linear(d, 1) with bias, shared by all heads; weight truncated normal std D^-1/2, bias 0.
    After the op: per-head output → group norm → ×(1 - λ(l)) if depth_scaling → gate → concat → wo.
    With every kernel and mixer at identity and no norm/gate it computes plain causal softmax attention.
    """

    def __init__(self, config: AttentionConfig):
        super().__init__(config)
        self.kernel_pre = _kernel(config.n_heads, config.pre_kernel)
        self.kernel_post = _kernel(config.n_heads, config.post_kernel)
        self.head_mix_pre = _mixer(config.n_heads, config.pre_mix_group)
        self.head_mix_post = _mixer(config.n_heads, config.post_mix_group)
        self.group_norm = RMSNorm(config.head_dim) if config.group_norm else None
        self.depth_scale = 1.0 - lambda_init(config.layer_index) if config.depth_scaling else None
        self.gate = nn.Linear(config.head_dim, 1) if config.gate else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Projections and gate weight: truncated normal std D^-1/2; kernels and mixers: identity; gate bias: 0."""
        super().reset_parameters()
        with torch.no_grad():
            for kernel in (self.kernel_pre, self.kernel_post):
                if kernel is not None:
                    kernel.zero_()
                    kernel[:, -1, (kernel.shape[2] - 1) // 2] = 1.0
            for mixer in (self.head_mix_pre, self.head_mix_post):
                if mixer is not None:
                    mixer.zero_()
                    mixer.diagonal(dim1=1, dim2=2).fill_(1.0)
        if self.group_norm is not None:
            self.group_norm.reset_parameters()
        if self.gate is not None:
            trunc_normal_(self.gate.weight, self.config.dim**-0.5)
            nn.init.zeros_(self.gate.bias)

    def forward(self, x: torch.Tensor, position_offset: int | torch.Tensor = 0) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D]."""
        q, k, v = self.project(x, position_offset)
        out = mta_attention(
            q,
            k,
            v,
            kernel_pre=self.kernel_pre,
            kernel_post=self.kernel_post,
            head_mix_pre=self.head_mix_pre,
            head_mix_post=self.head_mix_post,
            dropout_p=self.attention_dropout(),
            backend=self.config.backend,
        ).transpose(1, 2)  # [B, N, H, d]
        if self.group_norm is not None:
            out = self.group_norm(out)
        if self.depth_scale is not None:
            out = out * self.depth_scale
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(out))  # [B, N, H, 1]: one scalar per (token, head)
        return self.merge(out)


class TalkingHeadsAttention(MultiTokenAttention):
    """Talking-heads attention (Shazeer et al. 2020, arXiv 2003.02436) as the MTA paper's baseline (spec §3).

    Full H×H head mixing before and after softmax (one group), no convolution, no norm, no gate: 2·H² parameters
    beyond the projections. `config` must set no MTA option; the mixing is implied by the kind.
    """

    def __init__(self, config: AttentionConfig):
        reject_mta_options("talking_heads", config)
        super().__init__(replace(config, pre_mix_group=config.n_heads, post_mix_group=config.n_heads))


def _kernel(n_heads: int, size: tuple[int, int] | None) -> nn.Parameter | None:
    """An uninitialised [H, c_q, c_k] kernel for size (c_q, c_k), or None when the convolution is off."""
    return None if size is None else nn.Parameter(torch.empty(n_heads, *size))


def _mixer(n_heads: int, group: int | None) -> nn.Parameter | None:
    """An uninitialised [H/c, c, c] mixer for groups of c = `group` heads, or None when mixing is off."""
    return None if group is None else nn.Parameter(torch.empty(n_heads // group, group, group))
