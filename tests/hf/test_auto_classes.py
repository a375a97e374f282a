"""MTAConfig / MTAForCausalLM through transformers' Auto classes: save_pretrained (safetensors) and from_pretrained
round trips with identical logits for every family, the paper's recipe as defaults, errors naming the field."""

import pytest

from mta.models.hf_support import transformers_supported

if not transformers_supported():
    pytest.skip("needs transformers 5.x (pip install 'multi-token-attention[hf]')", allow_module_level=True)

import dataclasses  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from hf_cases import VOCAB, tiny_config, tiny_model  # noqa: E402
from mta.models import get_preset  # noqa: E402
from mta.models.hf import MTAConfig, MTAForCausalLM  # noqa: E402

FAMILIES = ("transformer", "talking_heads", "diff", "mta")


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_reload_through_auto_classes_gives_identical_logits(family, tmp_path):
    model = tiny_model(tiny_config(family))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "mta" and saved["architectures"] == ["MTAForCausalLM"]

    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, MTAConfig) and config.to_model_config() == model.config.to_model_config()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()
    assert isinstance(reloaded, MTAForCausalLM)
    tokens = torch.randint(VOCAB, (2, 9))
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))
    # Equal weights; float64 kernels may still round differently for differently aligned memory.
    torch.testing.assert_close(reloaded(tokens).logits, model(tokens).logits, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_defaults_are_the_papers_880m_presets(family):
    assert MTAConfig(attention_type=family).to_model_config() == get_preset(f"880M-{family}")


def test_mta_defaults_follow_the_heads_and_layers():
    config = MTAConfig(hidden_size=64, num_hidden_layers=7, num_attention_heads=4)
    assert config.pre_mix_group == config.post_mix_group == 4 and config.qk_conv_layers == [2, 6]
    assert config.pre_kernel == config.post_kernel == [6, 11] and config.group_norm and config.gate
    assert MTAConfig(pre_kernel=None, post_kernel=None).qk_conv_layers is None


def test_from_model_config_round_trip():
    native = get_preset("tiny-mta", n_kv_heads=2, tie_embeddings=False)
    assert MTAConfig.from_model_config(native).to_model_config() == native


@pytest.mark.parametrize(
    "fields,message",
    [
        (dict(num_attention_heads=5, num_key_value_heads=5), "^num_attention_heads: got 5.*hidden_size=32"),
        (dict(num_key_value_heads=3), "^num_key_value_heads: got 3.*num_attention_heads=4"),
        (dict(attention_type="linear"), "^attention_type: got 'linear'"),
        (dict(attention_type="transformer", gate=True), "^gate: got True, but only attention_type='mta'"),
        (dict(pre_kernel=[3, 4]), r"^pre_kernel: got \(c_q=3, c_k=4\)"),
        (dict(max_position_embeddings=0), "^max_position_embeddings: got 0"),
    ],
)
def test_invalid_fields_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**fields)


def test_checkpoint_missing_weights_is_refused(tmp_path):
    model = tiny_model(tiny_config())
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.1.attention.kernel_post"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"^checkpoint: weights do not match.*model\.layers\.1\.attention\.kernel_post"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_labels_give_the_shifted_cross_entropy():
    model = tiny_model(tiny_config())
    tokens = torch.randint(VOCAB, (2, 9))
    labels = tokens.clone()
    labels[0, :3] = -100
    out = model(tokens, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())
    torch.testing.assert_close(out.loss, expected)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(model(tokens, logits_to_keep=2).logits, out.logits[:, -2:], rtol=1e-12, atol=1e-12)


def test_config_json_holds_the_native_fields():
    fields = {f.name for f in dataclasses.fields(get_preset("tiny-mta"))}
    from mta.models.hf import FIELDS

    assert set(FIELDS.values()) == fields  # every ModelConfig field has an MTAConfig name


def test_import_mta_registers_the_auto_classes_without_importing_transformers(tmp_path):
    """`import mta` leaves transformers unimported; importing transformers afterwards registers the Auto classes."""
    tiny_model(tiny_config("mta")).save_pretrained(tmp_path)
    script = f"""
import sys
import mta
assert "transformers" not in sys.modules, "imported transformers"
from transformers import AutoModelForCausalLM
print(type(AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})).__name__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["MTAForCausalLM"]


def test_import_mta_without_transformers():
    """`import mta` works without transformers; mta.models.hf then names the [hf] extra."""
    script = """
import importlib.metadata as metadata
real = metadata.version
def version(name):
    if name == "transformers":
        raise metadata.PackageNotFoundError(name)
    return real(name)
metadata.version = version
import sys
import mta
assert "transformers" not in sys.modules, "imported transformers"
try:
    import mta.models.hf
except ImportError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "pip install 'multi-token-attention[hf]'" in result.stdout
