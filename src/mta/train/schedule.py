"""Learning-rate schedules as multipliers of the base rate, for `torch.optim.lr_scheduler.LambdaLR`.

Toy task (docs/spec.md §5): linear warmup, then constant. Language models (§3): linear warmup, then linear
decay to 0 at the last step.
"""

from __future__ import annotations

import torch


def lr_factor(step: int, warmup: int, total: int | None = None) -> float:
    """Multiplier of the base learning rate for the optimiser step with 0-based index `step`.

    Rises linearly as (step + 1) / warmup over the first `warmup` steps (so step 0 already moves), then stays
    at 1 when `total` is None, or falls linearly to 0 at step `total`.
    """
    if step < warmup:
        return (step + 1) / warmup
    if total is None:
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


def warmup_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying `lr_factor(step, warmup, total)`; call its step() after each optimizer.step()."""
    if warmup < 0:
        raise ValueError(f"warmup: got {warmup}, expected >= 0")
    if total is not None and total < warmup:
        raise ValueError(f"total: got {total}, expected >= warmup ({warmup})")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total))
