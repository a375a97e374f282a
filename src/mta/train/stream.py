"""An endless, seeded stream of freshly drawn training samples, grouped into batches."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Generic, TypeVar

Sample = TypeVar("Sample")


class SeededBatches(Generic[Sample]):
    """Lists of `batch_size` samples made by `draw(rng)`, forever, rng = random.Random(seed).

    The stream depends on `seed` alone (str seeds hash stably across runs), so a run can be repeated exactly;
    `state()` is its position between batches and `load_state(state)` returns a stream of the same seed there.
    """

    def __init__(self, draw: Callable[[random.Random], Sample], batch_size: int, seed: int | str):
        if batch_size < 1:
            raise ValueError(f"batch_size: got {batch_size}, expected >= 1")
        self.draw, self.batch_size, self.rng = draw, batch_size, random.Random(seed)

    def __iter__(self) -> "SeededBatches[Sample]":
        return self

    def __next__(self) -> list[Sample]:
        return [self.draw(self.rng) for _ in range(self.batch_size)]

    def state(self) -> tuple:
        return self.rng.getstate()

    def load_state(self, state: tuple) -> None:
        self.rng.setstate(state)
