"""`mta convert` (native checkpoint <-> transformers directory) and `mta retrofit` (a tiny random LlamaForCausalLM
built locally -> MTA with identity kernels): the same logits, the same generated tokens, clear refusals."""

import pytest

from mta.models.hf_support import transformers_supported

if not transformers_supported():
    pytest.skip("needs transformers 5.x (pip install 'multi-token-attention[hf]')", allow_module_level=True)

import json  # noqa: E402

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from mta.cli import main  # noqa: E402
from mta.models import DecoderLM, get_preset  # noqa: E402
from mta.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mta.models.hf import FIELDS, MTAForCausalLM  # noqa: E402
from mta.models.retrofit import LLAMA_FIELDS, retrofit_config  # noqa: E402
from mta.train.checkpoint_state import checkpoint_dir  # noqa: E402

VOCAB = 67


def run_cli(argv, capsys):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_native_to_hf_and_back(tmp_path, capsys):
    torch.manual_seed(0)
    native = DecoderLM(get_preset("tiny-mta", n_layers=3, n_kv_heads=2, tie_embeddings=False)).eval()
    with torch.no_grad():
        for name, param in native.named_parameters():
            if ".kernel_" in name or ".head_mix_" in name:
                param.add_(torch.randn_like(param) * 0.3)
    save_checkpoint(native, tmp_path / "native")
    assert run_cli(["convert", "--from", str(tmp_path / "native"), "--out", str(tmp_path / "hf")], capsys)["format"] == "hf"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(hf, MTAForCausalLM) and hf.model.config == native.config
    tokens = torch.randint(native.config.vocab_size, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, native(tokens), rtol=1e-6, atol=1e-6)

    assert run_cli(["convert", "--from", str(tmp_path / "hf"), "--out", str(tmp_path / "back")], capsys)["format"] == "native"
    back = load_checkpoint(tmp_path / "back")
    assert back.config == native.config
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), native.state_dict().values()))


def tiny_llama(tie: bool = False, **overrides) -> LlamaForCausalLM:
    """Random weights of std 0.3 (Llama's default 0.02 makes attention nearly uniform, hiding RoPE mistakes)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.3, rms_norm_eps=1e-6,
                         tie_word_embeddings=tie, rope_parameters={"rope_type": "default", "rope_theta": 500.0},
                         bos_token_id=1, eos_token_id=None, pad_token_id=0, **overrides)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_retrofit_keeps_the_logits_and_generated_tokens(tie, tmp_path, capsys):
    llama = tiny_llama(tie)
    llama.save_pretrained(tmp_path / "llama")
    report = run_cli(["retrofit", "--from", str(tmp_path / "llama"), "--out", str(tmp_path / "mta"),
                      "--mta-layers", "0,1"], capsys)
    assert report["same_function"] and report["qk_conv_layers"] == [0, 1]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "mta").eval()
    assert isinstance(model, MTAForCausalLM)
    config = model.config
    assert (config.pre_kernel, config.post_kernel, config.pre_mix_group) == ([6, 11], [6, 11], 4)
    assert config.rope_theta == 500.0 and config.rms_norm_eps == 1e-6 and config.tie_word_embeddings == tie
    kernel = model.model.layers[1].attention.kernel_post
    assert kernel[:, 5, 5].eq(1).all() and kernel.sum() == kernel.shape[0]  # identity

    tokens = torch.randint(VOCAB, (2, 14))
    with torch.no_grad():
        expected = llama(tokens).logits
        torch.testing.assert_close(model(tokens).logits, expected, rtol=1e-5, atol=5e-5)
    ids = torch.tensor([[0, 0, 0, 5, 9, 13, 2, 40], [3, 8, 21, 60, 7, 7, 1, 30]])
    mask = (torch.arange(8) >= torch.tensor([[3], [0]])).long()
    kwargs = dict(attention_mask=mask, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    assert torch.equal(model.generate(ids, **kwargs), llama.generate(ids, **kwargs))

    run_cli(["convert", "--from", str(tmp_path / "mta"), "--out", str(tmp_path / "native")], capsys)
    native = load_checkpoint(tmp_path / "native")  # what the training pipeline continues from
    with torch.no_grad():
        torch.testing.assert_close(native(tokens), model(tokens).logits, rtol=1e-6, atol=1e-6)


def test_retrofit_options_group_norm_and_gate_change_the_function(tmp_path, capsys):
    llama = tiny_llama()
    llama.save_pretrained(tmp_path / "llama")
    report = run_cli(["retrofit", "--from", str(tmp_path / "llama"), "--out", str(tmp_path / "mta"),
                      "--pre-kernel", "2,3", "--post-kernel", "none", "--no-head-mix", "--group-norm", "--gate"], capsys)
    assert not report["same_function"] and report["qk_conv_layers"] == []  # default 2, 6, …: none in 2 layers
    config = AutoModelForCausalLM.from_pretrained(tmp_path / "mta").config
    assert config.pre_kernel == [2, 3] and config.post_kernel is None and config.pre_mix_group is None
    assert config.group_norm and config.gate


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(attention_bias=True), "^attention_bias: got True"),
        (dict(mlp_bias=True), "^mlp_bias: got True"),
        (dict(hidden_act="gelu"), "^hidden_act: got 'gelu'"),
        (dict(head_dim=16), "^head_dim: got 16, expected hidden_size / num_attention_heads = 8"),
    ],
)
def test_retrofit_refuses_what_the_decoder_cannot_represent(overrides, message):
    config = tiny_llama().config
    for name, value in overrides.items():
        setattr(config, name, value)
    with pytest.raises(ValueError, match=message):
        retrofit_config(config)


def test_retrofit_config_takes_every_field_llama_shares():
    """Every MTAConfig field a LlamaConfig also has, and the special tokens, come from the Llama (RoPE's base from
    rope_parameters): a field added to MTAConfig that Llama has cannot be left at its default."""
    llama = tiny_llama().config
    shared = {name for name in FIELDS if name in llama.to_dict()} - {"rope_theta"}
    assert set(LLAMA_FIELDS) == shared | {"bos_token_id", "eos_token_id", "pad_token_id"}
    config = retrofit_config(llama)
    for name in LLAMA_FIELDS:
        assert getattr(config, name) == getattr(llama, name), name
    assert config.rope_theta == 500.0


def test_retrofit_refuses_rope_scaling():
    config = tiny_llama().config
    config.rope_parameters = {"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}
    with pytest.raises(ValueError, match="^rope_parameters: RoPE scaling 'linear'"):
        retrofit_config(config)


def test_convert_names_a_llama_directory_and_a_missing_one(tmp_path, capsys):
    tiny_llama().save_pretrained(tmp_path / "llama")
    with pytest.raises(SystemExit):
        main(["convert", "--from", str(tmp_path / "llama"), "--out", str(tmp_path / "x")])
    assert "a transformers 'llama' model, not 'mta'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "--from", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "--from: " in capsys.readouterr().err


def test_convert_takes_a_run_directory_as_its_newest_checkpoint(tmp_path, capsys):
    for step in (1, 2):
        torch.manual_seed(step)
        save_checkpoint(DecoderLM(get_preset("tiny-mta", n_layers=3)), checkpoint_dir(tmp_path / "run", step))
    report = run_cli(["convert", "--from", str(tmp_path / "run"), "--out", str(tmp_path / "hf")], capsys)
    assert report["from"] == str(checkpoint_dir(tmp_path / "run", 2)) and report["format"] == "hf"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    newest = load_checkpoint(checkpoint_dir(tmp_path / "run", 2))
    assert torch.equal(hf.model.tok_embeddings.weight, newest.tok_embeddings.weight)
