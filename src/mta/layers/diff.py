"""Differential attention (DIFF Transformer, Ye et al., arXiv 2410.05258), the MTA paper's baseline (docs/spec.md §3).

Head layout, chosen so that the paper's parameter counts come out exactly (880M: +576 parameters per layer
over the Transformer): with H = n_heads and d = head_dim = D/H from the config, DIFF has H/2 heads. Each head i
owns two query/key halves of width d (channels of wq/wk at half indices 2i and 2i+1, as in the official DIFF
code) and one value of width 2d. So wq, wk, wv, wo have exactly the Transformer's shapes, and the extra
parameters are λq1, λk1, λq2, λk2 ∈ R^d plus one RMSNorm weight of width 2d: 6·d per layer.

    A_i = softmax(Q_i1 K_i1ᵀ / √d) - λ · softmax(Q_i2 K_i2ᵀ / √d)          (causal)
    λ   = exp(λq1·λk1) - exp(λq2·λk2) + λ_init,  λ_init = 0.8 - 0.6·exp(-0.3·l)
    O_i = (1 - λ_init) · RMSNorm(A_i V_i)                                   (weight shared by heads, eps 1e-5)

A_i V_i is computed as two SDPA calls, o1 - λ·o2, exact because both maps read the same V_i. Attention dropout
(training only) is SDPA's: it drops entries of each softmax map independently, where the official DIFF code
drops entries of the combined map A_i once.
Grouped-query heads: DIFF kv head j holds k halves 2j, 2j+1; query half s of head i reads key half s of kv head
i // (H/H_kv), so n_kv_heads must be even too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel

from .attention import SDPA_BACKENDS_WITHOUT_CUDNN, ProjectedAttention, reject_mta_options, step_mask
from .config import AttentionConfig, lambda_init
from .norm import RMSNorm
from .state import AttentionState


class DiffAttention(ProjectedAttention):
    """DIFF attention with H/2 heads of query/key width d and value width 2d (see the module docstring).

    Parameters: wq, wk, wv, wo (as the Transformer's), lambda_q1, lambda_k1, lambda_q2, lambda_k2 [d]
    (normal(0, 0.1) init), head_norm RMSNorm(2d) shared by the heads. Takes no MTA options.
    """

    def __init__(self, config: AttentionConfig):
        reject_mta_options("diff", config)
        for name in ("n_heads", "n_kv_heads"):
            if getattr(config, name) % 2:
                raise ValueError(f"{name}: got {getattr(config, name)}, expected an even number for DIFF attention")
        super().__init__(config)
        self.lambda_init = lambda_init(config.layer_index)
        self.lambda_q1 = nn.Parameter(torch.empty(config.head_dim))
        self.lambda_k1 = nn.Parameter(torch.empty(config.head_dim))
        self.lambda_q2 = nn.Parameter(torch.empty(config.head_dim))
        self.lambda_k2 = nn.Parameter(torch.empty(config.head_dim))
        self.head_norm = RMSNorm(2 * config.head_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for vector in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
            nn.init.normal_(vector, mean=0.0, std=0.1)
        self.head_norm.reset_parameters()

    def differential_lambda(self) -> torch.Tensor:
        """λ = exp(λq1·λk1) - exp(λq2·λk2) + λ_init, a 0-dim tensor in the parameters' dtype."""
        first = torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
        second = torch.exp(torch.dot(self.lambda_q2, self.lambda_k2))
        return first - second + self.lambda_init

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [B, H, N, d], k, v [B, H_kv, N, d] -> o1 - λ·o2 [B, N, H/2, 2d]."""
        return self._differential(q, k, v, dict(is_causal=True, dropout_p=self.attention_dropout()))

    def attend_step(self, q: torch.Tensor, state: AttentionState, start: torch.Tensor | None) -> torch.Tensor:
        with sdpa_kernel(SDPA_BACKENDS_WITHOUT_CUDNN):
            return self._differential(q, state.keys, state.values, dict(attn_mask=step_mask(q, state, start)))

    def finish(self, heads: torch.Tensor) -> torch.Tensor:
        return self.merge(self.head_norm(heads) * (1.0 - self.lambda_init))

    def _differential(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sdpa: dict) -> torch.Tensor:
        """Both softmax maps through SDPA (keyword arguments `sdpa`), combined: [B, N_q, H/2, 2d]."""
        batch, _, keys, _ = k.shape
        # Value heads of width 2d: kv head j's value is the concatenation of channels of halves 2j and 2j+1.
        v = v.transpose(1, 2).reshape(batch, keys, self.config.n_kv_heads // 2, 2 * self.config.head_dim)
        v = v.transpose(1, 2)  # [B, H_kv/2, N, 2d]
        gqa = self.config.n_kv_heads != self.config.n_heads
        first, second = (
            F.scaled_dot_product_attention(q[:, half::2], k[:, half::2], v, enable_gqa=gqa, **sdpa) for half in (0, 1)
        )  # each [B, H/2, N_q, 2d]
        out = first - self.differential_lambda().to(first.dtype) * second
        return out.transpose(1, 2)
