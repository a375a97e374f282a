"""An endless, seeded stream of freshly drawn training samples, grouped into batches."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TypeVar

Sample = TypeVar("Sample")


def seeded_batches(
    draw: Callable[[random.Random], Sample], batch_size: int, seed: int | str
) -> Iterator[list[Sample]]:
    """Yield lists of `batch_size` samples made by `draw(rng)` forever, rng = random.Random(seed).

    The stream depends on `seed` alone (str seeds hash stably across runs), so a run can be repeated exactly.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}, expected >= 1")
    rng = random.Random(seed)
    while True:
        yield [draw(rng) for _ in range(batch_size)]
