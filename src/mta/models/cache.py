"""The decoding cache of a DecoderLM (docs/spec.md §6): one AttentionState per layer, and the batch's
left padding."""

from __future__ import annotations

import torch

from mta.layers import AttentionState


class DecodeCache:
    """What `DecoderLM.forward(..., cache=...)` reads and extends between generation steps.

    layers: one `mta.layers.AttentionState` per decoder layer (keys, values, and for MTA the last queries and
    post-softmax conv rows). start: [B] long, each row's first real position (left padding before it), or None
    for a batch without padding; set by the first forward (the prompt).
    """

    def __init__(self, n_layers: int):
        self.layers = [AttentionState() for _ in range(n_layers)]
        self.start: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """The number of positions cached (padding included); 0 before the prompt."""
        return self.layers[0].length

    def select(self, index: torch.Tensor) -> None:
        """Keep (and reorder) the batch rows `index` [B'] (beam search)."""
        for state in self.layers:
            state.select(index)
        if self.start is not None:
            self.start = self.start.index_select(0, index.to(self.start.device))
