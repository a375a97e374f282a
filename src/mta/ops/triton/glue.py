"""Multi-Token Attention as one banded causal attention plus O(N) glue (spec §1).

Every MTA option is linear either in the logits (pre-softmax conv and head mixing) or in the probabilities
(post-softmax conv and head mixing), so the whole op reduces to one generic kernel

    banded(q, kw, vw, band_scores, taps, g, skip) -> (out, lse),
    scores[i, j] = band_scores[i, i-j] if i-j < W else qw_i · kw_j   (j <= i), causal softmax over j,
    lse_i = logsumexp_j scores[i, j],   out_i = Σ_{j <= i-skip} P[i, j] vw_j,

where qw = query_window(q, taps, g) concatenates the last `taps` queries of the g heads of a group, plus three
cheap token-axis ops (`primitives`: token_conv, diagonal_dots, band) whose fused versions read and write the
kernel's operands in the input dtype, accumulating in float32. Strict causality: no entry that the spec masks (a
key after its source query, a value after the output row) enters a sum, not even to be added and subtracted again.
Where a tile's product covers one, the kernel selects the exact value instead (never adds to it), and a masked
probability is an exact 0: a later key or query, even NaN or Inf, leaves every earlier output bit for bit, and so
does a later finite value (a NaN value would still give 0 · NaN in the product P · vw, as in any attention).
Per head, with scale s:

Pre-softmax conv θ [c_q, c_k], P0 = c_q-1, hk = (c_k-1)/2, W = hk + P0:
    qw_i = Q̃_i = concat_a q[i-P0+a],  kw_j = K̃_j = concat_a s Σ_b θ[a,b] k[j-hk+b]: Q̃_i·K̃_j = s · conv of the
    unmasked logits. For t = i-j >= W every source key j-hk+b <= i-P0 <= its source query, so Mask0 removes no term
    and the product is exact. On the band t < W the kernel replaces it by the exact value from unmasked dot products
    only: with the past diagonal dots G[m, e] = q[m]·k[m-e] (e >= 0, zero before the first key; `diagonal_dots`),
        band_scores[i, t] = s Σ_a Σ_e θ[a, t+hk-P0+a-e] G[i-P0+a, e],   0 <= e < W + hk
    (the key m-e = i-t-hk+b of source query m = i-P0+a, kept where e >= 0, i.e. at or before that query).
Pre-softmax mixing W[g, i, o]: qw_o = concat_i Q̃_i, kw_o = concat_i W[i,o] K̃_i, band_o = Σ_i W[i,o] band_i.

Post-softmax conv θ' [c_q', c_k'], P1 = c_q'-1, h' = (c_k'-1)/2:
    Ṽ_a[c] = Σ_b θ'[a,b] v[c+h'-b] reads values after row r for the columns c > r-h' only, so the kernel leaves
    the diagonals r-c < h' out of its product (skip = h', the softmax still over every c <= r):
    u_a[r] = Σ_{c <= r-h'} P[r, c] Ṽ_a[c], and O[i] = Σ_a u_a[i-P1+a] + Σ_e coef[i, e] v[i-e], where the band
    entries P[r, r-t], t < h' (recomputed from the kernel's lse, `ops.band`), enter with their values at or before
    the output row only:
        coef[i, e] = Σ_{a, t} θ'[a, e-P1+a-t+h'] P[i-P1+a, i-P1+a-t],   0 <= e < P1 + 2h'.
Post-softmax mixing W': O_o = Σ_i W'[i,o] (masked conv_i(P_i)) v_o, so head i's kernel call takes the values
of every output head o of its group, vw_i = concat_{o,a} Ṽ^{(i)}_{a,o}, the glue recombines u with W', and the
band's coefficients are mixed the same way, coef_o = Σ_i W'[i,o] coef_i.

An absent pre kernel is the 1×1 identity and an absent pre mixer the identity over groups of one head; without
any post option the kernel's output is the result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..reference import compute_dtype, expand_kv
from .primitives import Primitives, grouped, query_window, row_window


def shift_rows(x: torch.Tensor, shift: int) -> torch.Tensor:
    """[B, H, N, F] -> y with y[i] = x[i-shift] for shift >= 0, zeros where i-shift < 0 (x itself for 0)."""
    if shift == 0:
        return x
    return F.pad(x, (0, 0, shift, 0))[:, :, : x.shape[2]]


def gather_taps(kernel: torch.Tensor, tap: torch.Tensor) -> torch.Tensor:
    """kernel [H, c_q, c_k], tap int [c_q, X, Y] (a column index per query row a) -> [H, c_q, X, Y],
    out[h, a, x, y] = kernel[h, a, tap[a, x, y]], zero where the tap falls outside [0, c_k)."""
    c_q, c_k = kernel.shape[1:]
    rows = torch.arange(c_q, device=kernel.device).view(c_q, 1, 1).expand_as(tap)
    taps = kernel[:, rows, tap.clamp(0, c_k - 1)]
    return taps * ((tap >= 0) & (tap < c_k)).to(kernel.dtype)


def band_scores(dots: torch.Tensor, kernel: torch.Tensor, scale: float) -> torch.Tensor:
    """The pre-softmax conv's exact scores on the band t = i-j < W = hk + P0 (module doc): [B, H, N, W].

    dots: [B, H, N, W + hk], dots[m, e] = q[m]·k[m-e] (`diagonal_dots`); kernel: [H, c_q, c_k].
    """
    c_q, c_k = kernel.shape[1:]
    p0, hk = c_q - 1, (c_k - 1) // 2
    width = hk + p0
    device = kernel.device
    a = torch.arange(c_q, device=device).view(c_q, 1, 1)
    t = torch.arange(width, device=device).view(1, width, 1)
    e = torch.arange(width + hk, device=device).view(1, 1, width + hk)
    taps = gather_taps(kernel, (t + hk - p0 + a - e).expand(c_q, width, width + hk))  # [H, a, t, e]
    return scale * torch.einsum("bhiae,hate->bhit", row_window(dots, p0, 0), taps)


def pre_operands(
    q: torch.Tensor, k: torch.Tensor, kernel: torch.Tensor | None, mixer: torch.Tensor | None, scale: float,
    ops: Primitives,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int, int]:
    """Kernel operands of the pre-softmax conv and mixing (module doc).

    q, k: [B, H, N, d]; kernel: [H, c_q, c_k] or None; mixer: [G, g, g] or None.
    Returns the q to pass to the kernel, kw [B, H, N, g·c_q·d] in q's dtype (input head i, then tap a, then d),
    band_scores [B, H, N, W] (None if W = 0), and the query window's taps c_q and group size g. With a band, q and
    k each feed two ops (the kernel's operands and the band's dots), so half-precision q and k are made float32
    first: autograd then adds the two gradients before their one rounding to the input dtype.
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
    half = (c_k - 1) // 2
    width = half + c_q - 1
    operand_dtype = q.dtype
    if width > 0:
        q, k = q.to(dtype), k.to(dtype)
    kw = ops.token_conv(k, weight, operand_dtype)
    if width == 0:
        return q, kw, None, c_q, size
    band = band_scores(ops.diagonal_dots(q, k, width + half), kernel, scale)
    if mixer is not None:
        band = torch.einsum("bgint,gio->bgont", grouped(band, size), mixer).reshape(band.shape)
    return q, kw, band, c_q, size


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
    """Final output O [B, H, N, d] from the kernel output u = P · vw without the diagonals r-c < h' (module doc).

    u: [B, H, N, g·c_q'·d]; v: [B, H, N, d]; kernel: [H, c_q', c_k']; mixer: [G, g, g];
    band: [B, H, N, h'] probabilities P[r, r-t], t < h'.
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
    # The band's probabilities scale v_o[i-e] for every input head i, so their coefficients are mixed first
    # (W'[i, o] summed over i) and added to the mixed output: one [B, H, N, d] update per e, not one per pair of heads.
    reach = p1 + 2 * half
    device = kernel.device
    a = torch.arange(c_q, device=device).view(c_q, 1, 1)
    t = torch.arange(half, device=device).view(1, half, 1)
    e = torch.arange(reach, device=device).view(1, 1, reach)
    phi = gather_taps(kernel, (e - p1 + a - t + half).expand(c_q, half, reach))  # [H, a, t, e]
    coef = torch.einsum("bhrat,hate->bhre", row_window(band, p1, 0), phi)  # coef[i, e] of head i
    coef = torch.einsum("bgire,gio->bgore", grouped(coef, size), mixer).reshape(coef.shape)
    padded = F.pad(v, (0, 0, reach - 1, 0))  # one copy: every shifted view below shares it (and autograd saves it)
    for shift in range(reach):
        start = reach - 1 - shift
        mixed = mixed + coef[..., shift, None] * padded[:, :, start: start + seq_len]  # v_o[i-shift]
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
    tensors (pre-softmax band scores, post-softmax recombination) are computed in float32 for half-precision
    inputs.
    Returns [B, H, N, d_v] in q's dtype.
    """
    n_heads = q.shape[1]
    k, v = (expand_kv(x, n_heads) for x in (k, v))
    q_operand, kw, band, taps, size = pre_operands(q, k, kernel_pre, head_mix_pre, scale, ops)
    if kernel_post is None and head_mix_post is None:
        return ops.banded(q_operand, kw, v, band, taps, size, 0)[0]
    dtype = compute_dtype(q.dtype)
    identity = torch.ones(n_heads, 1, 1, dtype=dtype, device=q.device)  # a 1×1 kernel, or mixing groups of one
    kernel_post, head_mix_post = (identity if p is None else p.to(dtype) for p in (kernel_post, head_mix_post))
    vc = v.to(dtype)  # one float32 leaf for post_values and post_combine's band terms, as for q and k
    half = (kernel_post.shape[2] - 1) // 2
    vw = post_values(vc, kernel_post, head_mix_post, v.dtype, ops)
    u, lse = ops.banded(q_operand, kw, vw, band, taps, size, half)
    probs = ops.band(q_operand, kw, band, lse, half, taps, size) if half else lse.new_zeros((*lse.shape, 0))
    return post_combine(u.to(dtype), vc, kernel_post, head_mix_post, probs).to(q.dtype)
