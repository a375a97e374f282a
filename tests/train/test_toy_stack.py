"""Stacked toy runs (mta.train.toy_stack): each run computes what it computes alone, and keeps its own ending."""

import json
import os
import signal

import pytest
import torch

from mta.models.checkpoint import CheckpointError, load_checkpoint
from mta.train import ToyTrainConfig, train_toy, train_toy_stack
from mta.train import toy_stack

TINY = dict(num_blocks=4, batch_size=4, warmup=2, eval_samples=6, data="tensor",
            model=dict(dim=16, n_layers=1, dropout=0.0))


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def weights(directory):
    return {name: p.detach().clone() for name, p in load_checkpoint(directory).named_parameters()}


@pytest.mark.parametrize("arch", ["transformer", "mta"])
def test_stacked_runs_equal_lone_runs(tmp_path, arch):
    # Different variants and block lengths in one stack: the shorter samples are padded on the right.
    configs = [ToyTrainConfig(arch=arch, n_block=3, variant="all", seed=1, steps=6, eval_every=3, **TINY),
               ToyTrainConfig(arch=arch, n_block=4, variant="last", seed=2, steps=6, eval_every=3, **TINY)]
    stacked = train_toy_stack(configs, [tmp_path / "s0", tmp_path / "s1"], progress=False)
    for i, config in enumerate(configs):
        alone = train_toy(config, tmp_path / f"a{i}", progress=False)
        assert stacked[i]["steps"] == alone["steps"] == 6 and stacked[i]["stopped"] == alone["stopped"]
        assert stacked[i]["train_config"] == alone["train_config"]
        assert stacked[i]["final_sequence_error_pct"] == alone["final_sequence_error_pct"]
        a, b = lines(tmp_path / f"s{i}" / "metrics.jsonl"), lines(tmp_path / f"a{i}" / "metrics.jsonl")
        assert [m["step"] for m in a] == [m["step"] for m in b]
        assert [m.get("loss") for m in a] == pytest.approx([m.get("loss") for m in b], rel=1e-5)
        w_stacked, w_alone = weights(tmp_path / f"s{i}"), weights(tmp_path / f"a{i}")
        for name in w_alone:
            torch.testing.assert_close(w_stacked[name], w_alone[name], rtol=1e-4, atol=1e-5, msg=name)


def solved_from_the_start(monkeypatch, seed):
    """Every evaluation of the stack's run with `seed` reports 0% sequence error, of the other runs 50%."""
    real_held_out, real_evaluate, solved = toy_stack.held_out_samples, toy_stack.evaluate_toy, []

    def held_out(config):
        samples = real_held_out(config)
        if config.seed == seed:
            solved.append(samples)
        return samples

    def evaluate(model, samples, **kwargs):
        result = real_evaluate(model, samples, **kwargs)
        return {**result, "sequence_error_pct": 0.0 if any(samples is s for s in solved) else 50.0}

    monkeypatch.setattr(toy_stack, "evaluate_toy", evaluate)
    monkeypatch.setattr(toy_stack, "held_out_samples", held_out)


def test_solved_run_leaves_the_stack(tmp_path, monkeypatch):
    # Run 1 is "solved" from its first evaluation; run 0 never is and goes on to max_steps.
    configs = [ToyTrainConfig(arch="mta", n_block=3, seed=seed, steps=8, eval_every=2, patience=2, **TINY)
               for seed in (5, 6)]
    solved_from_the_start(monkeypatch, 6)
    results = train_toy_stack(configs, [tmp_path / "r0", tmp_path / "r1"], progress=False)
    assert results[1]["stopped"] == "solved" and results[1]["steps"] == 4 and results[1]["solved_step"] == 2
    assert results[0]["stopped"] == "max_steps" and results[0]["steps"] == 8
    assert [m["step"] for m in lines(tmp_path / "r1" / "metrics.jsonl")][-1] == 4
    assert (tmp_path / "r1" / "model.safetensors").exists() and (tmp_path / "r0" / "result.json").exists()


def test_time_limit_ends_every_run(tmp_path):
    configs = [ToyTrainConfig(arch="transformer", n_block=3, seed=seed, steps=1000, eval_every=500, **TINY)
               for seed in (1, 2)]
    results = train_toy_stack(configs, [tmp_path / "a", tmp_path / "b"], progress=False, max_minutes=0.0)
    for result in results:
        assert result["stopped"] == "time_limit" and result["steps"] == 1
        assert result["final_sequence_error_pct"] is not None


def test_per_run_gradient_clipping(tmp_path):
    configs = [ToyTrainConfig(arch="transformer", n_block=3, seed=seed, steps=3, eval_every=3, grad_clip=0.01,
                              **TINY) for seed in (1, 2)]
    train_toy_stack(configs, [tmp_path / "s0", tmp_path / "s1"], progress=False)
    for i, config in enumerate(configs):
        train_toy(config, tmp_path / f"a{i}", progress=False)
        w_stacked, w_alone = weights(tmp_path / f"s{i}"), weights(tmp_path / f"a{i}")
        for name in w_alone:
            torch.testing.assert_close(w_stacked[name], w_alone[name], rtol=1e-4, atol=1e-5, msg=name)


def test_bad_stacks(tmp_path):
    base = dict(n_block=3, steps=2, **TINY)
    with pytest.raises(ValueError, match=r"configs\[1\]\.lr: got 0\.001"):
        train_toy_stack([ToyTrainConfig(**base), ToyTrainConfig(lr=1e-3, **base)], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match=r"configs\[0\]\.data: got 'python'"):
        train_toy_stack([ToyTrainConfig(**{**base, "data": "python"})], [tmp_path / "a"])
    with pytest.raises(ValueError, match="out_dirs: every run needs its own directory"):
        train_toy_stack([ToyTrainConfig(**base)] * 2, [tmp_path / "a", tmp_path / "a"])
    with pytest.raises(ValueError, match="out_dirs: got 1 directories for 2 configs"):
        train_toy_stack([ToyTrainConfig(**base)] * 2, [tmp_path / "a"])


def test_compiled_training_equals_eager(tmp_path):
    # torch.compile of the loss fuses kernels but computes the same function: stacked and lone runs alike.
    configs = [ToyTrainConfig(arch="mta", n_block=3, seed=seed, steps=3, eval_every=3, **TINY) for seed in (1, 2)]
    compiled = [ToyTrainConfig(**{**c.__dict__, "compile": "default"}) for c in configs]
    eager = train_toy_stack(configs, [tmp_path / "e0", tmp_path / "e1"], progress=False)
    fused = train_toy_stack(compiled, [tmp_path / "c0", tmp_path / "c1"], progress=False)
    alone = train_toy(compiled[0], tmp_path / "alone", progress=False)
    assert fused[0]["train_config"]["compile"] == "default" and eager[0]["train_config"]["compile"] == "off"
    for name, reference in weights(tmp_path / "e0").items():
        for run in ("c0", "alone"):
            torch.testing.assert_close(weights(tmp_path / run)[name], reference, rtol=1e-4, atol=1e-5, msg=name)
    assert fused[1]["final_sequence_error_pct"] == eager[1]["final_sequence_error_pct"]
    with pytest.raises(ValueError, match="compile: got 'fast'"):
        ToyTrainConfig(compile="fast")


@pytest.mark.parametrize("arch", ["transformer", "mta"])
def test_stacked_losses_trace_into_one_graph(tmp_path, arch):
    # The "equals eager" test above cannot see torch.compile skipping the frame and running eagerly, which it
    # once did for the MTA stack on an H200: the losses must trace whole, without graph breaks.
    configs = [ToyTrainConfig(arch=arch, n_block=3, seed=seed, steps=1, **TINY) for seed in (1, 2)]
    stack = toy_stack.ToyStack(configs, [tmp_path / "a", tmp_path / "b"], None)
    explanation = torch._dynamo.explain(stack._stacked_losses)(stack.params, stack.buffers, *stack.next_batches())
    for run in stack.runs:
        run.log.close()
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons


def signal_at_step(monkeypatch, step, name="SIGTERM"):
    """Send signal `name` to this process inside optimiser step number `step` (after its backward)."""
    real_step, calls = torch.optim.AdamW.step, []

    def step_signalled_once(optimizer, *args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), getattr(signal, name))
        return real_step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_signalled_once)


def without_times(path):
    return [{k: v for k, v in line.items() if k != "elapsed_s"} for line in lines(path)]


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_saves_every_runs_state_and_the_resumed_stack_equals_an_uninterrupted_one(tmp_path, monkeypatch,
                                                                                            name):
    configs = [ToyTrainConfig(arch="mta", n_block=n, seed=seed, steps=7, eval_every=2, log_every=3,
                              **{**TINY, "model": dict(dim=16, n_layers=1)})  # attention dropout 0.1
               for n, seed in ((3, 1), (4, 2))]
    straight = train_toy_stack(configs, [tmp_path / "a0", tmp_path / "a1"], progress=False)
    signal_at_step(monkeypatch, 4, name)
    runs = [tmp_path / "r0", tmp_path / "r1"]
    stopped = train_toy_stack(configs, runs, progress=False)
    assert [(r["stopped"], r["steps"]) for r in stopped] == [("interrupted", 4)] * 2  # the step was finished
    assert all([d.name for d in (run / "checkpoints").iterdir()] == ["step-00000004"] for run in runs)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are put back
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=r"stacked runs .*mta toy sweep --resume"):
        train_toy(configs[0], runs[0], progress=False, resume=True)
    resumed = train_toy_stack(configs, runs, progress=False, resume=True)
    for i, run in enumerate(runs):
        assert resumed[i]["steps"] == 7 and resumed[i]["stopped"] == "max_steps"
        assert resumed[i]["final_token_error_pct"] == straight[i]["final_token_error_pct"]
        assert without_times(run / "metrics.jsonl") == without_times(tmp_path / f"a{i}" / "metrics.jsonl")
        w_resumed, w_straight = weights(run), weights(tmp_path / f"a{i}")
        assert all(torch.equal(w_resumed[name], w_straight[name]) for name in w_straight)
        assert not list((run / "checkpoints").iterdir())  # ended by the protocol: state removed


def test_a_resumed_stack_keeps_the_runs_that_had_ended(tmp_path, monkeypatch):
    # Run 1 (N = 4, the longer samples that set the padding) is solved at step 4, the stack is stopped at step 6.
    configs = [ToyTrainConfig(arch="mta", n_block=n, seed=seed, steps=8, eval_every=2, patience=2, **TINY)
               for n, seed in ((3, 5), (4, 6))]
    solved_from_the_start(monkeypatch, 6)
    straight = train_toy_stack(configs, [tmp_path / "a0", tmp_path / "a1"], progress=False)
    runs = [tmp_path / "r0", tmp_path / "r1"]
    with monkeypatch.context() as patch:
        signal_at_step(patch, 6)
        stopped = train_toy_stack(configs, runs, progress=False)
    assert [(r["stopped"], r["steps"]) for r in stopped] == [("interrupted", 6), ("solved", 4)]
    resumed = train_toy_stack(configs, runs, progress=False, resume=True)
    assert resumed[1] == json.loads(json.dumps(stopped[1]))  # read back from its result.json
    assert (resumed[0]["stopped"], resumed[0]["steps"]) == ("max_steps", 8)
    assert without_times(runs[0] / "metrics.jsonl") == without_times(tmp_path / "a0" / "metrics.jsonl")
    w_resumed, w_straight = weights(runs[0]), weights(tmp_path / "a0")
    assert all(torch.equal(w_resumed[name], w_straight[name]) for name in w_straight)
    assert resumed[0]["final_token_error_pct"] == straight[0]["final_token_error_pct"]


def test_resume_with_nothing_to_resume_is_an_error_unless_starting_afresh(tmp_path):
    configs = [ToyTrainConfig(arch="transformer", n_block=3, seed=seed, steps=2, eval_every=2, **TINY)
               for seed in (1, 2)]
    runs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ValueError, match="resume: none of the 2 run directories .* --resume-or-start"):
        train_toy_stack(configs, runs, progress=False, resume=True)
    fresh = train_toy_stack(configs, runs, progress=False, resume=True, missing_ok=True)
    assert [r["stopped"] for r in fresh] == ["max_steps"] * 2
    capped = train_toy_stack(configs, runs, progress=False, max_minutes=0.0)  # leaves states at step 1
    assert [r["stopped"] for r in capped] == ["time_limit"] * 2
    more = [*configs, ToyTrainConfig(arch="transformer", n_block=3, seed=3, steps=2, eval_every=2, **TINY)]
    with pytest.raises(ValueError, match="c holds neither a training state nor a finished run"):
        train_toy_stack(more, [*runs, tmp_path / "c"], progress=False, resume=True)
    assert [r["steps"] for r in train_toy_stack(configs, runs, progress=False, resume=True)] == [2, 2]
