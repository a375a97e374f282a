"""Model checkpoints: a directory holding `model.safetensors` (the weights) and `config.json` (the ModelConfig).

Both files are written atomically (a temporary file in the same directory, then `os.replace`), so a crash or
Ctrl-C while saving leaves the previous file intact. Tied weights: safetensors refuses tensors that share memory,
so `safetensors.torch.save_model` / `load_model` keep one copy of each shared group and restore the others
(`DecoderLM` ties its output head by reusing the embedding in `F.linear`, so it holds no duplicate today).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from .config import ModelConfig
from .model import DecoderLM

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, corrupt or does not match its config."""


def save_checkpoint(model: DecoderLM, directory: str | os.PathLike) -> Path:
    """Write `model`'s weights and config into `directory` (created if needed); return the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_text = json.dumps(dataclasses.asdict(model.config), indent=2) + "\n"
    _atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_model(model, str(tmp)))
    _atomic_write(directory / CONFIG_FILE, lambda tmp: tmp.write_text(config_text, encoding="utf-8"))
    return directory


def load_config(directory: str | os.PathLike) -> ModelConfig:
    """The ModelConfig saved in `directory`; CheckpointError if it is missing or invalid."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} not found (expected a save_checkpoint directory)")
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
        return ModelConfig(**fields)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} is not a valid model config ({error})") from None


def load_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu") -> DecoderLM:
    """Rebuild the DecoderLM saved by `save_checkpoint` in `directory`, on `device`, in eval mode.

    Raises CheckpointError naming the problem: a missing file, an unreadable config or weights file, or weights
    whose names or shapes differ from what the config builds.
    """
    config = load_config(directory)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS_FILE} not found")
    with torch.device(device):
        model = DecoderLM(config)
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS_FILE} is unreadable or corrupt ({error})") from None
    except RuntimeError as error:  # load_state_dict: a shape differs from the config's
        raise CheckpointError(f"checkpoint {directory}: weights do not match {CONFIG_FILE} ({error})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {directory}: weights do not match {CONFIG_FILE}: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return model.eval()


def _atomic_write(path: Path, write) -> None:
    """Call write(tmp) on a temporary path beside `path`, then move it over `path` in one step."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
