"""Multi-Token Attention as one banded causal attention plus O(N) PyTorch glue (spec §1).

Every MTA option is linear either in the logits (pre-softmax conv and head mixing) or in the probabilities
(post-softmax conv and head mixing), so the whole op reduces to one generic kernel

    banded(qw, kw, vw, bias) -> (out, lse),
    scores[i, j] = qw_i · kw_j + bias[i, i-j] (0 <= i-j < W), causal softmax over j, out = P · vw,

and cheap per-token tensors around it that autograd differentiates. Per head, with scale s:

Pre-softmax conv θ [c_q, c_k], P0 = c_q-1, hk = (c_k-1)/2 (shared/kernel-notes.md (a)):
    Q̃_i = concat_a q[i-P0+a],  K̃_j = concat_a Σ_b θ[a,b] k[j-hk+b],  s Q̃_i·K̃_j = conv of the unmasked logits.
    Mask0 removes the terms whose source key lies after their source query; for j <= i those sit on the
    diagonals t = i-j < W = hk + P0 only, so bias = -Corr with
    Corr[i, t] = s Σ_{a,b: δ>=1} θ[a,b] q[i-P0+a]·k[i-P0+a+δ],  δ = b - a - t - hk + P0.
Pre-softmax mixing W[g, i, o]: qw_o = concat_i W[i,o] s Q̃_i, kw_o = concat_i K̃_i, bias_o = Σ_i W[i,o] bias_i.

Post-softmax conv θ' [c_q', c_k'], P1 = c_q'-1, h' = (c_k'-1)/2 (kernel-notes (b)):
    Ṽ_a[c] = Σ_b θ'[a,b] v[c+h'-b],  O[i] = Σ_a (P Ṽ_a)[i-P1+a] - C[i],
    C[i] = Σ_{u=1..h'} v[i+u] Σ_{a,b} θ'[a,b] P[i-P1+a, i+u-h'+b]   (the entries the final mask removes),
    which reads P only on the band P[r, r-t'], t' < h', recomputed here from the kernel's lse.
Post-softmax mixing W': O_o = Σ_i W'[i,o] (masked conv_i(P_i)) v_o, so head i's kernel call takes the values
of every output head o of its group, vw_i = concat_{o,a} Ṽ^{(i)}_{a,o}, and the glue recombines with W'.

An absent kernel is the 1×1 identity and an absent mixer the identity over groups of one head.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..reference import causal_future, compute_dtype, expand_kv

INT32_MAX = 2**31 - 1
# banded(qw, kw, vw, bias) -> (out, lse), see `banded_attention_torch`
Banded = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], Tuple[torch.Tensor, torch.Tensor]]


def band_matrix(bias: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[B, H, N, W] band -> [B, H, N, N] matrix M with M[i, i-t] = bias[i, t] for 0 <= t < W, i-t >= 0, else 0."""
    rows = torch.arange(seq_len, device=bias.device)
    diag = rows.unsqueeze(1) - rows.unsqueeze(0)
    inside = (diag >= 0) & (diag < bias.shape[-1])
    index = diag.clamp(0, bias.shape[-1] - 1).expand(*bias.shape[:2], seq_len, seq_len)
    return torch.where(inside, bias.gather(-1, index), bias.new_zeros(()))


def banded_attention_torch(
    qw: torch.Tensor, kw: torch.Tensor, vw: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialised banded causal attention, the oracle for the Triton kernel (same contract).

    qw, kw: [B, H, N, Dqk]; vw: [B, H, N, Dv]; bias: [B, H, N, W] or None.
    Returns out [B, H, N, Dv] in vw's dtype and lse [B, H, N] (float32 for half-precision inputs).
    """
    dtype = compute_dtype(qw.dtype)
    seq_len = qw.shape[2]
    scores = torch.matmul(qw.to(dtype), kw.to(dtype).transpose(-1, -2))
    if bias is not None and bias.shape[-1] > 0:
        scores = scores + band_matrix(bias.to(dtype), seq_len)
    scores = scores.masked_fill(causal_future(seq_len, seq_len, 0, qw.device), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), vw.to(dtype))
    return out.to(vw.dtype), lse


def row_window(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """[B, H, N, F] -> [B, H, N, before+after+1, F]: window[i, e] = x[i-before+e], zeros outside [0, N)."""
    padded = F.pad(x, (0, 0, before, after))
    return padded.unfold(2, before + after + 1, 1).transpose(-1, -2)


def shift_rows(x: torch.Tensor, shift: int) -> torch.Tensor:
    """[B, H, N, F] -> y with y[i] = x[i-shift], zeros where i-shift lies outside [0, N) (shift of either sign)."""
    seq_len = x.shape[2]
    if shift >= 0:
        return F.pad(x, (0, 0, shift, 0))[:, :, :seq_len]
    return F.pad(x, (0, 0, 0, -shift))[:, :, -shift:]


def centred_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise 1-D cross-correlation along tokens, centred: a cheap conv1d instead of a c_k-wide window.

    x: [B, C, N] (channels first); kernel: [C, c_out, c_k], c_k odd, c_out outputs per channel.
    Returns [B, C, c_out, N] with out[c, a, j] = Σ_b kernel[c, a, b] · x[c, j-(c_k-1)/2+b], zeros outside [0, N).
    """
    channels, c_out, c_k = kernel.shape
    weight = kernel.reshape(channels * c_out, 1, c_k)
    # CUDA's depthwise convolution indexes with 32 bits: split the batch so that each output fits.
    per_sample = channels * c_out * x.shape[-1]
    step = max(1, INT32_MAX // max(per_sample, 1))
    out = torch.cat([F.conv1d(x[b : b + step], weight, padding=(c_k - 1) // 2, groups=channels)
                     for b in range(0, x.shape[0], step)])
    return out.reshape(x.shape[0], channels, c_out, x.shape[-1])


def gather_taps(kernel: torch.Tensor, tap: torch.Tensor) -> torch.Tensor:
    """kernel [H, c_q, c_k], tap int [c_q, X, Y] (a column index per query row a) -> [H, c_q, X, Y],
    out[h, a, x, y] = kernel[h, a, tap[a, x, y]], zero where the tap falls outside [0, c_k)."""
    c_q, c_k = kernel.shape[1:]
    rows = torch.arange(c_q, device=kernel.device).view(c_q, 1, 1).expand_as(tap)
    taps = kernel[:, rows, tap.clamp(0, c_k - 1)]
    return taps * ((tap >= 0) & (tap < c_k)).to(kernel.dtype)


def dot_ahead(q: torch.Tensor, k: torch.Tensor, delta: int) -> torch.Tensor:
    """[B, H, N]: q[m]·k[m+delta], zero past the last key. Slices are views, so autograd keeps no copies."""
    seq_len = q.shape[2]
    if delta >= seq_len:
        return q.new_zeros(q.shape[:3])
    return F.pad((q[:, :, : seq_len - delta] * k[:, :, delta:]).sum(-1), (0, delta))


def mask0_correction(q: torch.Tensor, k: torch.Tensor, kernel: torch.Tensor, scale: float) -> torch.Tensor:
    """Corr [B, H, N, W], W = hk + P0: the pre-conv terms that Mask0 removes, on diagonal t = i-j (module doc).

    q, k: [B, H, N, d]; kernel: [H, c_q, c_k].
    """
    c_q, c_k = kernel.shape[1:]
    p0, hk = c_q - 1, (c_k - 1) // 2
    width = hk + p0
    future = torch.stack([dot_ahead(q, k, delta) for delta in range(1, width + 1)], dim=-1)  # [B, H, N, δ-1]
    device = kernel.device
    a = torch.arange(c_q, device=device).view(c_q, 1, 1)
    t = torch.arange(width, device=device).view(1, width, 1)
    delta = torch.arange(1, width + 1, device=device).view(1, 1, width)
    taps = gather_taps(kernel, (delta + a + t + hk - p0).expand(c_q, width, width))  # [H, a, t, δ]
    return scale * torch.einsum("bhiae,hate->bhit", row_window(future, p0, 0), taps)


def grouped(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, H, ...] -> [B, H/size, size, ...]: heads in groups of `size` consecutive heads."""
    return x.reshape(x.shape[0], x.shape[1] // size, size, *x.shape[2:])


def pre_operands(
    q: torch.Tensor, k: torch.Tensor, kernel: torch.Tensor, mixer: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Kernel operands of the pre-softmax conv and mixing (module doc).

    q, k: [B, H, N, d]; kernel: [H, c_q, c_k]; mixer: [G, g, g].
    Returns qw, kw [B, H, N, g·c_q·d] (input head i, then tap a, then d) and bias [B, H, N, W] (None if W = 0).
    """
    batch, n_heads, seq_len, head_dim = q.shape
    c_q, c_k = kernel.shape[1:]
    size = mixer.shape[1]
    q_tilde = row_window(q, c_q - 1, 0).flatten(-2)  # [B, H, N, c_q·d]
    per_channel = kernel.unsqueeze(1).expand(-1, head_dim, -1, -1).reshape(n_heads * head_dim, c_q, c_k)
    k_tilde = centred_conv(k.transpose(2, 3).reshape(batch, n_heads * head_dim, seq_len), per_channel)
    k_tilde = k_tilde.reshape(batch, n_heads, head_dim, c_q, seq_len).permute(0, 1, 4, 3, 2).flatten(-2)
    qw = torch.einsum("bginf,gio->bgonif", grouped(q_tilde, size), mixer) * scale
    kw = grouped(k_tilde, size).transpose(2, 3).unsqueeze(2).expand(-1, -1, size, -1, -1, -1)
    qw, kw = (x.reshape(batch, n_heads, seq_len, -1) for x in (qw, kw))
    if (c_k - 1) // 2 + c_q - 1 == 0:
        return qw, kw, None
    corr = grouped(mask0_correction(q, k, kernel, scale), size)
    bias = -torch.einsum("bgint,gio->bgont", corr, mixer).reshape(batch, n_heads, seq_len, -1)
    return qw, kw, bias


def post_values(v: torch.Tensor, kernel: torch.Tensor, mixer: torch.Tensor) -> torch.Tensor:
    """vw [B, H, N, g·c_q'·d]: for input head i, Ṽ^{(i)}_{a,o} over output heads o of its group, then taps a.

    v: [B, H, N, d]; kernel: [H, c_q', c_k']; mixer: [G, g, g] (only its group size is used here).
    """
    batch, n_heads, seq_len, head_dim = v.shape
    c_q, c_k = kernel.shape[1:]
    size = mixer.shape[1]
    groups = n_heads // size
    # Ṽ_a[c] reads v[c+h'-b]: a centred correlation with the columns flipped. Channels (group, o, d) of v each
    # get the g·c_q' outputs (i, a) of their group's input heads.
    per_channel = kernel.flip(-1).reshape(groups, 1, 1, size * c_q, c_k).expand(-1, size, head_dim, -1, -1)
    vw = centred_conv(v.transpose(2, 3).reshape(batch, n_heads * head_dim, seq_len), per_channel.flatten(0, 2))
    vw = vw.reshape(batch, groups, size, head_dim, size, c_q, seq_len)  # [B, G, o, d, i, a, N]
    return vw.permute(0, 1, 4, 6, 2, 5, 3).reshape(batch, n_heads, seq_len, -1)


def probability_band(
    qw: torch.Tensor, kw: torch.Tensor, bias: torch.Tensor | None, lse: torch.Tensor, width: int
) -> torch.Tensor:
    """band [B, H, N, width] with band[r, t] = P[r, r-t] (zero for r < t), from the kernel's lse.

    qw, kw: [B, H, N, Dqk] as the kernel saw them; bias: [B, H, N, W] or None; lse: [B, H, N].
    Checkpointed: the backward recomputes it, so float32 copies of half-precision qw and kw are never kept.
    """
    if width == 0:
        return lse.new_zeros((*lse.shape, 0))
    return checkpoint(_probability_band, qw, kw, bias, lse, width, use_reentrant=False)


def _probability_band(qw, kw, bias, lse, width):
    seq_len = qw.shape[2]
    columns = []
    for t in range(width):
        if t >= seq_len:
            columns.append(lse.new_zeros(lse.shape))
            continue
        logit = (qw[:, :, t:].to(lse.dtype) * kw[:, :, : seq_len - t].to(lse.dtype)).sum(-1)
        logit = F.pad(logit, (t, 0), value=float("-inf"))
        if bias is not None and t < bias.shape[-1]:
            logit = logit + bias[..., t].to(lse.dtype)
        columns.append(torch.exp(logit - lse))
    return torch.stack(columns, dim=-1)


def post_combine(
    u: torch.Tensor, v: torch.Tensor, kernel: torch.Tensor, mixer: torch.Tensor, band: torch.Tensor
) -> torch.Tensor:
    """Final output O [B, H, N, d] from the kernel output u = P · vw (module doc).

    u: [B, H, N, g·c_q'·d]; v: [B, H, N, d]; kernel: [H, c_q', c_k']; mixer: [G, g, g];
    band: [B, H, N, h'] probabilities P[r, r-t'].
    """
    batch, n_heads, seq_len, head_dim = v.shape
    c_q, c_k = kernel.shape[1:]
    p1, half = c_q - 1, (c_k - 1) // 2
    size = mixer.shape[1]
    taps = u.reshape(batch, n_heads, seq_len, size, c_q, head_dim)
    out = sum(shift_rows(taps[:, :, :, :, a].flatten(-2), p1 - a) for a in range(c_q))  # [B, H, N, g·d]
    out = out.reshape(batch, n_heads, seq_len, size, head_dim)
    if half > 0:
        device = kernel.device
        a = torch.arange(c_q, device=device).view(c_q, 1, 1)
        ahead = torch.arange(1, half + 1, device=device).view(1, half, 1)
        t = torch.arange(half, device=device).view(1, 1, half)
        phi = gather_taps(kernel, (a - p1 - ahead + half - t).expand(c_q, half, half))  # [H, a, u, t']
        removed = grouped(torch.einsum("bhrat,haut->bhru", row_window(band, p1, 0), phi), size)  # conv(P)[r, r+u]
        out = grouped(out, size)  # [B, G, i, N, o, d]
        for u in range(1, half + 1):
            ahead = grouped(shift_rows(v, -u), size).transpose(2, 3).unsqueeze(2)  # v_o[r+u]: [B, G, 1, N, o, d]
            out = out - removed[..., u - 1, None, None] * ahead
        out = out.reshape(batch, n_heads, seq_len, size, head_dim)
    mixed = torch.einsum("bgirod,gio->bgord", grouped(out, size), mixer)
    return mixed.reshape(batch, n_heads, seq_len, head_dim)


def banded_mta(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kernel_pre: torch.Tensor | None,
    kernel_post: torch.Tensor | None,
    head_mix_pre: torch.Tensor | None,
    head_mix_post: torch.Tensor | None,
    scale: float,
    banded: Banded,
) -> torch.Tensor:
    """Causal MTA (spec §1, no dropout) through one call of `banded` (module doc).

    q: [B, H, N, d]; k, v: [B, H_kv, N, d] (grouped-query heads are repeated); kernels [H, c_q, c_k];
    mixers [G, c, c]. The glue runs in float32 for half-precision inputs (float64 stays float64); the kernel
    operands are cast to q's dtype. Returns [B, H, N, d_v] in q's dtype.
    """
    dtype = compute_dtype(q.dtype)
    n_heads = q.shape[1]
    qc = q.to(dtype)
    kc, vc = (expand_kv(x, n_heads).to(dtype) for x in (k, v))

    identity = torch.ones(n_heads, 1, 1, dtype=dtype, device=q.device)  # a 1×1 kernel, or mixing groups of one
    kernel_pre, kernel_post, head_mix_pre, head_mix_post = (
        identity if p is None else p.to(dtype) for p in (kernel_pre, kernel_post, head_mix_pre, head_mix_post)
    )
    qw, kw, bias = pre_operands(qc, kc, kernel_pre, head_mix_pre, scale)
    vw = post_values(vc, kernel_post, head_mix_post)
    qw, kw, vw = (x.to(q.dtype) for x in (qw, kw, vw))
    u, lse = banded(qw, kw, vw, bias)
    band = probability_band(qw, kw, bias, lse, (kernel_post.shape[2] - 1) // 2)
    return post_combine(u.to(dtype), vc, kernel_post, head_mix_post, band).to(q.dtype)
