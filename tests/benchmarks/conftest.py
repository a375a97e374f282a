"""Shared by the benchmark-script tests: running tiny work on one thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread(monkeypatch):
    """Tiny models and ops on a shared 2-core machine are far faster on one thread; triton stays off (no interpreter)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
