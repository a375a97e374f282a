"""Training checkpoints: everything an exact resume needs, one directory per step, written atomically.

    OUT/checkpoints/step-00000120/
        model.safetensors, config.json   the weights and ModelConfig with the weights' SHA-256
                                         (mta.models.checkpoint's format, so `load_checkpoint` and `mta eval
                                         ppl` read a training checkpoint as is)
        optimizer.pt                     AdamW state, keyed by parameter name (torch.distributed.checkpoint's
                                         full state dict: the same file for one process, DDP or FSDP2)
        rng.pt                           the torch RNG states (CPU, and CUDA if any) of every rank
        trainer.json                     step, LR scheduler state, world size, the run's LMTrainConfig, and
                                         the SHA-256 of optimizer.pt and rng.pt

A checkpoint is written into a hidden temporary directory beside its final name, its files flushed to disk,
then renamed in one `os.replace`: a crash at any moment leaves either the complete checkpoint or none, and
`list_checkpoints` never returns a temporary directory. Older checkpoints are removed the same way round.
`read_checkpoint` checks every file against its recorded SHA-256, so bytes corrupted on disk are reported
(CheckpointError) rather than resumed from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mta.models import ModelConfig
from mta.models.checkpoint import (WEIGHTS_FILE, CheckpointError, flush_files, load_config, read_json, sha256_file,
                                   staging_directory, verify_weights, write_config)

CHECKPOINTS_DIR = "checkpoints"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
TRAINER_FILE = "trainer.json"
FORMAT = "mta-train-checkpoint-v1"
# LMTrainConfig keys a resumed run may change: they decide what is logged and kept, not what is computed.
RESUMABLE_CHANGES = frozenset({"log_every", "eval_every", "eval_windows", "eval_batch_size", "checkpoint_every",
                               "keep_checkpoints", "compile", "data"})
_NAME = re.compile(r"step-(\d{8})")
# ModelConfig fields a run started from another's weights (LMTrainConfig.init_from) may change: none of them
# changes a parameter's shape, and RoPE θ and the context length are what context extension raises.
INIT_CHANGES = frozenset({"rope_theta", "max_seq_len", "dropout", "backend"})


@dataclass
class TrainCheckpoint:
    """A training checkpoint in memory. weights / optimizer: full (unsharded) state dicts keyed by parameter
    name; rng: one {"cpu": ByteTensor, "cuda": ByteTensor | None} per rank; trainer: trainer.json's contents."""

    model_config: ModelConfig
    weights: dict[str, torch.Tensor]
    optimizer: dict
    rng: list[dict]
    trainer: dict

    @property
    def step(self) -> int:
        return self.trainer["step"]


def checkpoint_dir(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS_DIR / f"step-{step:08d}"


def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """The complete checkpoints of run directory `out_dir`, oldest first."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_dir() and _NAME.fullmatch(path.name))


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(out_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_checkpoint(path: str | os.PathLike, argument: str = "checkpoint") -> Path:
    """The checkpoint that `path` names, in every form the commands accept: `path` itself if it holds weights (a
    checkpoint directory, or a `mta toy train` run directory), else the newest checkpoints/step-*/ of the run
    directory `path` (a `mta train` run). CheckpointError naming `argument` (e.g. "--checkpoint") if neither."""
    path = Path(path)
    if (path / WEIGHTS_FILE).is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{argument}: {path} is neither a checkpoint (holding {WEIGHTS_FILE}) nor a run "
                              f"directory with {CHECKPOINTS_DIR}/step-*/ checkpoints")
    return latest


def training_seq_len(checkpoint: str | os.PathLike) -> int | None:
    """The seq_len a training checkpoint was trained at, None for other checkpoints."""
    path = Path(checkpoint) / TRAINER_FILE
    return json.loads(path.read_text(encoding="utf-8"))["config"]["seq_len"] if path.is_file() else None


def setting_changes(saved: dict, ours: dict, free: frozenset = frozenset()) -> str:
    """"key: saved -> ours, …" for the keys outside `free` whose values differ between two settings dicts (either
    may lack a key), in key order; "" when they agree."""
    diff = sorted(k for k in set(saved) | set(ours) if k not in free and saved.get(k) != ours.get(k))
    return ", ".join(f"{k}: {saved.get(k)!r} -> {ours.get(k)!r}" for k in diff)


def read_init_weights(path: str | os.PathLike, model_config: ModelConfig) -> tuple[Path, dict[str, torch.Tensor]]:
    """(the checkpoint directory, its weights) of `path` (`resolve_checkpoint`) for a run whose model is
    `model_config`; CheckpointError unless the saved ModelConfig equals it up to INIT_CHANGES."""
    directory = resolve_checkpoint(path)
    changes = setting_changes(dataclasses.asdict(load_config(directory)), dataclasses.asdict(model_config),
                              INIT_CHANGES)
    if changes:
        raise CheckpointError(f"init_from {directory}: model config differs from this run's ({changes}); only "
                              f"{sorted(INIT_CHANGES)} may change (set the others as the checkpoint has them)")
    verify_weights(directory)
    try:
        return directory, load_file(directory / WEIGHTS_FILE)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"init_from {directory}: {WEIGHTS_FILE} is missing or corrupt ({error})") from None


def write_checkpoint(directory: Path, checkpoint: TrainCheckpoint) -> Path:
    """Write `checkpoint` as `directory` atomically (module docstring); an existing `directory` is kept as is
    (a deterministic run rewriting a step would write the same bytes). CheckpointWriteError if the disk refuses."""
    if directory.exists():
        return directory
    with staging_directory(directory) as tmp:
        weights = {name: tensor.contiguous() for name, tensor in checkpoint.weights.items()}
        save_file(weights, tmp / WEIGHTS_FILE)
        write_config(tmp, checkpoint.model_config)
        torch.save(checkpoint.optimizer, tmp / OPTIMIZER_FILE)
        torch.save(checkpoint.rng, tmp / RNG_FILE)
        trainer = {"format": FORMAT, **checkpoint.trainer,
                   "sha256": {name: sha256_file(tmp / name) for name in (OPTIMIZER_FILE, RNG_FILE)}}
        (tmp / TRAINER_FILE).write_text(json.dumps(trainer, indent=2) + "\n", encoding="utf-8")
        flush_files(tmp)
        os.replace(tmp, directory)
    return directory


def read_checkpoint(directory: str | os.PathLike) -> TrainCheckpoint:
    """Load a checkpoint written by `write_checkpoint`; CheckpointError names a missing, unreadable or corrupt
    file (one that differs from the SHA-256 recorded for it)."""
    directory = Path(directory)
    trainer = _read_trainer(directory)
    model_config = load_config(directory)
    verify_weights(directory)
    try:
        weights = load_file(directory / WEIGHTS_FILE)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS_FILE} is missing or corrupt ({error})") from None
    for name, expected in trainer.pop("sha256", {}).items():
        if not (directory / name).is_file() or sha256_file(directory / name) != expected:
            raise CheckpointError(f"checkpoint {directory}: {name} is missing or corrupt (its SHA-256 differs "
                                  f"from the one in {TRAINER_FILE})")
    optimizer = _torch_load(directory / OPTIMIZER_FILE)
    rng = _torch_load(directory / RNG_FILE)
    return TrainCheckpoint(model_config, weights, optimizer, rng, trainer)


def check_resumable(checkpoint: TrainCheckpoint, directory: Path, model_config: ModelConfig, config: dict,
                    world_size: int) -> None:
    """CheckpointError unless this run (its ModelConfig, LMTrainConfig.to_dict() and world size) is the one that
    wrote `checkpoint`, up to RESUMABLE_CHANGES."""
    saved_model = dataclasses.asdict(checkpoint.model_config)
    model_diff = sorted(k for k, v in dataclasses.asdict(model_config).items() if saved_model.get(k) != v)
    if model_diff:
        raise CheckpointError(f"checkpoint {directory}: model config differs from this run's in {model_diff}")
    changes = setting_changes(checkpoint.trainer["config"], config, RESUMABLE_CHANGES)
    if changes:
        raise CheckpointError(f"checkpoint {directory}: training config differs from this run's ({changes}); "
                              "an exact resume needs the same settings")
    if checkpoint.trainer["world_size"] != world_size or len(checkpoint.rng) != world_size:
        raise CheckpointError(f"checkpoint {directory}: written by {checkpoint.trainer['world_size']} ranks, this "
                              f"run has {world_size}; an exact resume needs the same number")


def prune_checkpoints(out_dir: str | os.PathLike, keep: int) -> None:
    """Remove all but the newest `keep` (≥ 0) checkpoints (each renamed to a hidden name first, then deleted)."""
    paths = list_checkpoints(out_dir)
    for path in paths[: max(len(paths) - keep, 0)]:
        doomed = path.with_name(f".{path.name}.removing")
        os.replace(path, doomed)
        shutil.rmtree(doomed)


def corrupt_name(directory: Path) -> Path:
    """Where `set_aside` moves the checkpoint `directory`."""
    return directory.with_name(f"{directory.name}.corrupt")


def set_aside(directory: Path) -> None:
    """Rename a corrupt checkpoint to <name>.corrupt (replacing an earlier one): no longer listed, kept to inspect."""
    shutil.rmtree(corrupt_name(directory), ignore_errors=True)
    os.replace(directory, corrupt_name(directory))


def remove_incomplete(out_dir: str | os.PathLike) -> None:
    """Delete hidden leftovers (unfinished writes, interrupted removals) of a killed run."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if root.is_dir():
        for path in root.glob(".step-*"):
            shutil.rmtree(path, ignore_errors=True)


def _read_trainer(directory: Path) -> dict:
    trainer = read_json(directory, TRAINER_FILE, "not a training checkpoint", "valid JSON")
    if trainer.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {directory}: {TRAINER_FILE} has format {trainer.get('format')!r}, "
                              f"expected {FORMAT!r}")
    return trainer


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, IndexError, ValueError) as error:
        # torch's unpickler fails on a torn or foreign file with any of these
        raise CheckpointError(f"checkpoint {path.parent}: {path.name} is missing or corrupt ({error})") from None
