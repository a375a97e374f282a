"""The configuration of one attention layer (docs/spec.md §2) and the depth schedule λ(l)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mta.ops import BACKENDS

# The AttentionConfig fields that only Multi-Token Attention uses; other attention kinds refuse them.
MTA_OPTIONS = ("pre_kernel", "post_kernel", "pre_mix_group", "post_mix_group", "group_norm", "depth_scaling", "gate")


def lambda_init(layer_index: int) -> float:
    """λ(l) = 0.8 - 0.6·exp(-0.3·l) for the 0-based layer l (DIFF Transformer; MTA's depth scaling,
    docs/spec.md §2)."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_index)


@dataclass
class AttentionConfig:
    """One attention layer. Shapes: D = dim, H = n_heads, H_kv = n_kv_heads, d = head_dim.

    dim: model width D. n_heads: query heads H. n_kv_heads: key/value heads (grouped-query attention), default H.
    head_dim: d, default D // H; must be even (RoPE rotates channel pairs).
    rope_theta: RoPE base (1e5 in the paper). dropout: dropout on the attention weights, training only.
    backend: the `mta.ops.mta_attention` backend.
    MTA options (docs/spec.md §1–§2; kind "mta" only):
      pre_kernel / post_kernel: (c_q, c_k) of the q–k convolution before / after softmax; c_k odd; None = off.
      pre_mix_group / post_mix_group: heads per mixing group c (G = H / c groups); H = full mixing; None = off.
      group_norm: RMSNorm over d per (token, head) with one learnable d-vector shared by the heads.
      depth_scaling: multiply the normed output by 1 - λ(layer_index); needs group_norm.
      gate: o_h ← o_h · σ(w·o_h + b), one scalar per (token, head), w ∈ R^d and b shared by the heads.
    layer_index: 0-based depth of the layer (depth scaling, DIFF's λ_init).
    n_kv_heads and head_dim are resolved to numbers on construction. Every field is a Python int, float, bool, str
    or (c_q, c_k) int pair; the layer's input and output are [B, N, D] (its parameters' dtype).
    """

    dim: int
    n_heads: int
    n_kv_heads: int | None = None
    head_dim: int | None = None
    rope_theta: float = 1e5
    dropout: float = 0.0
    backend: str = "auto"
    pre_kernel: tuple[int, int] | None = None
    post_kernel: tuple[int, int] | None = None
    pre_mix_group: int | None = None
    post_mix_group: int | None = None
    group_norm: bool = False
    depth_scaling: bool = False
    gate: bool = False
    layer_index: int = 0

    def __post_init__(self) -> None:
        check_int("dim", self.dim, 1)
        check_int("n_heads", self.n_heads, 1)
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        check_int("n_kv_heads", self.n_kv_heads, 1)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads: got {self.n_kv_heads}, expected a divisor of n_heads={self.n_heads}")
        if self.head_dim is None:
            if self.dim % self.n_heads:
                raise ValueError(f"n_heads: got {self.n_heads}, expected a divisor of dim={self.dim}")
            self.head_dim = self.dim // self.n_heads
        check_int("head_dim", self.head_dim, 2)
        if self.head_dim % 2:
            raise ValueError(f"head_dim: got {self.head_dim}, expected an even number (RoPE rotates pairs)")
        if not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0):
            raise ValueError(f"rope_theta: got {self.rope_theta!r}, expected a positive number")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout: got {self.dropout!r}, expected a number in [0, 1)")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: got {self.backend!r}, expected one of {BACKENDS}")
        self.pre_kernel = check_kernel_size("pre_kernel", self.pre_kernel)
        self.post_kernel = check_kernel_size("post_kernel", self.post_kernel)
        for name in ("pre_mix_group", "post_mix_group"):
            group = getattr(self, name)
            if group is not None and (not _is_int(group) or group < 1 or self.n_heads % group):
                raise ValueError(f"{name}: got {group!r}, expected a divisor of n_heads={self.n_heads} (or None)")
        if self.depth_scaling and not self.group_norm:
            raise ValueError("depth_scaling: got True with group_norm=False; it scales the group-normed output")
        check_int("layer_index", self.layer_index, 0)

    def mta_options_set(self) -> list[str]:
        """The names of the MTA options that are switched on (not None / not False)."""
        return [name for name in MTA_OPTIONS if getattr(self, name) not in (None, False)]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int) -> None:
    """Raise a ValueError naming `name` unless `value` is an integer (not a bool) >= minimum."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name}: got {value!r}, expected an integer >= {minimum}")


def check_kernel_size(name: str, kernel: object) -> tuple[int, int] | None:
    """Validate the size of an MTA convolution kernel, as AttentionConfig checks pre_kernel and post_kernel.

    kernel: None or a pair of integers (c_q, c_k), c_q >= 1 and c_k >= 1 odd; a list (from JSON) is accepted.
    Returns the pair as a tuple[int, int] (None for None); raises a ValueError naming `name` otherwise.
    """
    if kernel is None:
        return None
    if not isinstance(kernel, (tuple, list)) or len(kernel) != 2 or not all(_is_int(c) for c in kernel):
        raise ValueError(f"{name}: got {kernel!r}, expected a pair of integers (c_q, c_k) or None")
    c_q, c_k = kernel
    if c_q < 1 or c_k < 1 or c_k % 2 == 0:
        raise ValueError(f"{name}: got (c_q={c_q}, c_k={c_k}), expected c_q >= 1 and an odd c_k >= 1")
    return (c_q, c_k)
