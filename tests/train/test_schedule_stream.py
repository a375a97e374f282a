"""The reusable training parts: learning-rate schedule, seeded sample stream, metrics log, device choice."""

import json
import random

import pytest
import torch

from mta.train import JsonlLog, autocast_dtype, lr_factor, resolve_device, seeded_batches, warmup_schedule


def test_warmup_then_constant():
    assert [lr_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(0, 0) == 1.0


def test_warmup_then_linear_decay():
    assert [lr_factor(s, 2, total=6) for s in range(7)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_scheduler_drives_the_optimiser():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = warmup_schedule(optimizer, warmup=2)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="warmup"):
        warmup_schedule(optimizer, warmup=-1)


def test_seeded_batches_repeat_for_a_seed():
    def draw(rng):
        return rng.random()

    first = seeded_batches(draw, 3, "train-1")
    again = seeded_batches(draw, 3, "train-1")
    other = seeded_batches(draw, 3, "train-2")
    batches = [next(first) for _ in range(2)]
    assert batches == [next(again) for _ in range(2)]
    assert batches != [next(other) for _ in range(2)]
    assert len(batches[0]) == 3 and batches[0] != batches[1]
    rng = random.Random(7)
    assert next(seeded_batches(draw, 2, 7)) == [rng.random(), rng.random()]


def test_jsonl_log(tmp_path):
    path = tmp_path / "runs" / "metrics.jsonl"
    with JsonlLog(path) as log:
        log.write({"step": 1, "loss": 2.5})
        log.write({"step": 2, "loss": 2.0})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"step": 1, "loss": 2.5},
        {"step": 2, "loss": 2.0},
    ]


def test_device_and_precision():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("abacus")
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") is None and autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert autocast_dtype(torch.device("cuda"), "auto") is torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(cpu, "fp8")
