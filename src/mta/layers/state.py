"""What one attention layer keeps between decoding steps (docs/spec.md §6)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class AttentionState:
    """The decoding cache of one attention layer, for a batch of B rows and L positions seen so far.

    keys, values: [B, H_kv, L, d], after RoPE; zeros at left-padding positions.
    queries: [B, H, c_q-1, d], the queries of the last c_q - 1 positions (MTA with a pre-softmax kernel of
        c_q > 1 rows; None otherwise): the next rows' pre-softmax conv reads their logits.
    weights: [B, H, c_q'-1, L], the post-softmax conv's input rows (softmax weights after the pre-softmax steps)
        of the last c_q' - 1 positions (MTA with a post-softmax kernel of c_q' > 1 rows; None otherwise).
    A new state is empty; the layer fills it from the prompt, then extends it one step at a time.
    """

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    queries: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """L, the number of positions cached (0 for an empty state)."""
        return 0 if self.keys is None else self.keys.shape[2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Add the keys and values [B, H_kv, T, d] of T new positions."""
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = torch.cat([self.keys, keys], dim=2)
            self.values = torch.cat([self.values, values], dim=2)

    def select(self, index: torch.Tensor) -> None:
        """Keep (and reorder) the batch rows `index` [B'] of every cached tensor (beam search)."""
        for field in fields(self):
            tensor = getattr(self, field.name)
            if tensor is not None:
                setattr(self, field.name, tensor.index_select(0, index.to(tensor.device)))
