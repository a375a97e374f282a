"""The four tensor ops the Triton backend's glue is built from, as plain differentiable PyTorch.

    banded(q, kw, vw, band_scores, taps, group, skip) -> (out, lse)   banded causal attention of
                                                    qw = query_window(q, ...): scores overridden on a band of
                                                    diagonals, another band left out of out = P · vw
    token_conv(x, weight, dtype) -> xw              depthwise convolutions along tokens, heads in groups
    diagonal_dots(q, k, width) -> dots              q_m · k_{m-e} for the key e = 0 … width-1 tokens back
    band(q, kw, band_scores, lse, width, taps, group) -> band   banded's probabilities P[r, r-t] for t < width

These versions are the oracles (and the float64 path) of the fused ones: `function.banded_flash_attention`,
`token_ops` and `band`. Every shape below is per batch element: [B, H, N, ·], heads in groups of `group`
consecutive heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..reference import causal_future, compute_dtype


@dataclass(frozen=True)
class Primitives:
    """One implementation of each op (signatures in the module doc)."""

    banded: Callable
    token_conv: Callable
    diagonal_dots: Callable
    band: Callable


def row_window(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """[B, H, N, F] -> [B, H, N, before+after+1, F]: window[i, e] = x[i-before+e], zeros outside [0, N)."""
    padded = F.pad(x, (0, 0, before, after))
    return padded.unfold(2, before + after + 1, 1).transpose(-1, -2)


def grouped(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, H, ...] -> [B, H/size, size, ...]: heads in groups of `size` consecutive heads."""
    return x.reshape(x.shape[0], x.shape[1] // size, size, *x.shape[2:])


def query_window(q: torch.Tensor, taps: int, group: int) -> torch.Tensor:
    """q [B, H, N, d] -> qw [B, H, N, group·taps·d], the same for every head h of a group:
    qw[h, r, (i, a, e)] = q[first head of h's group + i, r - (taps-1) + a, e], zero before the first token."""
    if taps == 1 and group == 1:
        return q
    batch, n_heads, seq_len, head_dim = q.shape
    window = grouped(row_window(q, taps - 1, 0), group).transpose(2, 3)  # [B, G, N, i, a, d]
    shape = (batch, n_heads // group, group, seq_len, group, taps, head_dim)
    return window.unsqueeze(2).expand(shape).reshape(batch, n_heads, seq_len, -1)


def band_matrix(band: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[B, H, N, W] band -> [B, H, N, N] matrix M with M[i, i-t] = band[i, t] for 0 <= t < W, i-t >= 0, else 0."""
    rows = torch.arange(seq_len, device=band.device)
    diag = rows.unsqueeze(1) - rows.unsqueeze(0)
    inside = (diag >= 0) & (diag < band.shape[-1])
    index = diag.clamp(0, band.shape[-1] - 1).expand(*band.shape[:2], seq_len, seq_len)
    return torch.where(inside, band.gather(-1, index), band.new_zeros(()))


def banded_attention_torch(
    q: torch.Tensor, kw: torch.Tensor, vw: torch.Tensor, band_scores: torch.Tensor | None, taps: int = 1,
    group: int = 1, skip: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialised banded causal attention, the oracle of the Triton kernel:

        scores[i, j] = band_scores[i, i-j] if 0 <= i-j < W else qw_i · kw_j,   causal softmax over j,
        lse_i = logsumexp_{j <= i} scores[i, j],   out_i = Σ_{j <= i-skip} P[i, j] vw_j,

    with qw = query_window(q, taps, group): the band's scores replace the product (which is never added to them,
    so a NaN or Inf there is discarded), and the diagonals i-j < skip are left out of out but not of the softmax.
    q: [B, H, N, d] (kw's dtype or float32); kw: [B, H, N, group·taps·d]; vw: [B, H, N, Dv]; band_scores:
    [B, H, N, W] or None (W = 0); skip >= 0. Returns out [B, H, N, Dv] in vw's dtype and lse [B, H, N] (float32 for
    half-precision inputs).
    """
    qw = query_window(q, taps, group)
    dtype = compute_dtype(kw.dtype)
    seq_len = qw.shape[2]
    rows = torch.arange(seq_len, device=qw.device)
    diag = rows.unsqueeze(1) - rows.unsqueeze(0)
    scores = torch.matmul(qw.to(dtype), kw.to(dtype).transpose(-1, -2))
    if band_scores is not None and band_scores.shape[-1] > 0:
        on_band = (diag >= 0) & (diag < band_scores.shape[-1])
        scores = torch.where(on_band, band_matrix(band_scores.to(dtype), seq_len), scores)
    scores = scores.masked_fill(causal_future(seq_len, seq_len, 0, qw.device), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse.unsqueeze(-1))
    if skip > 0:
        probs = probs.masked_fill(diag < skip, 0.0)
    out = torch.matmul(probs, vw.to(dtype))
    return out.to(vw.dtype), lse


def token_conv_torch(x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Depthwise cross-correlations along tokens, centred, mixing the heads of a group:

        out[h, r, (i, a, e)] = Σ_t weight[h, i, a, t] · x[first head of h's group + i, r + t - (c_k-1)/2, e]

    x: [B, H, N, d]; weight: [H, g, c_q, c_k] (c_k odd); zeros outside [0, N). Returns [B, H, N, g·c_q·d] in
    `dtype`, computed in float32 for half-precision x or dtype.
    """
    batch, n_heads, seq_len, _ = x.shape
    size, c_q, c_k = weight.shape[1:]
    work = compute_dtype(torch.promote_types(x.dtype, dtype))
    windows = grouped(row_window(x.to(work), (c_k - 1) // 2, (c_k - 1) // 2), size)  # [B, G, i, N, t, d]
    out = torch.einsum("bginte,goiat->bgoniae", windows, grouped(weight.to(work).unsqueeze(0), size)[0])
    return out.reshape(batch, n_heads, seq_len, -1).to(dtype)


def diagonal_dots_torch(q: torch.Tensor, k: torch.Tensor, width: int) -> torch.Tensor:
    """dots [B, H, N, width]: dots[m, e] = q[m] · k[m-e] for e = 0 … width-1 (the key e tokens back), zero
    before the first key: no key after its query is read.

    q, k: [B, H, N, d]. Computed (and returned) in float32 for half-precision inputs. Slices are views, so
    autograd keeps no copies.
    """
    dtype = compute_dtype(q.dtype)
    seq_len = q.shape[2]
    columns = [
        F.pad((q[:, :, e:].to(dtype) * k[:, :, : seq_len - e].to(dtype)).sum(-1), (e, 0))
        if e < seq_len else q.new_zeros(q.shape[:3], dtype=dtype)
        for e in range(width)
    ]
    return torch.stack(columns, dim=-1)


def probability_band_torch(
    q: torch.Tensor, kw: torch.Tensor, band_scores: torch.Tensor | None, lse: torch.Tensor, width: int, taps: int,
    group: int,
) -> torch.Tensor:
    """band [B, H, N, width] with band[r, t] = P[r, r-t] (zero for r < t), from the kernel's lse: the score is
    band_scores[r, t] for t < W, else qw_r · kw_{r-t} (the product is not computed where the band replaces it).

    q, kw, band_scores, taps, group: the kernel's operands (`banded_attention_torch`); lse: [B, H, N].
    Checkpointed: the backward recomputes it, so the query window and float32 copies are never kept.
    """
    return checkpoint(_probability_band, q, kw, band_scores, lse, width, taps, group, use_reentrant=False)


def _probability_band(q, kw, band_scores, lse, width, taps, group):
    qw = query_window(q, taps, group)
    seq_len = qw.shape[2]
    replaced = 0 if band_scores is None else band_scores.shape[-1]
    columns = []
    for t in range(width):
        if t >= seq_len:
            columns.append(lse.new_zeros(lse.shape))
            continue
        if t < replaced:
            logit = band_scores[:, :, t:, t].to(lse.dtype)
        else:
            logit = (qw[:, :, t:].to(lse.dtype) * kw[:, :, : seq_len - t].to(lse.dtype)).sum(-1)
        logit = F.pad(logit, (t, 0), value=float("-inf"))
        columns.append(torch.exp(logit - lse))
    return torch.stack(columns, dim=-1)


TORCH_PRIMITIVES = Primitives(banded_attention_torch, token_conv_torch, diagonal_dots_torch, probability_band_torch)
