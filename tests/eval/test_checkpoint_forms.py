"""`mta eval ppl | needle | babi` and `mta toy eval` accept the same forms of --checkpoint (resolve_checkpoint): a
checkpoint directory itself, or a training run directory, meaning its newest checkpoints/step-*/; a directory with
neither is a usage error naming the argument."""

import json

import pytest
import torch

from mta.cli import main
from mta.data import toy
from mta.models import DecoderLM, get_preset, save_checkpoint
from mta.train.checkpoint_state import checkpoint_dir

SETTINGS = {
    "ppl": ["--windows", "2", "--seq-len", "64"],
    "needle": ["--needles", "2", "--depths", "0", "--lengths", "128", "--samples", "1"],
    "babi": ["--tasks", "qa1", "--lengths", "0", "--samples", "1"],
}


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """{"checkpoint": a checkpoint directory, "run": a run directory whose newest checkpoint is another model}."""
    root = tmp_path_factory.mktemp("forms")
    config = get_preset("tiny-transformer", vocab_size=600, dim=32, n_layers=1, max_seq_len=256)
    for seed, directory in enumerate([root / "checkpoint", checkpoint_dir(root / "run", 1),
                                      checkpoint_dir(root / "run", 2)]):
        torch.manual_seed(seed)
        save_checkpoint(DecoderLM(config), directory)
    return {"checkpoint": (root / "checkpoint", root / "checkpoint"), "run": (root / "run", checkpoint_dir(root / "run", 2))}


@pytest.mark.parametrize("form", ["checkpoint", "run"])
@pytest.mark.parametrize("command", sorted(SETTINGS))
def test_evals_accept_a_checkpoint_and_a_run_directory(forms, corpus, capsys, command, form):
    given, newest = forms[form]
    assert main(["eval", command, "--checkpoint", str(given), "--data", str(corpus), *SETTINGS[command],
                 "--device", "cpu", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"] == str(newest)


@pytest.mark.parametrize("command", [*sorted(SETTINGS), "toy"])
def test_a_directory_without_a_checkpoint_names_the_argument(tmp_path, corpus, capsys, command):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    argv = ["eval", command] if command != "toy" else ["toy", "eval"]
    data = corpus if command != "toy" else tmp_path / "samples.jsonl"
    toy.write_jsonl([{"src": "a#a", "tgt": "a"}], tmp_path / "samples.jsonl")
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--checkpoint", str(tmp_path / "empty"), "--data", str(data), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "--checkpoint: " in capsys.readouterr().err


@pytest.mark.parametrize("form", ["checkpoint", "run"])
def test_toy_eval_accepts_a_checkpoint_and_a_run_directory(tmp_path, capsys, form):
    config = get_preset("toy-transformer", dim=16, n_layers=1)
    root = tmp_path / form
    save_checkpoint(DecoderLM(config), root if form == "checkpoint" else checkpoint_dir(root, 3))
    toy.write_jsonl(toy.generate(3, 2, "all", 2, seed=9, num_blocks=3), tmp_path / "samples.jsonl")
    assert main(["toy", "eval", "--checkpoint", str(root), "--data", str(tmp_path / "samples.jsonl"),
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 2
