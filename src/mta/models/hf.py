"""Hugging Face transformers (5.x) integration: `MTAConfig` (model_type "mta"), `MTAForCausalLM` and `MTACache`.

Importing this module registers MTAConfig and MTAForCausalLM with AutoConfig and AutoModelForCausalLM, and
`import mta` has it imported as soon as transformers 5.x is (`hf_support.register_with_transformers`; mta itself
does not import transformers), so `AutoModelForCausalLM.from_pretrained(dir)` needs no `trust_remote_code`. The four
families of the paper (attention_type "mta", "transformer", "talking_heads", "diff") share the config.

MTAForCausalLM wraps `mta.models.DecoderLM` (state-dict names prefixed "model."), so the weights, the
numerics and the op backends are the training pipeline's. Generation (docs/spec.md §6) keeps an `MTACache`: per layer
the keys and values and, for MTA, the last c_q - 1 queries and post-softmax conv rows, so a new token costs
O(c_q · N) attention work. Batches must be left-padded (attention_mask: zeros, then ones, in each row): padding
positions lie outside the sequence, for the convolutions too, and RoPE counts positions from each row's first
real token, so a padded row generates what its prompt generates alone.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .hf_support import transformers_supported

if not transformers_supported():
    raise ImportError("mta.models.hf needs transformers 5.x (>=5.0,<6); install it with: "
                      "pip install 'multi-token-attention[hf]'")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel  # noqa: E402
from transformers.cache_utils import Cache  # noqa: E402
from transformers.modeling_outputs import CausalLMOutputWithPast  # noqa: E402

from .cache import DecodeCache  # noqa: E402
from .config import ModelConfig  # noqa: E402
from .model import DecoderLM  # noqa: E402
from .presets import MTA_KERNEL  # noqa: E402

# MTAConfig field -> ModelConfig field (the MTA options keep their names).
FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads",
    "intermediate_size": "ffn_hidden",
    "rms_norm_eps": "norm_eps",
    "rope_theta": "rope_theta",
    "max_position_embeddings": "max_seq_len",
    "tie_word_embeddings": "tie_embeddings",
    "attention_type": "attention",
    "pre_kernel": "pre_kernel",
    "post_kernel": "post_kernel",
    "pre_mix_group": "pre_mix_group",
    "post_mix_group": "post_mix_group",
    "group_norm": "group_norm",
    "depth_scaling": "depth_scaling",
    "gate": "gate",
    "qk_conv_layers": "qk_conv_layers",
    "attention_dropout": "dropout",
    "attention_backend": "backend",
}
MODEL_CARD = """---
library_name: transformers
tags: [mta, multi-token-attention]
---
# An MTAForCausalLM (attention_type "{attention}")

A decoder of the `mta` package (Multi-Token Attention, arXiv 2504.00927). transformers knows its model type
"mta" only once `mta` is imported: without it, loading fails with
"Transformers does not recognize this architecture" and a suggestion to update Transformers, which does not
help. Install `mta` with its `[hf]` extra, then:

```python
import mta  # registers MTAConfig and MTAForCausalLM with the Auto classes
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained("path/to/this/directory")
```
"""
_RECIPE = object()  # "the paper's recipe for attention_type 'mta', off for the other families"
# transformers renamed the cache argument and output field `past_key_values` to `cache` within 5.x (5.17 has the
# old name, 5.24 the new one); MTAForCausalLM takes either and returns the installed release's.
CACHE_NAME = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"


class MTAConfig(PreTrainedConfig):
    """A Llama-style decoder with Multi-Token Attention or one of the paper's baselines (docs/spec.md §3).

    Llama's names for the shared fields: vocab_size, hidden_size (D), num_hidden_layers, num_attention_heads (H),
    num_key_value_heads (grouped-query, default H), intermediate_size (SwiGLU width, default 256·ceil(8D/3/256)),
    rms_norm_eps, rope_theta, max_position_embeddings, tie_word_embeddings, attention_dropout.
    attention_type: "mta", "transformer", "talking_heads" or "diff". attention_backend: the mta_attention
    backend ("auto", "reference", "chunked", "triton").
    MTA options (mta.models.ModelConfig, mta.layers.AttentionConfig): pre_kernel / post_kernel [c_q, c_k] or
    None, pre_mix_group / post_mix_group (heads per mixing group) or None, group_norm, depth_scaling, gate, and
    qk_conv_layers (0-based layers with the q–k convolutions; None = every layer). Left unset they follow the
    paper's MTA recipe for attention_type "mta" (6×11 kernels before and after softmax in layers 2, 6, 10, …,
    full head mixing before and after softmax, group norm and gate in every layer) and are off otherwise.
    The defaults of the sizes are the paper's 880M model (vocabulary of Llama 3). Invalid values raise a
    ValueError naming the field.
    """

    model_type = "mta"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 128256,
        hidden_size: int = 1536,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = None,
        intermediate_size: int | None = None,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 1e5,
        max_position_embeddings: int = 2048,
        tie_word_embeddings: bool = True,
        attention_type: str = "mta",
        pre_kernel=_RECIPE,
        post_kernel=_RECIPE,
        pre_mix_group=_RECIPE,
        post_mix_group=_RECIPE,
        group_norm=_RECIPE,
        depth_scaling: bool = False,
        gate=_RECIPE,
        qk_conv_layers=_RECIPE,
        attention_dropout: float = 0.0,
        attention_backend: str = "auto",
        **kwargs,
    ):
        mta = attention_type == "mta"
        recipe = {
            "pre_kernel": list(MTA_KERNEL) if mta else None,
            "post_kernel": list(MTA_KERNEL) if mta else None,
            "pre_mix_group": num_attention_heads if mta else None,
            "post_mix_group": num_attention_heads if mta else None,
            "group_norm": mta,
            "gate": mta,
        }
        given = dict(pre_kernel=pre_kernel, post_kernel=post_kernel, pre_mix_group=pre_mix_group,
                     post_mix_group=post_mix_group, group_norm=group_norm, gate=gate)
        options = {name: recipe[name] if value is _RECIPE else value for name, value in given.items()}
        if qk_conv_layers is _RECIPE:
            convolutions = options["pre_kernel"] is not None or options["post_kernel"] is not None
            qk_conv_layers = list(range(2, num_hidden_layers, 4)) if mta and convolutions else None
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.intermediate_size = intermediate_size
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.attention_type = attention_type
        for name, value in options.items():
            setattr(self, name, list(value) if isinstance(value, tuple) else value)
        self.depth_scaling = depth_scaling
        self.qk_conv_layers = None if qk_conv_layers is None else list(qk_conv_layers)
        self.attention_dropout = attention_dropout
        self.attention_backend = attention_backend
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.intermediate_size = self.to_model_config().ffn_hidden  # validates every field, fills the default

    def to_model_config(self) -> ModelConfig:
        """The native `mta.models.ModelConfig`; a ValueError names the MTAConfig field that is invalid."""
        fields = {native: getattr(self, name) for name, native in FIELDS.items()}
        try:
            return ModelConfig(**fields)
        except ValueError as error:  # ModelConfig names its own fields: "n_heads: got 5, ... dim=32"
            names = {native: name for name, native in FIELDS.items()}
            message = re.sub(r"\b(\w+)(?=[:=])", lambda m: names.get(m.group(1), m.group(1)), str(error))
            raise ValueError(message) from None

    @classmethod
    def from_model_config(cls, config: ModelConfig, **kwargs) -> MTAConfig:
        """The MTAConfig of a native ModelConfig (kwargs: other PreTrainedConfig fields, e.g. eos_token_id)."""
        return cls(**{name: getattr(config, native) for name, native in FIELDS.items()}, **kwargs)


class MTACache(Cache):
    """The `past_key_values` of MTAForCausalLM: a `mta.models.DecodeCache` (`.decode`) behind the Cache API.

    It grows with the sequence like transformers' DynamicCache; it cannot be cropped (assisted decoding) or
    used with static-cache compilation. Beam search reorders it (`reorder_cache`).
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, n_layers: int):
        super().__init__(layers=[])
        self.decode = DecodeCache(n_layers)

    def __len__(self) -> int:
        return len(self.decode.layers)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """The number of positions cached (left padding included)."""
        return self.decode.length

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep the batch rows beam_idx [B'] (beam search)."""
        self.decode.select(beam_idx)

    def crop(self, tokens_to_remove: int) -> None:
        """Refused: the base class would silently do nothing (it crops per transformers layer, and holds none)."""
        raise NotImplementedError("MTACache cannot be cropped (assisted decoding is not supported)")


class MTAForCausalLM(PreTrainedModel, GenerationMixin):
    """A causal language model on `mta.models.DecoderLM` (at `.model`), with `generate` (docs/spec.md §6).

    Weights are initialised by DecoderLM's constructor, the training pipeline's scheme (transformers' own
    per-module initialisation is not used); `from_pretrained` therefore requires every weight in the checkpoint
    and raises a ValueError naming missing (and unexpected) ones.
    """

    config_class = MTAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]

    def __init__(self, config: MTAConfig):
        super().__init__(config)
        self.model = DecoderLM(config.to_model_config())
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Nothing: DecoderLM initialised its modules when it was built (class docstring)."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' `from_pretrained`, refusing checkpoints that lack weights of the model."""
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        if info["missing_keys"] or info["unexpected_keys"]:
            raise ValueError(f"checkpoint: weights do not match the config: missing {sorted(info['missing_keys'])}, "
                             f"unexpected {sorted(info['unexpected_keys'])}")
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """transformers' `save_pretrained`, plus a README.md model card (unless the directory has one) that says
        loading needs `import mta`: without it transformers does not know model type "mta" and suggests an
        update of Transformers, which does not help."""
        super().save_pretrained(save_directory, *args, **kwargs)
        card = Path(save_directory) / "README.md"
        if kwargs.get("is_main_process", True) and not card.exists():
            card.write_text(MODEL_CARD.format(attention=self.config.attention_type), encoding="utf-8")

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.model.tok_embeddings

    def set_input_embeddings(self, value: torch.nn.Embedding) -> None:
        self.model.tok_embeddings = value

    def get_output_embeddings(self) -> torch.nn.Linear | None:
        """The untied output layer, or None when the output head is the input embedding."""
        return self.model.output

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        """generate must not build a DynamicCache: the first forward creates an MTACache."""
        return False

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cache: MTACache | None = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        past_key_values: MTACache | None = None,
    ) -> CausalLMOutputWithPast | tuple:
        """input_ids: [B, N] long, the positions after those in the cache (all of them without one).

        attention_mask: [B, P + N] (P cached positions), 1 for tokens and 0 for left padding; each row must be
            zeros then ones (left padding only), with at least one token, and padding only in the prompt.
        cache (or its older name past_key_values): an MTACache from an earlier call (decoding), extended in place;
            use_cache (default: whether a cache is given) starts one at the prompt and returns it.
        labels: [B, N] long, the tokens to predict, shifted inside as transformers' causal LMs do (position t
            predicts labels[t + 1]); -100 is ignored. Loss: mean float32 cross-entropy.
        logits_to_keep: return logits of the last this many positions only (0: all).
        Returns CausalLMOutputWithPast(loss, logits [B, N or logits_to_keep, V], and the cache under CACHE_NAME).
        Attention maps and per-layer hidden states are not returned (output_attentions / output_hidden_states
        must be falsy): MTA never materialises the map.
        """
        for name, value in (("output_attentions", output_attentions), ("output_hidden_states", output_hidden_states)):
            if value:
                raise ValueError(f"{name}: not supported by MTAForCausalLM")
        cache = one_cache(cache, past_key_values)
        if use_cache is None:
            use_cache = cache is not None
        if use_cache and cache is None:
            cache = MTACache(self.config.num_hidden_layers)
        cached = 0 if cache is None else cache.get_seq_length()
        start = left_padding(attention_mask, input_ids, cached)
        hidden = self.model.hidden(input_ids, start=start, cache=None if cache is None else cache.decode)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.model.head(hidden)
        loss = None
        if labels is not None:
            if logits_to_keep:
                raise ValueError("labels: cannot be combined with logits_to_keep")
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels: expected input_ids' shape {tuple(input_ids.shape)}, got {tuple(labels.shape)}")
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        output = CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_NAME: cache if use_cache else None})
        return output if return_dict is None or return_dict else output.to_tuple()

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: MTACache | None = None,
        past_key_values: MTACache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool = True,
        logits_to_keep: int | None = None,
        **kwargs,
    ) -> dict:
        """The next forward's inputs: the tokens not yet in the cache (all of them without one).

        transformers' own bookkeeping arguments (next_sequence_length, is_first_iteration, cache_position) are
        not needed: the cache knows its length. Any other argument goes to forward.
        """
        if inputs_embeds is not None:
            raise ValueError("inputs_embeds: not supported by MTAForCausalLM; pass input_ids")
        for bookkeeping in ("next_sequence_length", "is_first_iteration", "cache_position"):
            kwargs.pop(bookkeeping, None)
        cache = one_cache(cache, past_key_values)
        cached = 0 if cache is None else cache.get_seq_length()
        inputs = dict(input_ids=input_ids[:, cached:], attention_mask=attention_mask, cache=cache, use_cache=use_cache,
                      **kwargs)
        if logits_to_keep is not None:
            inputs["logits_to_keep"] = logits_to_keep
        return inputs


def one_cache(cache: MTACache | None, past_key_values: MTACache | None) -> MTACache | None:
    """The cache given under either name (transformers' old `past_key_values` or new `cache`), checked."""
    if cache is not None and past_key_values is not None:
        raise ValueError("cache: given twice, as cache and as past_key_values")
    cache = past_key_values if cache is None else cache
    if cache is not None and not isinstance(cache, MTACache):
        raise ValueError(f"cache: expected an MTACache, got {type(cache).__name__}")
    return cache


def left_padding(attention_mask: torch.Tensor | None, input_ids: torch.Tensor, cached: int) -> torch.Tensor | None:
    """start [B] long, the number of zeros that open each row of a left-padding attention mask [B, cached + N]."""
    if attention_mask is None:
        return None
    batch, length = input_ids.shape
    if attention_mask.shape != (batch, cached + length):
        raise ValueError(f"attention_mask: expected shape [B={batch}, cached {cached} + N {length}], "
                         f"got {tuple(attention_mask.shape)}")
    mask = attention_mask.to(device=input_ids.device, dtype=torch.long)
    if bool(((mask != 0) & (mask != 1)).any()) or bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError("attention_mask: each row must be zeros (left padding) then ones; right padding and "
                         "holes are not supported (pad on the left: tokenizer.padding_side = 'left')")
    start = (mask == 0).sum(dim=1)
    if bool((start == cached + length).any()):
        raise ValueError("attention_mask: a row is all padding; every row needs at least one token")
    return start


def register() -> None:
    """Register MTAConfig and MTAForCausalLM with AutoConfig and AutoModelForCausalLM (idempotent)."""
    AutoConfig.register(MTAConfig.model_type, MTAConfig, exist_ok=True)
    AutoModelForCausalLM.register(MTAConfig, MTAForCausalLM, exist_ok=True)


register()
