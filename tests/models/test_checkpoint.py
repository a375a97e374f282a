"""Checkpoints: a save/load round trip gives the same logits; broken checkpoints raise a clear CheckpointError."""

import json

import pytest
import torch

from mta.models import DecoderLM, get_preset
from mta.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, load_checkpoint, save_checkpoint


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
    with pytest.raises(CheckpointError, match="unreadable or corrupt"):
        load_checkpoint(tmp_path)


def test_truncated_weights(tmp_path):
    save_checkpoint(perturbed("toy-mta"), tmp_path)
    data = (tmp_path / WEIGHTS_FILE).read_bytes()
    (tmp_path / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable or corrupt"):
        load_checkpoint(tmp_path)


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
