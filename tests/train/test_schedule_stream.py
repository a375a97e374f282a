"""The reusable training parts: learning-rate schedule, seeded sample stream, metrics log, device choice."""

import json
import random

import pytest
import torch

from mta.train import JsonlLog, SeededBatches, autocast_dtype, lr_factor, resolve_device, warmup_schedule


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

    first = SeededBatches(draw, 3, "train-1")
    again = SeededBatches(draw, 3, "train-1")
    other = SeededBatches(draw, 3, "train-2")
    batches = [next(first) for _ in range(2)]
    assert batches == [next(again) for _ in range(2)]
    assert batches != [next(other) for _ in range(2)]
    assert len(batches[0]) == 3 and batches[0] != batches[1]
    rng = random.Random(7)
    assert next(SeededBatches(draw, 2, 7)) == [rng.random(), rng.random()]
    with pytest.raises(ValueError, match="batch_size"):
        SeededBatches(draw, 0, 7)


def test_seeded_batches_continue_from_a_saved_state():
    stream = SeededBatches(lambda rng: rng.random(), 2, "train-1")
    next(stream)
    state = stream.state()
    expected = [next(stream) for _ in range(3)]
    resumed = SeededBatches(lambda rng: rng.random(), 2, "train-1")
    resumed.load_state(state)
    assert [next(resumed) for _ in range(3)] == expected


def test_jsonl_log(tmp_path):
    path = tmp_path / "runs" / "metrics.jsonl"
    with JsonlLog(path) as log:
        log.write({"step": 1, "loss": 2.5})
        log.write({"step": 2, "loss": 2.0})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"step": 1, "loss": 2.5},
        {"step": 2, "loss": 2.0},
    ]
    with JsonlLog(path, append=True) as log:
        log.write({"step": 3})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    with JsonlLog(path) as log:
        log.write({"step": 4})
    assert path.read_text() == '{"step": 4}\n'


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
