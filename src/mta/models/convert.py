"""Conversion between the training pipeline's native checkpoints (`mta.models.checkpoint`: model.safetensors +
config.json of a ModelConfig) and transformers' format (`save_pretrained` of an MTAForCausalLM).

The weights are the same tensors: MTAForCausalLM holds the DecoderLM at `.model`, so its state-dict names are
the native ones prefixed with "model.", and MTAConfig maps one to one onto ModelConfig (mta.models.hf.FIELDS).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import CONFIG_FILE, CheckpointError, load_checkpoint, save_checkpoint
from .hf import MTAConfig, MTAForCausalLM
from .model import DecoderLM


def to_hf(model: DecoderLM, **config_fields) -> MTAForCausalLM:
    """An MTAForCausalLM with `model`'s config and a copy of its weights (same dtype and device).
    config_fields: further MTAConfig / PreTrainedConfig fields, e.g. eos_token_id=2."""
    weights = model.state_dict()
    reference = next(iter(weights.values()))
    with reference.device:
        converted = MTAForCausalLM(MTAConfig.from_model_config(model.config, **config_fields)).to(reference.dtype)
    converted.model.load_state_dict(weights)
    return converted.eval()


def native_to_hf(source: str | os.PathLike, out: str | os.PathLike, **config_fields) -> Path:
    """Write the native checkpoint directory `source` as a transformers directory `out`; returns `out`."""
    to_hf(load_checkpoint(source), **config_fields).save_pretrained(out)
    return Path(out)


def hf_to_native(source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the transformers directory `source` (an MTAForCausalLM) as a native checkpoint `out`; returns `out`."""
    return save_checkpoint(MTAForCausalLM.from_pretrained(source, dtype="auto").model, out)


def checkpoint_format(directory: str | os.PathLike) -> str:
    """"hf" for a transformers MTA directory, "native" for a native checkpoint; CheckpointError otherwise."""
    path = Path(directory) / CONFIG_FILE
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {directory}: no readable {CONFIG_FILE} ({error})") from None
    if fields.get("model_type") == MTAConfig.model_type:
        return "hf"
    if "model_type" in fields:
        raise CheckpointError(f"checkpoint {directory}: a transformers {fields['model_type']!r} model, not 'mta' "
                              "(a Llama is converted with `mta retrofit`)")
    return "native"
