"""DecoderLM: every family trains on CPU, is causal, and has the paper's parameter counts (docs/spec.md §3)."""

import pytest
import torch
import torch.nn.functional as F

from mta.models import DecoderLM, get_preset

FAMILIES = ("transformer", "diff", "talking_heads", "mta")
TRAINABLE = [f"tiny-{family}" for family in FAMILIES] + ["toy-transformer", "toy-mta"]


@pytest.mark.parametrize("preset", TRAINABLE)
def test_forward_backward(preset):
    torch.manual_seed(0)
    model = DecoderLM(get_preset(preset)).train()
    tokens = torch.randint(model.config.vocab_size, (2, 12))
    logits = model(tokens)
    assert logits.shape == (2, 12, model.config.vocab_size)
    loss = model.loss(tokens[:, :-1], tokens[:, 1:])
    assert torch.isfinite(loss)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("preset", [f"tiny-{family}" for family in FAMILIES])
def test_causal(preset):
    torch.manual_seed(0)
    model = DecoderLM(get_preset(preset, backend="reference")).double().eval()
    with torch.no_grad():  # move kernels and mixers off identity
        for name, param in model.named_parameters():
            if ".kernel_" in name or ".head_mix_" in name:
                param.add_(torch.randn_like(param) * 0.3)
    tokens = torch.randint(model.config.vocab_size, (2, 16))
    before = model(tokens)
    for t in (1, 9):
        changed = tokens.clone()
        changed[:, t:] = (changed[:, t:] + 1) % model.config.vocab_size
        after = model(changed)
        torch.testing.assert_close(after[:, :t], before[:, :t], rtol=1e-12, atol=1e-12)
        assert not torch.allclose(after[:, t], before[:, t])


def test_loss_is_float32_cross_entropy_with_ignore_index():
    torch.manual_seed(0)
    model = DecoderLM(get_preset("tiny-transformer")).eval()
    tokens = torch.randint(256, (2, 8))
    targets = torch.randint(256, (2, 8))
    targets[0, :3] = -100
    logits = model(tokens)
    expected = F.cross_entropy(logits[targets != -100].float(), targets[targets != -100])
    torch.testing.assert_close(model.loss(tokens, targets), expected)
    torch.testing.assert_close(model(tokens, targets), expected)


def test_rejects_sequences_longer_than_max_seq_len():
    model = DecoderLM(get_preset("tiny-transformer", max_seq_len=8))
    with pytest.raises(ValueError, match="^tokens:.*max_seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_rejects_token_ids_outside_the_vocabulary_and_float_tokens():
    model = DecoderLM(get_preset("tiny-mta"))
    vocab = model.config.vocab_size
    expected = rf"^tokens: got ids in \[1, {vocab}\], expected ids in \[0, vocab_size={vocab}\)"
    with pytest.raises(ValueError, match=expected):
        model(torch.tensor([[1, vocab, 2]]))
    with pytest.raises(ValueError, match=r"^tokens: got ids in \[-1, 2\]"):
        model(torch.tensor([[1, -1, 2]]))
    with pytest.raises(ValueError, match=r"^tokens: got dtype torch.float32, expected torch.long or torch.int32"):
        model(torch.tensor([[1.0, 2.0]]))


@pytest.mark.parametrize("shape", [(0, 5), (2, 0)], ids=["batch0", "tokens0"])
def test_empty_token_batches(shape):
    model = DecoderLM(get_preset("tiny-mta", backend="chunked"))
    tokens = torch.zeros(shape, dtype=torch.long)
    assert model(tokens).shape == (*shape, model.config.vocab_size)
    model(tokens).sum().backward()


def test_untied_head_adds_vocab_times_dim():
    tied = DecoderLM(get_preset("tiny-transformer"))
    untied = DecoderLM(get_preset("tiny-transformer", tie_embeddings=False))
    assert untied.num_parameters() - tied.num_parameters() == 256 * 64


@pytest.mark.parametrize(
    ("preset", "count"),
    [
        ("880M-transformer", 876_553_728),
        ("880M-diff", 876_567_552),
        ("880M-talking_heads", 876_566_016),
        ("880M-mta", 876_583_320),
    ],
)
def test_paper_parameter_counts(preset, count):
    with torch.device("meta"):
        model = DecoderLM(get_preset(preset))
    assert model.num_parameters() == count


def test_meta_model_materialises_with_reset_parameters():
    with torch.device("meta"):
        model = DecoderLM(get_preset("tiny-mta"))
    model.to_empty(device="cpu")
    model.reset_parameters()
    kernel = model.layers[2].attention.kernel_pre
    assert kernel[:, -1, 5].eq(1).all() and kernel.sum() == kernel.shape[0]
    assert model.layers[0].attention.kernel_pre is None
    assert torch.isfinite(model(torch.zeros(1, 4, dtype=torch.long))).all()
