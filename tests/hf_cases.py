"""Tiny random MTAForCausalLM models built locally (no downloads), shared by the tests of the transformers integration
(tests/hf). Importing this module needs transformers 5.x."""

from __future__ import annotations

import torch

from mta.models.hf import MTAConfig, MTAForCausalLM

VOCAB = 61


def tiny_config(attention_type: str = "mta", **overrides) -> MTAConfig:
    """D 32, 2 layers, 4 heads (2 kv heads), vocabulary 61; MTA: 3×5 / 4×3 kernels in both layers, mixing in pairs
    before and over all heads after softmax, group norm and gate."""
    fields = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, max_position_embeddings=64, attention_type=attention_type, eos_token_id=None,
                  pad_token_id=0)
    if attention_type == "mta":
        fields.update(pre_kernel=[3, 5], post_kernel=[4, 3], pre_mix_group=2, qk_conv_layers=[0, 1])
    return MTAConfig(**{**fields, **overrides})


def tiny_model(config: MTAConfig, seed: int = 0, dtype: torch.dtype = torch.float64) -> MTAForCausalLM:
    """A random model of `config` whose kernels and mixers are away from identity, in `dtype`, eval mode."""
    torch.manual_seed(seed)
    model = MTAForCausalLM(config).to(dtype).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".kernel_" in name or ".head_mix_" in name:
                param.add_(torch.randn_like(param) * 0.3)
    return model


def left_padded(prompts: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask [B, max len] of `prompts`, padded on the left."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask
