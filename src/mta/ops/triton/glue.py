"""Multi-Token Attention as one banded causal attention plus O(N) glue (spec §1).

Every MTA option is linear either in the logits (pre-softmax conv and head mixing) or in the probabilities
(post-softmax conv and head mixing), so the whole op reduces to one generic kernel

    banded(q, kw, vw, bias, taps, g) -> (out, lse),
    scores[i, j] = qw_i · kw_j + bias[i, i-j] (0 <= i-j < W), causal softmax over j, out = P · vw,

where qw = query_window(q, taps, g) concatenates the last `taps` queries of the g heads of a group, plus three
cheap token-axis ops (`primitives`: token_conv, diagonal_dots, band) whose fused versions read and write the
kernel's operands in the input dtype, accumulating in float32. Per head, with scale s:

Pre-softmax conv θ [c_q, c_k], P0 = c_q-1, hk = (c_k-1)/2 (shared/kernel-notes.md (a)):
    qw_i = Q̃_i = concat_a q[i-P0+a],  kw_j = K̃_j = concat_a s Σ_b θ[a,b] k[j-hk+b]: Q̃_i·K̃_j = s · conv of the
    unmasked logits. Mask0 removes the terms whose source key lies after their source query; for j <= i those
    sit on the diagonals t = i-j < W = hk + P0 only, so bias = -Corr with, for F[m, δ] = q[m]·k[m+δ],
    Corr[i, t] = s Σ_{a, δ>=1} θ[a, δ+a+t+hk-P0] F[i-P0+a, δ].
Pre-softmax mixing W[g, i, o]: qw_o = concat_i Q̃_i, kw_o = concat_i W[i,o] K̃_i, bias_o = Σ_i W[i,o] bias_i.

Post-softmax conv θ' [c_q', c_k'], P1 = c_q'-1, h' = (c_k'-1)/2 (kernel-notes (b)):
    Ṽ_a[c] = Σ_b θ'[a,b] v[c+h'-b],  O[i] = Σ_a (P Ṽ_a)[i-P1+a] - C[i],
    C[i] = Σ_{u=1..h'} v[i+u] Σ_{a,b} θ'[a,b] P[i-P1+a, i+u-h'+b]   (the entries the final mask removes),
    which reads P only on the band P[r, r-t'], t' < h', recomputed from the kernel's lse (`ops.band`).
Post-softmax mixing W': O_o = Σ_i W'[i,o] (masked conv_i(P_i)) v_o, so head i's kernel call takes the values
of every output head o of its group, vw_i = concat_{o,a} Ṽ^{(i)}_{a,o}, and the glue recombines with W'.

An absent pre kernel is the 1×1 identity and an absent pre mixer the identity over groups of one head; without
any post option the kernel's output is the result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reference import compute_dtype, expand_kv
from .primitives import Primitives, grouped, query_window, row_window


def shift_rows(x: torch.Tensor, shift: int) -> torch.Tensor:
    """[B, H, N, F] -> y with y[i] = x[i-shift], zeros where i-shift lies outside [0, N) (shift of either sign;
    x itself for 0)."""
    seq_len = x.shape[2]
    if shift == 0:
        return x
    if shift >= 0:
        return F.pad(x, (0, 0, shift, 0))[:, :, :seq_len]
    return F.pad(x, (0, 0, 0, -shift))[:, :, -shift:]


def gather_taps(kernel: torch.Tensor, tap: torch.Tensor) -> torch.Tensor:
    """kernel [H, c_q, c_k], tap int [c_q, X, Y] (a column index per query row a) -> [H, c_q, X, Y],
    out[h, a, x, y] = kernel[h, a, tap[a, x, y]], zero where the tap falls outside [0, c_k)."""
    c_q, c_k = kernel.shape[1:]
    rows = torch.arange(c_q, device=kernel.device).view(c_q, 1, 1).expand_as(tap)
    taps = kernel[:, rows, tap.clamp(0, c_k - 1)]
    return taps * ((tap >= 0) & (tap < c_k)).to(kernel.dtype)


def mask0_correction(future: torch.Tensor, kernel: torch.Tensor, scale: float) -> torch.Tensor:
    """Corr [B, H, N, W], W = hk + P0: the pre-conv terms that Mask0 removes, on diagonal t = i-j (module doc).

    future: [B, H, N, W], future[m, δ-1] = q[m]·k[m+δ] (`diagonal_dots`); kernel: [H, c_q, c_k].
    """
    c_q, c_k = kernel.shape[1:]
    p0, hk = c_q - 1, (c_k - 1) // 2
    width = hk + p0
    device = kernel.device
    a = torch.arange(c_q, device=device).view(c_q, 1, 1)
    t = torch.arange(width, device=device).view(1, width, 1)
    delta = torch.arange(1, width + 1, device=device).view(1, 1, width)
    taps = gather_taps(kernel, (delta + a + t + hk - p0).expand(c_q, width, width))  # [H, a, t, δ]
    return scale * torch.einsum("bhiae,hate->bhit", row_window(future, p0, 0), taps)


def pre_operands(
    q: torch.Tensor, k: torch.Tensor, kernel: torch.Tensor | None, mixer: torch.Tensor | None, scale: float,
    ops: Primitives,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int, int]:
    """Kernel operands of the pre-softmax conv and mixing (module doc).

    q, k: [B, H, N, d]; kernel: [H, c_q, c_k] or None; mixer: [G, g, g] or None.
    Returns the q to pass to the kernel, kw [B, H, N, g·c_q·d] in q's dtype (input head i, then tap a, then d),
    bias [B, H, N, W] (None if W = 0), and the query window's taps c_q and group size g. With a Mask0 correction
    q and k each feed two ops whose gradients largely cancel, so half-precision q and k are made float32 first:
    autograd then adds those gradients before their one rounding to the input dtype.
    """
    dtype = compute_dtype(q.dtype)
    n_heads = q.shape[1]
    kernel = q.new_ones((n_heads, 1, 1), dtype=dtype) if kernel is None else kernel.to(dtype)
    c_q, c_k = kernel.shape[1:]
    size = 1 if mixer is None else mixer.shape[1]
    if mixer is None:
        weight = scale * kernel.unsqueeze(1)  # [H, 1, c_q, c_k]
    else:  # weight[o, i, a, t] = s W[i, o] θ_i[a, t]
        mixer = mixer.to(dtype)
        weight = scale * torch.einsum("gio,giat->goiat", mixer, grouped(kernel.unsqueeze(0), size)[0])
        weight = weight.reshape(n_heads, size, c_q, c_k)
    width = (c_k - 1) // 2 + c_q - 1
    operand_dtype = q.dtype
    if width > 0:
        q, k = q.to(dtype), k.to(dtype)
    kw = ops.token_conv(k, weight, operand_dtype)
    if width == 0:
        return q, kw, None, c_q, size
    corr = mask0_correction(ops.diagonal_dots(q, k, width), kernel, scale)
    if mixer is None:
        return q, kw, -corr, c_q, size
    bias = -torch.einsum("bgint,gio->bgont", grouped(corr, size), mixer)
    return q, kw, bias.reshape(corr.shape), c_q, size


def post_values(
    v: torch.Tensor, kernel: torch.Tensor, mixer: torch.Tensor, dtype: torch.dtype, ops: Primitives
) -> torch.Tensor:
    """vw [B, H, N, g·c_q'·d] in `dtype`: for input head i, Ṽ^{(i)}_{a,o} over output heads o of its group,
    then taps a.

    v: [B, H, N, d]; kernel: [H, c_q', c_k']; mixer: [G, g, g] (only its group size is used here).
    """
    # Ṽ_a[c] reads v[c+h'-b]: a centred correlation with the columns flipped, the same for every source head o.
    size = mixer.shape[1]
    return ops.token_conv(v, kernel.flip(-1).unsqueeze(1).expand(-1, size, -1, -1), dtype)


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
    out = taps[:, :, :, :, p1].flatten(-2)  # the current query's tap (no shift), then the earlier ones
    for a in range(p1):
        out = out + shift_rows(taps[:, :, :, :, a].flatten(-2), p1 - a)  # [B, H, N, g·d]
    out = grouped(out.reshape(batch, n_heads, seq_len, size, head_dim), size)  # [B, G, i, N, o, d]
    mixed = torch.einsum("bgirod,gio->bgord", out, mixer).reshape(batch, n_heads, seq_len, head_dim)
    if half == 0:
        return mixed
    # The removed entries scale v_o[r+u] for every input head i, so they are mixed first (W'[i, o] summed over i)
    # and subtracted from the mixed output: one [B, H, N, d] update per u, not one per pair of heads.
    device = kernel.device
    a = torch.arange(c_q, device=device).view(c_q, 1, 1)
    ahead = torch.arange(1, half + 1, device=device).view(1, half, 1)
    t = torch.arange(half, device=device).view(1, 1, half)
    phi = gather_taps(kernel, (a - p1 - ahead + half - t).expand(c_q, half, half))  # [H, a, u, t']
    removed = torch.einsum("bhrat,haut->bhru", row_window(band, p1, 0), phi)  # conv(P)[r, r+u] of head i
    removed = torch.einsum("bgiru,gio->bgoru", grouped(removed, size), mixer).reshape(removed.shape)
    for u in range(1, half + 1):
        mixed = mixed - removed[..., u - 1, None] * shift_rows(v, -u)  # v_o[r+u]
    return mixed


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
    ops: Primitives,
) -> torch.Tensor:
    """Causal MTA (spec §1, no dropout) through one call of `ops.banded` (module doc).

    q: [B, H, N, d]; k, v: [B, H_kv, N, d] (grouped-query heads are repeated); kernels [H, c_q, c_k];
    mixers [G, c, c]. The kernel operands kw, vw and the query window are in q's dtype; the small per-token
    tensors (Mask0 correction, post-softmax recombination) are computed in float32 for half-precision inputs.
    Returns [B, H, N, d_v] in q's dtype.
    """
    n_heads = q.shape[1]
    k, v = (expand_kv(x, n_heads) for x in (k, v))
    q_operand, kw, bias, taps, size = pre_operands(q, k, kernel_pre, head_mix_pre, scale, ops)
    if kernel_post is None and head_mix_post is None:
        return ops.banded(q_operand, kw, v, bias, taps, size)[0]
    dtype = compute_dtype(q.dtype)
    identity = torch.ones(n_heads, 1, 1, dtype=dtype, device=q.device)  # a 1×1 kernel, or mixing groups of one
    kernel_post, head_mix_post = (identity if p is None else p.to(dtype) for p in (kernel_post, head_mix_post))
    vc = v.to(dtype)  # one float32 leaf for post_values and post_combine's correction, as for q and k
    u, lse = ops.banded(q_operand, kw, post_values(vc, kernel_post, head_mix_post, v.dtype, ops), bias, taps, size)
    half = (kernel_post.shape[2] - 1) // 2
    band = ops.band(q_operand, kw, bias, lse, half, taps, size) if half else lse.new_zeros((*lse.shape, 0))
    return post_combine(u.to(dtype), vc, kernel_post, head_mix_post, band).to(q.dtype)
