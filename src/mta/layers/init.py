"""Weight initialisation shared by the layers and the model (the official code's lingua scheme)."""

from __future__ import annotations

import torch
from torch import nn


def trunc_normal_(weight: torch.Tensor, std: float) -> torch.Tensor:
    """Fill `weight` in place from N(0, std²) truncated at ±3·std; returns it."""
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
