"""The toy-task trainer on CPU: its run directory, early stopping, Ctrl-C and SIGTERM handling (docs/spec.md §5)."""

import json
import os
import signal
import warnings

import pytest
import torch

from mta.eval.toy import evaluate_toy
from mta.models.checkpoint import CheckpointError, load_checkpoint
from mta.train import ToyTrainConfig, train_toy
from mta.train import toy as toy_train

TINY = dict(n_block=3, num_blocks=4, batch_size=4, warmup=2, eval_samples=6, model=dict(dim=16, n_layers=1))


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("arch", ["transformer", "mta"])
def test_run_directory(tmp_path, arch):
    config = ToyTrainConfig(arch=arch, steps=5, eval_every=2, log_every=1, **TINY)
    result = train_toy(config, tmp_path, progress=False)

    assert json.loads((tmp_path / "result.json").read_text()) == json.loads(json.dumps(result))
    assert result["arch"] == arch and result["steps"] == 5 and result["stopped"] == "max_steps"
    assert result["solved_step"] is None
    assert result["n_block"] == 3 and result["num_blocks"] == 4 and result["seed"] == 42
    assert result["device"] == "cpu" and result["environment"]["commit"]
    assert 0 <= result["final_sequence_error_pct"] <= 100

    metrics = lines(tmp_path / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 5]  # a line per step, then the final evaluation
    assert [m["lr"] for m in metrics[:3]] == pytest.approx([0.5e-4, 1e-4, 1e-4])  # 2 warmup steps
    assert all(m["loss"] > 0 for m in metrics[:5])
    assert "eval_sequence_error_pct" in metrics[1] and "eval_sequence_error_pct" not in metrics[0]
    assert metrics[-1]["eval_sequence_error_pct"] == result["final_sequence_error_pct"]
    assert all(m["elapsed_s"] >= 0 for m in metrics)

    model = load_checkpoint(tmp_path)
    assert model.config.attention == arch and model.config.dim == 16
    held_out = toy_train.toy_data.generate(3, 2, "all", 6, seed=42 + 1000, num_blocks=4)
    final = evaluate_toy(model, held_out)
    assert final["sequence_error_pct"] == result["final_sequence_error_pct"]
    assert final["sequence_error_pct_by_reach"] == result["final_sequence_error_pct_by_reach"]


def test_same_seed_same_run(tmp_path):
    config = ToyTrainConfig(steps=3, eval_every=3, **TINY)
    first = train_toy(config, tmp_path / "a", progress=False)
    second = train_toy(config, tmp_path / "b", progress=False)
    loss = [[m.get("loss") for m in lines(tmp_path / run / "metrics.jsonl")] for run in "ab"]
    assert loss[0] == loss[1]
    assert first["final_token_error_pct"] == second["final_token_error_pct"]


def test_stops_once_solved(tmp_path, monkeypatch):
    errors = iter([10.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0])
    monkeypatch.setattr(toy_train, "evaluate_toy", lambda *args, **kwargs: {
        "samples": 6, "sequence_error_pct": next(errors), "token_error_pct": 0.0})
    config = ToyTrainConfig(steps=100, eval_every=2, log_every=100, patience=3, **TINY)
    result = train_toy(config, tmp_path, progress=False)
    assert result["stopped"] == "solved"
    assert result["steps"] == 12 and result["solved_step"] == 8
    assert result["best_sequence_error_pct"] == 0.0 and result["final_sequence_error_pct"] == 0.0
    assert len(lines(tmp_path / "metrics.jsonl")) == 6  # no extra final evaluation


def test_time_limit_ends_the_run_evaluated_and_saved(tmp_path):
    config = ToyTrainConfig(steps=1000, eval_every=500, **TINY)
    result = train_toy(config, tmp_path, progress=False, max_minutes=0.0)
    assert result["stopped"] == "time_limit" and result["steps"] == 1 and result["solved_step"] is None
    assert lines(tmp_path / "metrics.jsonl")[-1]["step"] == 1  # the final evaluation
    assert result["final_sequence_error_pct"] is not None and (tmp_path / "model.safetensors").exists()


def interrupt_at(monkeypatch, step):
    """Make the next run raise KeyboardInterrupt once `step` steps are done (later runs train normally)."""
    real_step, fired = toy_train.ToyRun.train_step, []

    def step_then_interrupt(run):
        if run.step == step and not fired:
            fired.append(step)
            raise KeyboardInterrupt
        return real_step(run)

    monkeypatch.setattr(toy_train.ToyRun, "train_step", step_then_interrupt)


def test_interrupt_saves_checkpoint_and_result(tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 3)
    config = ToyTrainConfig(steps=100, eval_every=2, **TINY)
    with pytest.raises(KeyboardInterrupt):
        train_toy(config, tmp_path, progress=False)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["stopped"] == "interrupted" and result["steps"] == 3
    assert result["final_sequence_error_pct"] is not None  # the evaluation at step 2
    assert isinstance(load_checkpoint(tmp_path), torch.nn.Module)


def without_times(path):
    return [{k: v for k, v in line.items() if k != "elapsed_s"} for line in lines(path)]


@pytest.mark.parametrize("data", ["python", "tensor"])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, data):
    config = ToyTrainConfig(steps=7, eval_every=2, log_every=1, data=data, **TINY)  # MTA, attention dropout 0.1
    straight = train_toy(config, tmp_path / "straight", progress=False)
    interrupt_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_toy(config, tmp_path / "resumed", progress=False)
    assert [d.name for d in (tmp_path / "resumed" / "checkpoints").iterdir()] == ["step-00000003"]
    resumed = train_toy(config, tmp_path / "resumed", progress=False, resume=True)

    assert resumed["steps"] == 7 and resumed["stopped"] == "max_steps" and resumed["resumed_at"] == [3]
    assert straight["resumed_at"] == [] and resumed["elapsed_s"] > 0
    assert without_times(tmp_path / "resumed" / "metrics.jsonl") == without_times(tmp_path / "straight" / "metrics.jsonl")
    weights = [load_checkpoint(tmp_path / run).state_dict() for run in ("straight", "resumed")]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not list((tmp_path / "resumed" / "checkpoints").iterdir())  # ended by the protocol: state removed


def test_an_interrupt_inside_a_step_saves_no_state_of_it(tmp_path, monkeypatch):
    config = ToyTrainConfig(steps=5, eval_every=2, log_every=1, **TINY)
    straight = train_toy(config, tmp_path / "straight", progress=False)
    real_step, calls = torch.optim.AdamW.step, []

    def step_interrupted_once(optimizer, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # after the third step's backward, before its update
        return real_step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        train_toy(config, tmp_path / "run", progress=False)
    assert not list((tmp_path / "run" / "checkpoints").glob("step-*"))
    with pytest.raises(ValueError, match="resume: .* holds no training state to continue"):
        train_toy(config, tmp_path / "run", progress=False, resume=True)
    again = train_toy(config, tmp_path / "run", progress=False, resume=True, missing_ok=True)  # no state: afresh
    assert again["resumed_at"] == [] and again["final_token_error_pct"] == straight["final_token_error_pct"]
    assert without_times(tmp_path / "run" / "metrics.jsonl") == without_times(tmp_path / "straight" / "metrics.jsonl")


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_inside_a_step_saves_the_state_after_it(tmp_path, monkeypatch, name):
    config = ToyTrainConfig(steps=7, eval_every=2, log_every=3, **TINY)
    straight = train_toy(config, tmp_path / "straight", progress=False)
    real_step, calls = torch.optim.AdamW.step, []

    def step_signalled_once(optimizer, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), getattr(signal, name))  # after the fourth step's backward, before its update
        return real_step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_signalled_once)
    stopped = train_toy(config, tmp_path / "run", progress=False)
    assert stopped["stopped"] == "interrupted" and stopped["steps"] == 4  # the step in progress was finished
    assert [d.name for d in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-00000004"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are put back
    resumed = train_toy(config, tmp_path / "run", progress=False, resume=True)
    assert resumed["resumed_at"] == [4] and resumed["steps"] == 7
    assert without_times(tmp_path / "run" / "metrics.jsonl") == without_times(tmp_path / "straight" / "metrics.jsonl")
    weights = [load_checkpoint(tmp_path / run).state_dict() for run in ("straight", "run")]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert resumed["final_token_error_pct"] == straight["final_token_error_pct"]


def test_time_cap_leaves_a_state_the_next_call_continues(tmp_path):
    config = ToyTrainConfig(steps=4, eval_every=2, **TINY)
    capped = train_toy(config, tmp_path, progress=False, max_minutes=0.0)
    assert capped["stopped"] == "time_limit" and capped["steps"] == 1
    resumed = train_toy(config, tmp_path, progress=False, resume=True)
    assert resumed["stopped"] == "max_steps" and resumed["steps"] == 4 and resumed["resumed_at"] == [1]
    evaluated = [m["step"] for m in lines(tmp_path / "metrics.jsonl") if "eval_sequence_error_pct" in m]
    assert evaluated == [1, 2, 4]  # the cap's evaluation is kept


def test_resume_refuses_another_runs_state_and_starts_afresh_without_one_if_asked(tmp_path, monkeypatch):
    config = ToyTrainConfig(steps=5, eval_every=2, **TINY)
    with pytest.raises(ValueError, match="--resume-or-start starts afresh"):
        train_toy(config, tmp_path / "fresh", progress=False, resume=True)
    assert not (tmp_path / "fresh").exists()
    fresh = train_toy(config, tmp_path / "fresh", progress=False, resume=True, missing_ok=True)
    assert fresh["resumed_at"] == [] and fresh["steps"] == 5
    interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_toy(config, tmp_path / "run", progress=False)
    other = ToyTrainConfig(steps=5, eval_every=2, **{**TINY, "batch_size": 8})
    with pytest.raises(CheckpointError, match="batch_size: 4 -> 8"):
        train_toy(other, tmp_path / "run", progress=False, resume=True)
    (tmp_path / "run" / "checkpoints" / "step-00000002" / "optimizer.pt").write_bytes(b"torn")
    with pytest.raises(CheckpointError, match="optimizer.pt is missing or corrupt"):
        train_toy(config, tmp_path / "run", progress=False, resume=True)


def test_bad_settings_fail_before_training(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        ToyTrainConfig(arch="rnn")
    with pytest.raises(ValueError, match="eval_every"):
        ToyTrainConfig(eval_every=0)
    with pytest.raises(ValueError, match="n_query"):
        ToyTrainConfig(n_block=2, n_query=3)
    with pytest.raises(ValueError, match="pre_kernel"):
        train_toy(ToyTrainConfig(arch="transformer", **{**TINY, "model": {"pre_kernel": (2, 9)}}), tmp_path)


def test_a_key_window_narrower_than_two_blocks_warns():
    """c_k < 2N − 1 (the spec's 2×9 at N = 8) warns and names the kernel that covers a block; 2×9 at N = 5,
    2×15 at N = 8 and the Transformer (no kernel) do not."""
    with pytest.warns(UserWarning, match=r"pre_kernel: c_k = 9 < 2·n_block − 1 = 15.*--kernel 2 15"):
        ToyTrainConfig(n_block=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ToyTrainConfig(n_block=5)
        ToyTrainConfig(n_block=8, model={"pre_kernel": (2, 15)})
        ToyTrainConfig(arch="transformer", n_block=8)


def test_long_samples_grow_max_seq_len():
    config = ToyTrainConfig(n_block=5, num_blocks=100)
    assert config.model_config().max_seq_len == config.sequence_length == 1 + 100 * 6 + 2 + 5
    assert ToyTrainConfig().model_config().max_seq_len == 512  # the preset's


def test_tensor_data_source(tmp_path):
    config = ToyTrainConfig(steps=3, eval_every=3, data="tensor", **TINY)
    first = train_toy(config, tmp_path / "a", progress=False)
    train_toy(config, tmp_path / "b", progress=False)
    assert first["train_config"]["data"] == "tensor" and first["steps"] == 3
    loss = [[m.get("loss") for m in lines(tmp_path / run / "metrics.jsonl")] for run in "ab"]
    assert loss[0] == loss[1]
    batches = toy_train.TrainingStream(config, torch.device("cpu"))
    inputs, targets = next(batches)
    assert inputs.shape == targets.shape == (4, config.sequence_length)
    with pytest.raises(ValueError, match="data: got 'disk'"):
        ToyTrainConfig(data="disk", **TINY)
