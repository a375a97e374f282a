"""The language-model training config: the paper's defaults (docs/spec.md §3), `--set key=value` parsing,
and errors that name the key before anything is computed."""

import pytest

from mta.cli import main
from mta.train import LMTrainConfig


def test_defaults_are_the_papers():
    config = LMTrainConfig("tiny-mta", "data")
    assert (config.lr, config.betas, config.eps, config.weight_decay) == (1.5e-4, (0.9, 0.98), 1e-8, 0.05)
    assert (config.warmup, config.grad_clip, config.precision, config.parallel) == (375, 1.0, "auto", "auto")
    assert config.seq_len == 128  # the preset's max_seq_len (2048 for the paper's sizes)
    assert LMTrainConfig("880M-mta", "data", steps=1000).seq_len == 2048


def test_overrides_parse_json_values_and_model_fields():
    config = LMTrainConfig.from_overrides("tiny-mta", "data", [
        "lr=3e-4", "betas=[0.9, 0.95]", "grad_clip=null", "precision=bf16", 'mixture={"a": 2, "b": 1}',
        "compile=true", "model.dim=32", "model.n_layers=3", "model.pre_kernel=[2, 3]", "seq_len=64"])
    assert (config.lr, config.betas, config.grad_clip, config.precision) == (3e-4, (0.9, 0.95), None, "bf16")
    assert config.mixture == {"a": 2, "b": 1} and config.compile is True and config.seq_len == 64
    model = config.model_config(vocab_size=100)
    assert (model.dim, model.n_layers, model.pre_kernel, model.vocab_size) == (32, 3, (2, 3), 100)
    assert config.to_dict()["betas"] == [0.9, 0.95]
    pinned = LMTrainConfig.from_overrides("tiny-mta", "data", ["model.vocab_size=300"])
    assert pinned.model_config(vocab_size=100).vocab_size == 300  # an explicit model.vocab_size wins


@pytest.mark.parametrize("assignment, key", [
    ("foo=1", "foo"),
    ("model.bogus=1", "model.bogus"),
    ("model.n_heads=3", "model.n_heads"),  # 64 is not divisible by 3
    ("model.qk_conv_layers=[7]", "model.qk_conv_layers"),
    ("seq_len=4096", "seq_len"),
    ("steps=abc", "steps"),
    ("warmup=20000", "warmup"),
    ("betas=[0.9]", "betas"),
    ("precision=fp8", "precision"),
    ("parallel=tp", "parallel"),
    ("mixture={\"a\": -1}", "mixture"),
    ("lr=0", "lr"),
    ("no_equals_sign", "--set"),
])
def test_errors_name_the_key(assignment, key):
    with pytest.raises(ValueError, match=rf"^{key}"):
        LMTrainConfig.from_overrides("tiny-mta", "data", [assignment])


def test_unknown_preset_names_the_preset_key():
    with pytest.raises(ValueError, match="^preset: unknown preset 'huge'"):
        LMTrainConfig("huge", "data")


def test_cli_rejects_a_bad_key_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "tiny-mta", "--data", str(tmp_path), "--out", str(out),
              "--set", "model.n_heads=5"])
    assert exit_info.value.code == 2
    assert "mta train: error: model.n_heads: got 5, expected a divisor of dim=64" in capsys.readouterr().err
    assert not out.exists()
