"""The command line in-process: `mta toy train`, `mta toy eval`, `mta demo`, `mta backends` and `mta info`, with tiny
settings."""

import argparse
import dataclasses
import json
import os
import signal

import pytest
import torch

import mta
from mta.cli import build_parser, main
from mta.cli.demo import DEMO
from mta.cli.toy import add_train_arguments, train_config_from_args
from mta.data import toy
from mta.train import ToyTrainConfig

TINY = ["--n-block", "3", "--num-blocks", "3", "--steps", "4", "--batch-size", "4", "--warmup", "2",
        "--eval-every", "2", "--eval-samples", "4", "--dim", "16", "--layers", "1", "--no-progress"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"mta {mta.__version__}\n"


def test_toy_train_defaults_are_the_papers():
    args = build_parser().parse_args(["toy", "train", "--out", "x"])
    assert (args.arch, args.variant, args.n_block, args.n_query, args.seed) == ("mta", "all", 5, 2, 42)
    assert (args.steps, args.batch_size, args.lr, args.warmup, tuple(args.betas)) == (100_000, 64, 1e-4, 1000,
                                                                                      (0.9, 0.98))
    assert (args.dim, args.layers, args.heads, args.dropout, args.patience) == (256, 4, 2, 0.1, 3)
    assert args.num_blocks is None  # resolved from --n-block / --n-query


def test_toy_train_flags_give_back_every_config_field():
    """A config's flags (add_train_arguments with it as the defaults) parse back to it: every ToyTrainConfig field
    is read from its flag, none is copied by hand."""
    config = ToyTrainConfig(arch="transformer", variant="first", n_block=4, n_query=3, num_blocks=5, seed=7, steps=11,
                            batch_size=3, lr=2e-3, warmup=5, betas=(0.8, 0.9), weight_decay=0.1, grad_clip=1.0,
                            eval_every=6, eval_samples=9, eval_seed=123, patience=2, log_every=4, device="cpu",
                            precision="fp32", data="tensor", compile="default",
                            model=dict(dim=32, n_layers=3, n_heads=4, dropout=0.2, backend="reference"))
    defaults = ToyTrainConfig()
    assert all(getattr(config, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(ToyTrainConfig))
    parser = argparse.ArgumentParser()
    add_train_arguments(parser, config)
    args = parser.parse_args(["--eval-seed", "123"])  # its default is always None: seed + 1000
    assert train_config_from_args(args, config.arch) == config


def test_toy_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["toy", "train", "--arch", "mta", "--kernel", "2", "5", *TINY, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 4 and summary["arch"] == "mta"
    result = json.loads((out / "result.json").read_text())
    assert result["model_config"]["pre_kernel"] == [2, 5] and result["train_config"]["lr"] == 1e-4

    data = tmp_path / "test.jsonl"
    toy.write_jsonl(toy.generate(3, 2, "all", 5, seed=9, num_blocks=3) + [{"src": "ab.cd#ba", "tgt": "ab"}], data)
    assert main(["toy", "eval", "--checkpoint", str(out), "--data", str(data), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 6
    assert set(report) == {"samples", "sequence_error_pct", "token_error_pct", "position_error_pct",
                           "sequence_error_pct_by_reach"}
    assert sum(row["samples"] for row in report["sequence_error_pct_by_reach"]) == 6
    assert len(report["position_error_pct"]) == 3  # the longest target, "all" at N = 3


def test_toy_train_resume_goes_on_and_refuses_other_settings(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["toy", "train", *TINY, "--max-minutes", "0", "--out", out]) == 0
    assert json.loads(capsys.readouterr().out)["stopped"] == "time_limit"
    with pytest.raises(SystemExit, match=r"mta toy train: resume from .*step-00000001: .*lr: 0.0001 -> 0.001"):
        main(["toy", "train", *TINY, "--lr", "1e-3", "--resume", "--out", out])
    assert main(["toy", "train", *TINY, "--resume", "--out", out]) == 0
    assert json.loads(capsys.readouterr().out)["stopped"] == "max_steps"
    assert json.loads((tmp_path / "run" / "result.json").read_text())["resumed_at"] == [1]


def test_toy_eval_reports_a_missing_checkpoint(tmp_path, capsys):
    data = tmp_path / "test.jsonl"
    toy.write_jsonl([{"src": "a#a", "tgt": "a"}], data)
    with pytest.raises(SystemExit) as exit_info:
        main(["toy", "eval", "--checkpoint", str(tmp_path / "none"), "--data", str(data)])
    assert exit_info.value.code == 2
    assert "--checkpoint: " in capsys.readouterr().err


def test_demo_runs_both_architectures(tmp_path, capsys):
    assert main(["demo", *TINY, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "transformer" in printed and "mta" in printed and "sequence error %" in printed
    for arch in ("transformer", "mta"):
        assert json.loads((tmp_path / arch / "result.json").read_text())["steps"] == 4


def test_demo_defaults_are_the_demo_setting():
    args = build_parser().parse_args(["demo"])
    assert (args.n_block, args.num_blocks, args.steps, args.dim) == (DEMO.n_block, DEMO.num_blocks, DEMO.steps,
                                                                     DEMO.model["dim"])


def test_backends_command(capsys):
    assert main(["backends", "--steps", "1", "--batch", "1", "--seq-len", "8", "--cost-lengths", "16"]) == 0
    assert "mta chunked" in capsys.readouterr().out


def test_the_committed_demo_run_renders():
    """results/toy_demo holds what `mta demo --out results/toy_demo` wrote; render_docs reads both runs."""
    from benchmark_scripts import load_benchmark

    render = load_benchmark("render_docs")
    load, make_table = render.TABLES["toy_demo"]
    runs = load()
    assert sorted(run["arch"] for run in runs) == ["mta", "transformer"]
    table = make_table(runs)
    assert table.splitlines()[2].startswith("| transformer |") and table.splitlines()[3].startswith("| mta |")
    assert f"seed {DEMO.seed}" in table and f"{DEMO.eval_samples} held-out samples" in table


def test_info_reports_the_host(capsys):
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backends"] and report["cpu_model"] and report["cpu_capability"]
    main(["info"])
    assert "cpu_capability: " in capsys.readouterr().out


def test_toy_sweep_saves_on_a_signal_and_resumes(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "sweep")
    sweep = ["toy", "sweep", *TINY, "--seed", "1", "2", "--data", "tensor", "--out", out]
    with pytest.raises(SystemExit) as exit_info:
        main([*sweep, "--resume"])
    assert exit_info.value.code == 2 and "--resume-or-start starts afresh" in capsys.readouterr().err

    real_step, calls = torch.optim.AdamW.step, []

    def step_signalled_once(optimizer, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_signalled_once)
    with pytest.raises(SystemExit) as exit_info:
        main(sweep)
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert f"the training states of 2 runs are in {out}/*/checkpoints/ (step-00000002), and --resume" in err
    assert (tmp_path / "sweep" / "mta-N3-all-s1" / "checkpoints" / "step-00000002").is_dir()
    monkeypatch.undo()
    assert main([*sweep, "--resume"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("mta-N3-all-s1: max_steps at step 4")
