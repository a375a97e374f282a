"""Checkpoints: a save/load round trip gives the same logits; broken checkpoints raise a clear CheckpointError,
a failed save leaves no checkpoint that loads as a model it is not."""

import json
import os
from pathlib import Path

import pytest
import torch

from mta.models import DecoderLM, get_preset
from mta.models import checkpoint
from mta.models.checkpoint import (CONFIG_FILE, WEIGHTS_FILE, CheckpointError, CheckpointWriteError, load_checkpoint,
                                   save_checkpoint)


def perturbed(preset, **overrides):
    """A model of `preset` whose kernels and mixers are off identity, so every weight matters."""
    torch.manual_seed(0)
    model = DecoderLM(get_preset(preset, **overrides)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".kernel_" in name or ".head_mix_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    return model


@pytest.mark.parametrize("preset,overrides", [("toy-mta", {}), ("tiny-mta", {"tie_embeddings": False})])
def test_round_trip_gives_identical_logits(tmp_path, preset, overrides):
    model = perturbed(preset, **overrides)
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    assert not loaded.training
    tokens = torch.randint(model.config.vocab_size, (2, 20))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]  # no temp files


def test_tied_output_stays_tied(tmp_path):
    save_checkpoint(perturbed("toy-transformer"), tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.output is None and loaded.config.tie_embeddings


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_checkpoint(tmp_path / "nowhere")
    save_checkpoint(perturbed("toy-mta"), tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="model.safetensors not found"):
        load_checkpoint(tmp_path)


def test_corrupt_weights(tmp_path):
    save_checkpoint(perturbed("toy-mta"), tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_checkpoint(tmp_path)


def test_truncated_weights(tmp_path):
    save_checkpoint(perturbed("toy-mta"), tmp_path)
    data = (tmp_path / WEIGHTS_FILE).read_bytes()
    (tmp_path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_checkpoint(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    del config["weights_sha256"]  # a checkpoint from before the checksum: safetensors finds the damage
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unreadable or corrupt"):
        load_checkpoint(tmp_path)


def test_a_flipped_byte_in_the_weights_is_reported(tmp_path):
    save_checkpoint(perturbed("toy-mta"), tmp_path)
    data = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0x10  # inside a tensor: safetensors alone would load it
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors does not match the SHA-256 in config.json"):
        load_checkpoint(tmp_path)


def test_a_save_cut_between_its_files_is_not_loaded_as_either_model(tmp_path, monkeypatch):
    save_checkpoint(perturbed("toy-mta"), tmp_path)  # an existing directory: the files are moved in one by one
    real_replace = os.replace

    def replace_weights_only(source, target):
        if Path(target).name == CONFIG_FILE:
            raise OSError("disk unplugged")
        real_replace(source, target)

    monkeypatch.setattr(checkpoint.os, "replace", replace_weights_only)
    with pytest.raises(CheckpointWriteError, match="could not be written.*disk unplugged"):
        save_checkpoint(perturbed("toy-mta", dim=128, n_heads=2), tmp_path)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_checkpoint(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]  # no temporary left


def test_a_new_checkpoint_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    def full_disk(model, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint, "save_model", full_disk)
    with pytest.raises(CheckpointWriteError, match=r"ckpt: could not be written \(\[enforce.*\); \d+ MiB free"):
        save_checkpoint(perturbed("toy-mta"), tmp_path / "ckpt")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_config(tmp_path):
    save_checkpoint(perturbed("toy-mta"), tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not a valid model config"):
        load_checkpoint(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"dim": 8, "colour": "red"}))
    with pytest.raises(CheckpointError, match="not a valid model config"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("change", [{"dim": 128}, {"n_layers": 5}, {"attention": "transformer", "pre_kernel": None}])
def test_weights_that_do_not_match_the_config(tmp_path, change):
    save_checkpoint(perturbed("toy-mta"), tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match="weights do not match config.json"):
        load_checkpoint(tmp_path)
