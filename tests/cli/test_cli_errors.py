"""Bad command lines and broken inputs end in a message naming the argument (exit status 2) or the failure
(exit status 1), never a traceback or a silently wrong answer."""

import json

import numpy as np
import pytest
import torch

from mta.cli import main
from mta.data import toy
from mta.data.corpus import load_manifest
from mta.models import DecoderLM, get_preset
from mta.models import checkpoint
from mta.models.checkpoint import save_checkpoint
from train.test_lm import TINY as LM_TINY
from train.test_lm import write_dataset

TOY = ["--n-block", "3", "--num-blocks", "3", "--steps", "2", "--batch-size", "4", "--warmup", "1",
       "--eval-every", "2", "--eval-samples", "4", "--dim", "16", "--layers", "1", "--no-progress"]


def exit_of(argv, capsys):
    """(exit status, stderr) of `mta *argv`."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("command", [["toy", "train"], ["toy", "sweep"], ["train", "--preset", "tiny-mta", "--data", "d"],
                                     ["data", "prepare"], ["convert", "--from", "x"], ["retrofit", "--from", "x"]])
def test_an_out_that_cannot_be_created_is_a_usage_error(tmp_path, capsys, command):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = exit_of([*command, "--out", str(blocker)], capsys)
    assert code == 2 and f"argument --out: {blocker} exists and is not a directory" in err
    code, err = exit_of([*command, "--out", str(blocker / "run")], capsys)
    assert code == 2 and f"argument --out: cannot create {blocker / 'run'}: {blocker} is a file" in err


def test_convert_and_prepare_refuse_a_directory_that_holds_files(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = exit_of(["convert", "--from", str(tmp_path / "x"), "--out", str(out)], capsys)
    assert code == 2 and "--out: " in err and "not empty" in err and "--overwrite" in err
    code, err = exit_of(["data", "prepare", "--text", f"a={tmp_path / 'a.txt'}", "--out", str(out)], capsys)
    assert code == 2 and "not empty" in err and (out / "keep.txt").read_text() == "mine"


def test_toy_eval_of_missing_data_names_the_argument(tmp_path, capsys):
    code, err = exit_of(["toy", "eval", "--checkpoint", str(tmp_path), "--data", str(tmp_path / "missing.jsonl")],
                        capsys)
    assert code == 2 and f"--data: {tmp_path / 'missing.jsonl'} is not a file" in err


def test_toy_eval_warns_about_data_of_another_task(tmp_path, capsys):
    run = tmp_path / "run"  # what `mta toy train` leaves: a checkpoint and result.json (N = 3, "all", L = 2)
    save_checkpoint(DecoderLM(get_preset("toy-mta", dim=16, n_layers=1, n_heads=2)), run)
    (run / "result.json").write_text(json.dumps({"n_block": 3, "variant": "all", "n_query": 2}))
    same, other = tmp_path / "same.jsonl", tmp_path / "other.jsonl"
    toy.write_jsonl(toy.generate(3, 2, "all", 4, seed=1, num_blocks=3), same)
    toy.write_jsonl(toy.generate(4, 2, "last", 4, seed=1, num_blocks=3), other)
    assert main(["toy", "eval", "--checkpoint", str(run), "--data", str(same), "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["toy", "eval", "--checkpoint", str(run), "--data", str(other), "--device", "cpu"]) == 0
    assert ("warning: --data is not the task the checkpoint was trained on (N: trained 3, data 4; target length: "
            "trained 3, data 1)") in capsys.readouterr().err


def test_a_shard_of_random_bytes_is_reported_before_training(tmp_path, capsys):
    data = write_dataset(tmp_path / "data")
    shard = data / "b.train.bin"
    np.random.default_rng(0).integers(0, 2**16, shard.stat().st_size // 2).astype("<u2").tofile(shard)
    argv = ["train", "--preset", "tiny-mta", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress",
            *[arg for item in [*LM_TINY, "steps=2"] for arg in ("--set", item)]]
    code, err = exit_of(argv, capsys)
    assert code == 2 and "data: domain 'b' of" in err and "outside the vocabulary of 64" in err


def test_manifest_paths_must_stay_inside_the_corpus(tmp_path):
    data = write_dataset(tmp_path / "data")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["domains"]["a"]["files"]["val"] = "../../etc/passwd"
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"domain 'a' split 'val': shard '../../etc/passwd' lies outside"):
        load_manifest(data)
    manifest["tokenizer"] = "/etc/hostname"
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"tokenizer '/etc/hostname' lies outside the corpus directory"):
        load_manifest(data)


def test_a_full_disk_while_saving_is_a_message_not_an_assertion(tmp_path, capsys, monkeypatch):
    def full_disk(model, path):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint, "save_model", full_disk)
    torch.manual_seed(0)
    code, err = exit_of(["toy", "train", *TOY, "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and "mta toy: error: checkpoint" in err and "could not be written ([enforce fail" in err
    assert "MiB free on its disk" in err and "Traceback" not in err
