"""model.generate with the MTACache (docs/spec.md §6): cached == recomputing the whole sequence (use_cache=False),
for every option of the op and every family, greedy and sampling, batches with left padding == each prompt alone, prompts
longer than the kernels; the cache really is used (one token per forward after the prompt)."""

import pytest

from mta.models.hf_support import transformers_supported

if not transformers_supported():
    pytest.skip("needs transformers 5.x (pip install 'multi-token-attention[hf]')", allow_module_level=True)

import torch  # noqa: E402

from hf_cases import VOCAB, left_padded, tiny_config, tiny_model  # noqa: E402
from mta.models.hf import CACHE_NAME, MTACache  # noqa: E402
from op_cases import OPTION_COMBINATIONS, combination_id  # noqa: E402

PROMPTS = [[5, 17, 3, 44, 9, 12, 30], [8, 2], [60, 1, 7, 7, 21]]  # longer and shorter than the 3- and 4-row kernels
NEW = 8
OPTION_FIELDS = {"kernel_pre": ("pre_kernel", [3, 5]), "kernel_post": ("post_kernel", [4, 3]),
                 "head_mix_pre": ("pre_mix_group", 2), "head_mix_post": ("post_mix_group", 4)}


def mta_config(enabled):
    """An MTA config with exactly the op options `enabled` (names of mta_attention's arguments)."""
    fields = {field: (value if name in enabled else None) for name, (field, value) in OPTION_FIELDS.items()}
    convolutions = fields["pre_kernel"] is not None or fields["post_kernel"] is not None
    return tiny_config("mta", **fields, qk_conv_layers=[0, 1] if convolutions else None)


def generate(model, prompts, **kwargs):
    ids, mask = left_padded(prompts)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, min_new_tokens=NEW, **kwargs)
    return out[:, ids.shape[1]:]


def check_cached_equals_recomputed_and_alone(model, **kwargs):
    cached = generate(model, PROMPTS, **kwargs)
    recomputed = generate(model, PROMPTS, use_cache=False, **kwargs)
    assert torch.equal(cached, recomputed)
    for row, prompt in enumerate(PROMPTS):
        assert torch.equal(generate(model, [prompt], **kwargs)[0], cached[row]), f"prompt {row}"
    return cached


@pytest.mark.parametrize("enabled", OPTION_COMBINATIONS, ids=combination_id)
def test_greedy_every_op_option(enabled):
    model = tiny_model(mta_config(enabled))
    tokens = check_cached_equals_recomputed_and_alone(model, do_sample=False)
    assert len(set(tokens.flatten().tolist())) > 3  # a random model, not one stuck on a token


@pytest.mark.parametrize("family", ["transformer", "talking_heads", "diff", "mta"])
def test_greedy_every_family_with_group_norm_and_gate(family):
    extra = dict(depth_scaling=True) if family == "mta" else {}
    check_cached_equals_recomputed_and_alone(tiny_model(tiny_config(family, **extra)), do_sample=False)


@pytest.mark.parametrize("sampling", [dict(temperature=0.7), dict(top_k=5), dict(top_p=0.8, temperature=1.3)],
                         ids=["temperature", "top_k", "top_p"])
def test_sampling_draws_the_same_tokens_cached_and_recomputed(sampling):
    model = tiny_model(tiny_config())
    draws = []
    for use_cache in (True, False):
        torch.manual_seed(1)
        draws.append(generate(model, PROMPTS, do_sample=True, use_cache=use_cache, num_return_sequences=2, **sampling))
    assert draws[0].shape == (2 * len(PROMPTS), NEW) and torch.equal(*draws)
    torch.manual_seed(2)
    assert not torch.equal(generate(model, PROMPTS, do_sample=True, num_return_sequences=2, **sampling), draws[0])


def test_long_prompts_through_the_chunked_backend():
    """Prompts longer than the chunked backend's largest block (512 rows): the prompt runs through `chunked` in
    two blocks, the new tokens through the step; the same tokens as the reference backend without a cache."""
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, VOCAB, (length,), generator=gen).tolist() for length in (530, 517)]
    chunked = tiny_model(tiny_config(attention_backend="chunked", max_position_embeddings=600))
    reference = tiny_model(tiny_config(attention_backend="reference", max_position_embeddings=600))
    assert torch.equal(generate(chunked, prompts), generate(reference, prompts, use_cache=False))


def test_beam_search_reorders_the_cache():
    model = tiny_model(tiny_config())
    assert torch.equal(generate(model, PROMPTS, num_beams=3), generate(model, PROMPTS, num_beams=3, use_cache=False))


def test_float32_model_generates_the_same_cached_and_recomputed():
    model = tiny_model(tiny_config(), dtype=torch.float32)
    assert torch.equal(generate(model, PROMPTS), generate(model, PROMPTS, use_cache=False))


def test_cache_holds_what_mta_needs_and_steps_feed_one_token():
    model = tiny_model(tiny_config())
    lengths = []
    model.register_forward_pre_hook(lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]),
                                    with_kwargs=True)
    ids, mask = left_padded(PROMPTS)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=NEW, min_new_tokens=NEW, return_dict_in_generate=True)
    assert lengths == [ids.shape[1]] + [1] * (NEW - 1)
    cache = getattr(out, CACHE_NAME)
    assert isinstance(cache, MTACache) and cache.get_seq_length() == ids.shape[1] + NEW - 1
    assert cache.decode.start.tolist() == [0, 5, 2]
    layer = cache.decode.layers[0]
    batch, length = len(PROMPTS), ids.shape[1] + NEW - 1
    assert layer.keys.shape == layer.values.shape == (batch, 2, length, 8)  # 2 kv heads of width 8
    assert layer.queries.shape == (batch, 4, 2, 8)  # the last c_q - 1 = 2 queries of the 3-row pre kernel
    assert layer.weights.shape == (batch, 4, 3, length)  # the last 3 rows entering the 4-row post kernel


def test_right_padding_foreign_caches_and_assisted_decoding_are_refused():
    model = tiny_model(tiny_config())
    ids = torch.randint(VOCAB, (2, 4))
    with pytest.raises(ValueError, match="^attention_mask: each row must be zeros"):
        model(ids, attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="^attention_mask: a row is all padding"):
        model(ids, attention_mask=torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="^cache: expected an MTACache"):
        from transformers import DynamicCache

        model(ids, past_key_values=DynamicCache())
    with pytest.raises(ValueError, match="^output_attentions: not supported"):
        model(ids, output_attentions=True)
    # refused by transformers (5.17: no default cache) or by MTACache.crop (5.0 gets as far as rolling back)
    with pytest.raises((RuntimeError, NotImplementedError), match="(?i)assisted decoding (requires a cache|is not)"):
        model.generate(ids[:1], max_new_tokens=3, prompt_lookup_num_tokens=2)
    with pytest.raises(NotImplementedError, match="cannot be cropped"):
        MTACache(2).crop(1)
