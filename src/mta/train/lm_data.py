"""Training windows drawn from the train split of every domain, a pure function of (seed, step, micro, rank).

Because a batch depends on nothing but those four numbers, a resumed run draws exactly the batches the
uninterrupted run would have drawn from its step on; no data-loader state needs saving (docs/spec.md §3).
"""

from __future__ import annotations

import numpy as np
import torch

from mta.eval.ppl import TokenSplit


class MixtureSampler:
    """Windows of seq_len + 1 tokens: a domain drawn by mixture weight, then a uniform start inside it.

    With weights proportional to token counts (the default) this is close to a uniform draw from the
    concatenation of the domains (a window never straddles two domains). mixture: {domain: weight}, unlisted
    domains get weight 0.
    """

    def __init__(self, split: TokenSplit, seq_len: int, batch_size: int, seed: int,
                 mixture: dict[str, float] | None = None):
        self.names = sorted(split.domains)
        self.arrays = [split.domains[name] for name in self.names]
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        if mixture is None:
            weights = np.array([len(a) for a in self.arrays], dtype=np.float64)
        else:
            unknown = sorted(set(mixture) - set(self.names))
            if unknown:
                raise ValueError(f"mixture: domains {unknown} are not in the dataset (it has {self.names})")
            weights = np.array([float(mixture.get(name, 0.0)) for name in self.names])
        for name, array, weight in zip(self.names, self.arrays, weights):
            if weight > 0 and len(array) < seq_len + 1:
                raise ValueError(f"data: train split of domain {name!r} has {len(array)} tokens, fewer than a "
                                 f"window of seq_len + 1 = {seq_len + 1}")
        self.weights = weights / weights.sum()

    def batch(self, step: int, micro: int = 0, rank: int = 0) -> torch.Tensor:
        """The windows [batch_size, seq_len + 1] (int64, CPU) of micro-batch `micro` of `step` on `rank`."""
        rng = np.random.default_rng([self.seed, step, micro, rank])
        domains = rng.choice(len(self.names), size=self.batch_size, p=self.weights)
        highs = np.array([len(self.arrays[d]) - self.seq_len for d in domains])
        starts = rng.integers(0, highs)
        rows = [self.arrays[d][s : s + self.seq_len + 1] for d, s in zip(domains, starts)]
        return torch.from_numpy(np.stack(rows).astype(np.int64))
