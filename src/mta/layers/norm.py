"""RMSNorm (Zhang & Sennrich 2019), the normalisation of the Llama-style decoder (docs/spec.md §2, §3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x², last dim) + eps) · weight, over the last dimension of size `dim`.

    Computed in at least float32 (the input and the weight are upcast) and cast back to the input's dtype.
    The weight is learnable and starts at ones.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., dim] -> [..., dim] in x's dtype."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        return F.rms_norm(x.to(dtype), (self.dim,), self.weight.to(dtype), self.eps).to(x.dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
