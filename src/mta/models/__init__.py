"""Models built on mta.layers: configs, named presets and the Llama-style decoder (docs/spec.md §3)."""

from .cache import DecodeCache
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import ModelConfig, default_ffn_hidden
from .model import DecoderLM
from .presets import get_preset, list_presets

__all__ = ["CheckpointError", "DecodeCache", "DecoderLM", "ModelConfig", "default_ffn_hidden", "get_preset",
           "list_presets", "load_checkpoint", "save_checkpoint"]
