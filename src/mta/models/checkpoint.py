"""Model checkpoints: a directory holding `model.safetensors` (the weights) and `config.json` (the ModelConfig,
plus the SHA-256 of the weights under "weights_sha256").

`save_checkpoint` writes both files into a hidden temporary directory beside the target and flushes them to
disk first. A new directory is then renamed into place in one step, so a crash leaves the whole checkpoint or
none. Into an existing directory (a toy run directory also holds its metrics) the weights are moved first and
config.json last: a save cut between the two leaves new weights beside a config whose checksum names the old
ones, which `load_checkpoint` rejects. The checksum also reports bytes corrupted on disk at load. Checkpoints
written before the checksum was recorded load unchecked.

Tied weights: safetensors refuses tensors that share memory, so `safetensors.torch.save_model` / `load_model`
keep one copy of each shared group and restore the others (`DecoderLM` ties its output head by reusing the
embedding in `F.linear`, so it holds no duplicate today).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from .config import ModelConfig
from .model import DecoderLM

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKSUM_KEY = "weights_sha256"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, corrupt or does not match its config."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a read-only place); the previous one is intact."""


def save_checkpoint(model: DecoderLM, directory: str | os.PathLike) -> Path:
    """Write `model`'s weights and config into `directory` (created if needed) as one unit (module docstring);
    return the directory. CheckpointWriteError if the disk refuses the files."""
    directory = Path(directory)
    with staging_directory(directory) as tmp:
        save_model(model, str(tmp / WEIGHTS_FILE))
        write_config(tmp, model.config)
        flush_files(tmp)
        if directory.is_dir():
            for name in (WEIGHTS_FILE, CONFIG_FILE):
                os.replace(tmp / name, directory / name)
        else:
            os.replace(tmp, directory)
    return directory


@contextmanager
def staging_directory(target: Path) -> Iterator[Path]:
    """`with staging_directory(target) as tmp:` a fresh hidden directory beside `target` to write files into.

    After the block the renames it made are flushed to disk (`target` and its parent directory), and `tmp` is
    removed in any case. An error while writing (torch and safetensors report a full disk as a C++ assertion)
    becomes a CheckpointWriteError naming `target` and the free space of its disk.
    """
    target = Path(target).absolute()
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        yield tmp
        for directory in (target, target.parent):
            if directory.is_dir():
                fsync(directory)
    except (OSError, RuntimeError, SafetensorError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        free = shutil.disk_usage(_existing(target)).free / 2**20
        raise CheckpointWriteError(f"checkpoint {target}: could not be written ({reason}); {free:.0f} MiB free "
                                   "on its disk") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_config(directory: Path, config: ModelConfig) -> None:
    """Write `directory`/config.json: `config` and the SHA-256 of the weights already in `directory`."""
    fields = {**dataclasses.asdict(config), CHECKSUM_KEY: sha256_file(directory / WEIGHTS_FILE)}
    (directory / CONFIG_FILE).write_text(json.dumps(fields, indent=2) + "\n", encoding="utf-8")


def load_config(directory: str | os.PathLike) -> ModelConfig:
    """The ModelConfig saved in `directory`; CheckpointError if it is missing or invalid."""
    fields = _config_fields(directory)
    fields.pop(CHECKSUM_KEY, None)
    try:
        return ModelConfig(**fields)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} is not a valid model config ({error})") from None


def verify_weights(directory: str | os.PathLike) -> None:
    """CheckpointError unless `directory`'s weights file exists and matches the SHA-256 its config.json records
    (a config without one, from before it was recorded, passes)."""
    expected = _config_fields(directory).get(CHECKSUM_KEY)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS_FILE} not found")
    if expected is not None and sha256_file(weights) != expected:
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS_FILE} does not match the SHA-256 in {CONFIG_FILE} "
                              "(corrupted on disk, or a save that was cut off)")


def load_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu") -> DecoderLM:
    """Rebuild the DecoderLM saved by `save_checkpoint` in `directory`, on `device`, in eval mode.

    Raises CheckpointError naming the problem: a missing file, an unreadable config or weights file, weights
    that differ from their recorded checksum, or weights whose names or shapes differ from what the config builds.
    """
    config = load_config(directory)
    verify_weights(directory)
    weights = Path(directory) / WEIGHTS_FILE
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


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def flush_files(directory: Path) -> None:
    """Flush every file in `directory` to disk (before it is renamed into place)."""
    for path in directory.iterdir():
        fsync(path)


def fsync(path: Path) -> None:
    """Flush a file's or a directory's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _existing(path: Path) -> Path:
    """`path` or its nearest existing ancestor."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def read_json(directory: str | os.PathLike, name: str, missing: str, invalid: str) -> object:
    """The JSON value of the file `name` in a checkpoint directory; a CheckpointError naming the file when it is
    missing ("not found (`missing`)") or not JSON ("is not `invalid` (the parser's message)")."""
    path = Path(directory) / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: {name} not found ({missing})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint {directory}: {name} is not {invalid} ({error})") from None


def _config_fields(directory: str | os.PathLike) -> dict:
    fields = read_json(directory, CONFIG_FILE, "expected a save_checkpoint directory", "a valid model config")
    if not isinstance(fields, dict):
        raise CheckpointError(f"checkpoint {directory}: {CONFIG_FILE} is not a valid model config (not an object)")
    return fields
