"""Causal self-attention layers: softmax (SDPA), Multi-Token Attention and talking heads (docs/spec.md §2).

Every layer maps x [B, N, D] to [B, N, D] through bias-free projections wq (D→H·d), wk, wv (D→H_kv·d) and
wo (H·d→D), with RoPE on queries and keys; `position_offset` is the position of x's first token.

Generation (docs/spec.md §6): `forward(x, start=..., state=...)` takes left-padded batches and an `AttentionState`
cache. Each kind supplies three parts: `attend` (causal attention over a whole sequence, any backend),
`attend_step` (the rows of new positions from the cache) and `finish` (per-token output steps and wo).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mta.ops import mta_attention
from mta.ops.decode import mta_attention_step, visible_keys

from .config import AttentionConfig, lambda_init
from .init import trunc_normal_
from .norm import RMSNorm
from .rope import rope_angles, rotate
from .state import AttentionState

# SDPA's cuDNN backend (the default on Hopper) builds and caches a graph per shape, so a key length that grows
# by one at every decoding step builds one per step (see ml-explore/mlx#2743): decoding steps use the others.
# So does the stacked toy trainer under torch.compile: torch 2.11 cannot trace vmap over the cuDNN op on an
# H200 ("expected Tensor() for op: torch.ops.aten._scaled_dot_product_cudnn_attention.default").
SDPA_BACKENDS_WITHOUT_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def reject_mta_options(kind: str, config: AttentionConfig) -> None:
    """Raise a ValueError naming the first MTA option set in `config` when attention `kind` has no such option."""
    options = config.mta_options_set()
    if options:
        raise ValueError(
            f"{options[0]}: got {getattr(config, options[0])!r}, but {kind} attention takes no MTA options "
            "(use kind 'mta')"
        )


class ProjectedAttention(nn.Module):
    """The part every attention kind shares: q/k/v/o projections, their initialisation, and `forward` with
    left padding and a decoding cache around the kind's `attend`, `attend_step` and `finish`.

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
        cos, sin = rope_angles(q, cfg.rope_theta, position_offset)
        return rotate(q, cos, sin), rotate(k, cos, sin), v

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """Per-head outputs [B, N, H, d] -> wo(concat heads) [B, N, D]."""
        return self.wo(out.flatten(2))

    def forward(
        self,
        x: torch.Tensor,
        position_offset: int | torch.Tensor = 0,
        *,
        start: torch.Tensor | None = None,
        state: AttentionState | None = None,
    ) -> torch.Tensor:
        """x: [B, N, D] -> [B, N, D].

        start: [B] long, the index of row b's first real token counted from the first position of the sequence
            (cached ones included); x[b, :start[b]] is left padding. Padding positions lie outside the sequence
            (docs/spec.md §1's "outside [0, N)": no logits, weights or values of theirs reach a real token) and RoPE
            counts positions from start[b], so a padded row computes what its tokens compute unpadded. Padding
            positions' own outputs are wo(0) = 0. None: no padding.
        state: decoding cache. Empty: x is the prompt; the state is filled from it. Otherwise x holds the N
            positions after the cached ones and the state is extended by them. The new positions must be real
            tokens (start[b] <= the cached length).
        With start or state, positions come from them, so position_offset must stay 0.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != self.config.dim:
            got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: got {got}, expected [B, N, D={self.config.dim}]")
        if not x.is_floating_point():
            raise ValueError(f"x: got dtype {x.dtype}, expected a floating-point tensor")
        if start is None and state is None:
            q, k, v = self.project(x, position_offset)
            return self.finish(self.attend(q, k, v))
        if not (isinstance(position_offset, int) and position_offset == 0):
            raise ValueError(f"position_offset: got {position_offset!r}; with start or state it must be 0")
        past = 0 if state is None else state.length
        q, k, v = self.project(x, past if start is None else past - start)
        if past:
            state.append(k, v)
            return self.finish(self.attend_step(q, state, start))
        if start is not None:  # padding positions hold zeros, so nothing of theirs is cached or attended to
            padding = (torch.arange(x.shape[1], device=x.device) < start.unsqueeze(1)).view(x.shape[0], 1, -1, 1)
            q, k, v = (t.masked_fill(padding, 0.0) for t in (q, k, v))
        heads = self.attend(q, k, v) if start is None else self._attend_padded(q, k, v, start)
        if state is not None:
            state.append(k, v)
            self.fill_state(state, q, start)
        return self.finish(heads)

    def _attend_padded(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """`attend` on each row's real positions (rows grouped by start), zeros at padding: [B, N, H', d']."""
        heads = None
        for first in start.unique().tolist():
            rows = (start == first).nonzero().squeeze(1)
            part = self.attend(*(t[rows, :, first:] for t in (q, k, v)))
            if heads is None:
                heads = part.new_zeros(q.shape[0], q.shape[2], *part.shape[2:])
            heads[rows, first:] = part
        return heads

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention over a whole sequence: q [B, H, N, d], k, v [B, H_kv, N, d] -> heads [B, N, H', d']."""
        raise NotImplementedError

    def attend_step(self, q: torch.Tensor, state: AttentionState, start: torch.Tensor | None) -> torch.Tensor:
        """The rows of the T new positions: q [B, H, T, d], `state` already holding their keys and values;
        updates the kind's extra state. Returns heads [B, T, H', d']."""
        raise NotImplementedError

    def fill_state(self, state: AttentionState, q: torch.Tensor, start: torch.Tensor | None) -> None:
        """After the prompt's keys and values are in `state`: the kind's extra state from its queries q
        [B, H, N, d] (zeros at padding). Only MTA needs any."""

    def finish(self, heads: torch.Tensor) -> torch.Tensor:
        """Per-token output steps of the kind, then wo: heads [B, N, H', d'] -> [B, N, D]."""
        return self.merge(heads)


class SoftmaxAttention(ProjectedAttention):
    """The Transformer baseline: causal softmax attention through `F.scaled_dot_product_attention`.

    Grouped-query heads are passed to SDPA as they are (enable_gqa). Takes no MTA options.
    """

    def __init__(self, config: AttentionConfig):
        reject_mta_options("transformer", config)
        super().__init__(config)
        self.reset_parameters()

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attention_dropout(), is_causal=True, enable_gqa=k.shape[1] != q.shape[1]
        )
        return out.transpose(1, 2)

    def attend_step(self, q: torch.Tensor, state: AttentionState, start: torch.Tensor | None) -> torch.Tensor:
        # one new query of an unpadded batch sees every cached key: no mask, so SDPA keeps its fused kernels
        mask = None if start is None and q.shape[2] == 1 else step_mask(q, state, start)
        with sdpa_kernel(SDPA_BACKENDS_WITHOUT_CUDNN):
            out = F.scaled_dot_product_attention(q, state.keys, state.values, attn_mask=mask,
                                                 enable_gqa=state.keys.shape[1] != q.shape[1])
        return out.transpose(1, 2)


class MultiTokenAttention(ProjectedAttention):
    """Multi-Token Attention (arXiv 2504.00927), the layer of docs/spec.md §2 around the op of docs/spec.md §1.

    Parameters beyond the projections, each present only when its option is on:
      kernel_pre, kernel_post: [H, c_q, c_k] q–k convolutions, identity-initialised (θ[h, c_q-1, (c_k-1)/2] = 1).
      head_mix_pre, head_mix_post: [G, c, c] head mixers, W[g, i, o] from head g·c+i to head g·c+o, identity.
      group_norm: RMSNorm(d), one d-vector shared by all heads (not torch.nn.GroupNorm).
      gate: Linear(d, 1) with bias, shared by all heads; weight truncated normal std D^-1/2, bias 0.
    After the op: per-head output → group norm → ×(1 - λ(l)) if depth_scaling → gate → concat → wo.
    With every kernel and mixer at identity and no norm/gate it computes plain causal softmax attention.
    forward (ProjectedAttention's): x [B, N, D] floating point, in the parameters' dtype (float32 as built) ->
    [B, N, D] in that dtype; q [B, H, N, d], k and v [B, H_kv, N, d] go through `mta.ops.mta_attention`.
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

    def options(self) -> dict[str, torch.Tensor | None]:
        """The op's keyword arguments: kernel_pre, kernel_post, head_mix_pre, head_mix_post."""
        return dict(kernel_pre=self.kernel_pre, kernel_post=self.kernel_post, head_mix_pre=self.head_mix_pre,
                    head_mix_post=self.head_mix_post)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = mta_attention(q, k, v, **self.options(), dropout_p=self.attention_dropout(), backend=self.config.backend)
        return out.transpose(1, 2)

    def attend_step(self, q: torch.Tensor, state: AttentionState, start: torch.Tensor | None) -> torch.Tensor:
        result = mta_attention_step(q, state.keys, state.values, q_past=state.queries, weights_past=state.weights,
                                    start=start, **self.options())
        state.queries, state.weights = result.queries, result.weights
        return result.out.transpose(1, 2)

    def fill_state(self, state: AttentionState, q: torch.Tensor, start: torch.Tensor | None) -> None:
        """The last c_q - 1 queries, and the post-softmax conv's input rows of the last c_q' - 1 positions
        (recomputed by one step over the prompt's last rows: O(c_q · N))."""
        pre_rows = 0 if self.kernel_pre is None else self.kernel_pre.shape[1] - 1
        post_rows = 0 if self.kernel_post is None else self.kernel_post.shape[1] - 1
        if not (pre_rows or post_rows):
            return
        first = q.shape[2] - max(1, min(post_rows, q.shape[2]))  # the rows recomputed: first … N-1
        q_past = F.pad(q[:, :, max(0, first - pre_rows) : first], (0, 0, max(0, pre_rows - first), 0))
        weights_past = q.new_zeros(q.shape[0], q.shape[1], post_rows, first)  # rows above `first`: not needed
        result = mta_attention_step(q[:, :, first:], state.keys, state.values, q_past=q_past if pre_rows else None,
                                    weights_past=weights_past if post_rows else None, start=start, **self.options())
        state.queries, state.weights = result.queries, result.weights

    def finish(self, out: torch.Tensor) -> torch.Tensor:
        if self.group_norm is not None:
            out = self.group_norm(out)
        if self.depth_scale is not None:
            out = out * self.depth_scale
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(out))  # [B, N, H, 1]: one scalar per (token, head)
        return self.merge(out)


class TalkingHeadsAttention(MultiTokenAttention):
    """Talking-heads attention (Shazeer et al. 2020, arXiv 2003.02436) as the MTA paper's baseline (docs/spec.md §3).

    Full H×H head mixing before and after softmax (one group), no convolution, no norm, no gate: 2·H² parameters
    beyond the projections. `config` must set no MTA option; the mixing is implied by the kind.
    """

    def __init__(self, config: AttentionConfig):
        reject_mta_options("talking_heads", config)
        super().__init__(replace(config, pre_mix_group=config.n_heads, post_mix_group=config.n_heads))


def step_mask(q: torch.Tensor, state: AttentionState, start: torch.Tensor | None) -> torch.Tensor:
    """Bool [B, 1, T, L] ([1, 1, T, L] without padding): the keys each of the T new queries may see (causal,
    no left padding)."""
    total = state.length
    return visible_keys(total - q.shape[2], q.shape[2], total, start, q.device)


def _kernel(n_heads: int, size: tuple[int, int] | None) -> nn.Parameter | None:
    """An uninitialised [H, c_q, c_k] kernel for size (c_q, c_k), or None when the convolution is off."""
    return None if size is None else nn.Parameter(torch.empty(n_heads, *size))


def _mixer(n_heads: int, group: int | None) -> nn.Parameter | None:
    """An uninitialised [H/c, c, c] mixer for groups of c = `group` heads, or None when mixing is off."""
    return None if group is None else nn.Parameter(torch.empty(n_heads // group, group, group))
