"""Retrofitting a transformers LlamaForCausalLM into an MTA model (the paper's Appendix I / Table 10).

The Llama weights are copied into an MTAForCausalLM whose q–k kernels and head mixers start at the identity, so
with group norm and gate off (the default) the converted model computes the Llama's function: its logits equal
the original's up to floating-point rounding (docs/spec.md §1: identity kernels and mixers are softmax attention).
Continued training then teaches the kernels to be more than the identity.

The layouts differ in one place: Llama's RoPE rotates channel pairs (i, i + d/2) of a head ("rotate half"),
this library's pairs (2i, 2i + 1) (mta.layers.rope); both give pair i the frequency θ^(-2i/d). So the rows of
each head of q_proj and k_proj are permuted (row 2i ← row i, row 2i + 1 ← row i + d/2), which rotates the same
pairs and leaves every q·k unchanged. Llama features this decoder lacks are refused with a ValueError naming the
config field: biases, activations other than SiLU, a head width other than hidden_size / heads, RoPE scaling
or partial rotary embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .hf import MTAConfig, MTAForCausalLM
from .presets import MTA_KERNEL

# MTAForCausalLM parameter name -> LlamaForCausalLM parameter name; {i}: the layer.
_LAYER_WEIGHTS = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
}
_ROTARY = ("attention.wq.weight", "attention.wk.weight")

# The LlamaConfig fields an MTAConfig takes unchanged (the same names in both). RoPE's base comes from Llama's
# rope_parameters (_rope_theta), the MTA options from retrofit_config's arguments.
LLAMA_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings",
                "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id")


def retrofit_config(
    llama_config,
    *,
    mta_layers: Sequence[int] | None = None,
    pre_kernel: Sequence[int] | None = MTA_KERNEL,
    post_kernel: Sequence[int] | None = MTA_KERNEL,
    head_mix: bool = True,
    group_norm: bool = False,
    gate: bool = False,
) -> MTAConfig:
    """The MTAConfig of a retrofitted `llama_config` (a transformers LlamaConfig).

    mta_layers: 0-based layers that get the q–k convolutions (None: the paper's 2, 6, 10, …).
    pre_kernel, post_kernel: (c_q, c_k) of the convolutions before / after softmax, or None for none.
    head_mix: full head mixing before and after softmax in every layer (the paper's recipe).
    group_norm, gate: the per-head RMSNorm and scalar gate; they change the function, so the retrofitted model's
        logits no longer equal the Llama's.
    """
    _check_llama(llama_config)
    heads = llama_config.num_attention_heads
    layers = list(range(2, llama_config.num_hidden_layers, 4)) if mta_layers is None else list(mta_layers)
    convolutions = pre_kernel is not None or post_kernel is not None
    return MTAConfig(
        **{name: getattr(llama_config, name) for name in LLAMA_FIELDS},
        rope_theta=_rope_theta(llama_config),
        attention_type="mta",
        pre_kernel=None if pre_kernel is None else list(pre_kernel),
        post_kernel=None if post_kernel is None else list(post_kernel),
        pre_mix_group=heads if head_mix else None,
        post_mix_group=heads if head_mix else None,
        group_norm=group_norm,
        gate=gate,
        qk_conv_layers=layers if convolutions else None,
    )


def retrofit(llama: torch.nn.Module, **options) -> MTAForCausalLM:
    """An MTAForCausalLM holding the weights of `llama` (a transformers LlamaForCausalLM), in its dtype and on
    its device, with identity kernels and mixers. options: those of `retrofit_config`."""
    config = retrofit_config(llama.config, **options)
    weights = llama.state_dict()
    reference = next(iter(weights.values()))
    with torch.device(reference.device):
        model = MTAForCausalLM(config).to(reference.dtype)
    ours = {"model.tok_embeddings.weight": "model.embed_tokens.weight", "model.norm.weight": "model.norm.weight"}
    if not config.tie_word_embeddings:
        ours["model.output.weight"] = "lm_head.weight"
    for layer in range(config.num_hidden_layers):
        for name, theirs in _LAYER_WEIGHTS.items():
            ours[f"model.layers.{layer}.{name}"] = f"model.layers.{layer}.{theirs}"
    head_dim = config.hidden_size // config.num_attention_heads
    state = {}
    for name, theirs in ours.items():
        tensor = weights[theirs]
        state[name] = _interleave_rotary_rows(tensor, head_dim) if name.endswith(_ROTARY) else tensor
    missing, unexpected = model.load_state_dict(state, strict=False)
    own = ("kernel_pre", "kernel_post", "head_mix_pre", "head_mix_post", "group_norm.weight", "gate.weight", "gate.bias")
    leftover = [name for name in missing if not name.endswith(own)]
    if leftover or unexpected:
        raise ValueError(f"llama: weights do not map onto the MTA model: missing {leftover}, unexpected {unexpected}")
    return model.eval()


def retrofit_directory(source: str | os.PathLike, out: str | os.PathLike, **options) -> MTAForCausalLM:
    """Read the LlamaForCausalLM saved in `source` (save_pretrained's directory; its dtype kept), write the
    retrofitted MTA model to `out` with save_pretrained, and return it. options: those of `retrofit_config`."""
    from transformers import AutoConfig, LlamaForCausalLM

    _check_llama(AutoConfig.from_pretrained(source))  # before reading any weight
    llama = LlamaForCausalLM.from_pretrained(source, dtype="auto")
    model = retrofit(llama, **options)
    model.save_pretrained(out)
    return model


def _interleave_rotary_rows(weight: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rows of a q/k projection [heads·d, D] from rotate-half pairs (i, i + d/2) to interleaved (2i, 2i + 1)."""
    half = torch.arange(head_dim // 2, device=weight.device)
    order = torch.stack([half, half + head_dim // 2], dim=1).flatten()
    return weight.unflatten(0, (-1, head_dim))[:, order].flatten(0, 1).contiguous()


def _rope_parameters(config) -> dict:
    """RoPE settings: `rope_parameters` (transformers 5), else a legacy `rope_scaling` dict."""
    return dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})


def _rope_theta(config) -> float:
    return float(_rope_parameters(config).get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _check_llama(config) -> None:
    """ValueError naming the first field of a LlamaConfig that this decoder cannot represent."""
    if getattr(config, "model_type", None) != "llama":
        raise ValueError(f"model_type: got {getattr(config, 'model_type', None)!r}, expected 'llama' (a LlamaForCausalLM)")
    for name in ("attention_bias", "mlp_bias"):
        if getattr(config, name, False):
            raise ValueError(f"{name}: got True; the MTA decoder has no biases")
    if config.hidden_act != "silu":
        raise ValueError(f"hidden_act: got {config.hidden_act!r}, expected 'silu' (SwiGLU)")
    head_dim = getattr(config, "head_dim", None)
    if head_dim not in (None, config.hidden_size // config.num_attention_heads):
        raise ValueError(f"head_dim: got {head_dim}, expected hidden_size / num_attention_heads = "
                         f"{config.hidden_size // config.num_attention_heads}")
    parameters = _rope_parameters(config)
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"rope_parameters: RoPE scaling {rope_type!r} is not supported (only plain RoPE)")
    if parameters.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"rope_parameters: partial_rotary_factor {parameters['partial_rotary_factor']} is not "
                         "supported (RoPE on every channel only)")
