"""DecoderLM with a DecodeCache and left padding (docs/spec.md §6): prefill + steps give the full forward's logits, a
padded row gives its tokens' logits alone, and bad arguments are named."""

import pytest
import torch

from mta.models import DecodeCache, DecoderLM, get_preset

FAMILIES = ("transformer", "diff", "talking_heads", "mta")


def tiny_model(family, **overrides):
    extra = dict(qk_conv_layers=(0, 1), pre_kernel=(3, 5), post_kernel=(4, 3)) if family == "mta" else {}
    torch.manual_seed(0)
    model = DecoderLM(get_preset(f"tiny-{family}", n_layers=2, dim=32, **extra, **overrides)).double().eval()
    with torch.no_grad():  # away from identity, so the convolutions and mixers really mix positions and heads
        for name, param in model.named_parameters():
            if ".kernel_" in name or ".head_mix_" in name:
                param.add_(torch.randn_like(param) * 0.3)
    return model


def cached_logits(model, tokens, steps, start=None):
    cache, outs, done = DecodeCache(len(model.layers)), [], 0
    for size in steps:
        outs.append(model(tokens[:, done : done + size], start=start if done == 0 else None, cache=cache))
        done += size
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_and_steps_equal_the_full_forward(family):
    model = tiny_model(family)
    tokens = torch.randint(model.config.vocab_size, (2, 12))
    torch.testing.assert_close(cached_logits(model, tokens, (5, 1, 1, 2, 1, 1, 1)), model(tokens), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padded_rows_equal_each_row_alone(family):
    model = tiny_model(family)
    pads = (3, 0, 1)
    tokens = torch.randint(model.config.vocab_size, (len(pads), 10))
    start = torch.tensor(pads)
    full, cached = model(tokens, start=start), cached_logits(model, tokens, (6, 1, 1, 2), start=start)
    for row, pad in enumerate(pads):
        alone = model(tokens[row : row + 1, pad:])
        torch.testing.assert_close(full[row : row + 1, pad:], alone, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(cached[row : row + 1, pad:], alone, rtol=1e-10, atol=1e-10)


def test_cache_select_keeps_rows():
    model = tiny_model("mta")
    tokens = torch.randint(model.config.vocab_size, (3, 8))
    cache = DecodeCache(2)
    model(tokens[:, :7], start=torch.tensor([0, 2, 1]), cache=cache)
    cache.select(torch.tensor([1]))
    torch.testing.assert_close(model(tokens[1:2, 7:], cache=cache)[:, -1], model(tokens[1:2, 2:])[:, -1],
                               rtol=1e-10, atol=1e-10)


def test_bad_arguments_are_named():
    model = tiny_model("mta", max_seq_len=8)
    tokens = torch.zeros(2, 6, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^start: expected values in \[0, N=6\)"):
        model(tokens, start=torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="^start: expected a long tensor of shape"):
        model(tokens, start=torch.tensor([0.0, 1.0]))
    cache = DecodeCache(2)
    model(tokens, start=torch.tensor([0, 2]), cache=cache)
    with pytest.raises(ValueError, match=r"^start: got \[0, 1\], but the cache was filled with \[0, 2\]"):
        model(tokens[:, :1], start=torch.tensor([0, 1]), cache=cache)
    with pytest.raises(ValueError, match=r"^tokens: got 9 positions \(6 of them cached\), expected <= max_seq_len=8"):
        model(tokens[:, :3], cache=cache)
    with pytest.raises(ValueError, match="^cache: holds 3 layers, the model has 2"):
        model(tokens, cache=DecodeCache(3))
