"""The metrics of a language-model run: metrics.jsonl, and TensorBoard scalars when tensorboard is installed.

A resumed run first cuts metrics.jsonl back to its checkpoint's step (a line torn by a kill is dropped), so the
file reads as one uninterrupted run; TensorBoard is told to purge the later events the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .metrics import JsonlLog

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class RunLog:
    """Writes metrics records ({"step": int, ...}, values numbers or nested dicts of numbers) to out_dir.

    enabled=False (ranks other than 0) makes every call a no-op. `step`: the step the run starts from; records
    after it, left by an earlier process of this run, are removed.
    """

    def __init__(self, out_dir: Path, step: int, enabled: bool = True):
        self.jsonl = self.tensorboard = None
        if not enabled:
            return
        path = out_dir / METRICS_FILE
        kept = _records_up_to(path, step) if step else []
        self.jsonl = JsonlLog(path)
        for record in kept:
            self.jsonl.write(record)
        self.tensorboard = _tensorboard(out_dir / TENSORBOARD_DIR, purge_step=step + 1 if step else None)

    def write(self, record: dict) -> dict:
        """Log `record`; return it."""
        if self.jsonl is not None:
            self.jsonl.write(record)
        if self.tensorboard is not None:
            for name, value in scalars(record):
                self.tensorboard.add_scalar(name, value, record["step"])
        return record

    def close(self) -> None:
        for sink in (self.jsonl, self.tensorboard):
            if sink is not None:
                sink.close()


def scalars(record: dict, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(name, number) pairs of a nested record, names joined by '/': {"val": {"a": {"ppl": 3}}} -> val/a/ppl."""
    for key, value in record.items():
        if isinstance(value, dict):
            yield from scalars(value, f"{prefix}{key}/")
        elif key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


def _records_up_to(path: Path, step: int) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed process
            continue
    return [record for record in records if record["step"] <= step]


def _tensorboard(log_dir: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)
