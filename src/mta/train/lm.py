"""Language-model training with the paper's recipe (docs/spec.md §3), from one CPU process to FSDP2 on GPUs.

    train_lm(LMTrainConfig(...), out_dir, resume=False)      # or: torchrun --nproc-per-node K -m mta.train ...

Each optimiser step runs grad_accum micro-batches of [batch_size, seq_len + 1] windows per rank
(`MixtureSampler`, a pure function of seed, step, micro-batch and rank), clips the gradient norm, steps AdamW
and the warmup-then-linear-decay schedule. The run directory:

    train_config.json   the resolved LMTrainConfig and ModelConfig, the world size and the environment
    metrics.jsonl       every log_every steps {"step", "loss" (mean over the steps since the previous line and
                        over ranks), "lr", "grad_norm" (of that step, before clipping), "tokens", "tokens_per_s",
                        "elapsed_s"}; every eval_every steps and at the end {"step", "val": {domain: {"loss",
                        "ppl", "tokens"}}, "val_mean_ppl"} (mta.train.lm_log, which also feeds TensorBoard)
    checkpoints/        step-NNNNNNNN every checkpoint_every steps and at the end (mta.train.checkpoint_state)

Fine-tuning (`init_from`, e.g. context extension): the model starts from another run's checkpoint, the
optimiser, schedule and step from scratch; train_config.json records the checkpoint used as "init_checkpoint".

Exact resume: a checkpoint holds the weights, AdamW and scheduler state, the step, every rank's RNG state and
the loss sum of the metrics line in progress, and batches depend only on (seed, step, micro, rank); so
`resume=True` continues from the newest checkpoint and reaches bit-identical weights (and metrics, up to
timings) to an uninterrupted run on the same hardware, thread count and world size.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor
from tqdm import tqdm

from mta.eval.ppl import TokenSplit, evaluate_ppl, load_split
from mta.models import DecoderLM
from mta.models.checkpoint import CheckpointError
from mta.provenance import run_metadata

from . import checkpoint_state as ckpt
from .distributed import Ranks, close_ranks, init_ranks, parallel_mode, parallelize, set_gradient_sync, uses_autocast
from .lm_config import LMTrainConfig
from .lm_data import MixtureSampler
from .lm_log import RunLog
from .runtime import autocast_dtype
from .schedule import warmup_schedule
from .signals import StopRequest

CONFIG_FILE = "train_config.json"
_FULL = StateDictOptions(full_state_dict=True)
_FULL_ON_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)


def train_lm(config: LMTrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
             missing_ok: bool = False) -> dict:
    """Train as `config` says into `out_dir` (module docstring); return the final {"step", "stopped" ("max_steps"
    or "interrupted"), "loss", "val_mean_ppl", "checkpoint"}.

    resume=True continues from the newest readable checkpoint in out_dir; ValueError if there is none, unless
    missing_ok (then it starts afresh). Without it, a directory that already holds checkpoints is refused.
    On SIGINT or SIGTERM (mta.train.signals; under torchrun, on every rank) the step in progress is finished and
    checkpointed, and the run returns with stopped = "interrupted". Under torchrun every rank calls this.
    """
    ranks = init_ranks(config.device)
    try:
        return _LMRun(config, Path(out_dir), ranks, resume, missing_ok).train(progress and ranks.is_main)
    finally:
        # The run (its DDP reducer holds the process group) is freed before the group is destroyed. Freed after
        # it, the reducer's deallocation ran the gloo group's destructor, which joins the group's worker threads,
        # while holding the GIL that a worker waited for to release a tensor: rank 1 of a CPU torchrun test hung
        # at exit once. The run's modules hold reference cycles, hence the collection.
        gc.collect()
        close_ranks(ranks)


def check_token_ids(split: TokenSplit, data: str) -> None:
    """ValueError naming the shard if a domain of `split` holds an id outside the vocabulary (a shard of the
    right size with corrupt bytes would otherwise fail deep inside the embedding). One pass over each shard."""
    for name, tokens in split.domains.items():
        largest = int(tokens.max()) if len(tokens) else -1
        if largest >= split.vocab_size:
            raise ValueError(f"data: domain {name!r} of {data} holds token id {largest}, outside the vocabulary of "
                             f"{split.vocab_size} (a corrupt shard? `mta data info --verify {data}` checks them)")


class _LMRun:
    """Data, model, optimiser and schedule of one run on this rank, restored from a checkpoint if resuming."""

    def __init__(self, config: LMTrainConfig, out_dir: Path, ranks: Ranks, resume: bool, missing_ok: bool = False):
        self.config, self.out_dir, self.ranks = config, out_dir, ranks
        # Everything that can be wrong with the data or a checkpoint is checked before the model is built.
        train_split, self.val_split = load_split(config.data, "train"), load_split(config.data, "val")
        self.model_config = config.model_config(train_split.vocab_size)
        if train_split.vocab_size > self.model_config.vocab_size:
            raise ValueError(f"model.vocab_size: got {self.model_config.vocab_size}, smaller than the dataset's "
                             f"vocabulary ({train_split.vocab_size})")
        for split in (train_split, self.val_split):
            check_token_ids(split, config.data)
        self.sampler = MixtureSampler(train_split, config.seq_len, config.batch_size, config.seed, config.mixture)
        self.corrupt: list[Path] = []  # checkpoints skipped by the resume
        checkpoint = self._checkpoint_to_resume(resume, missing_ok)
        # A fine-tuning run starts from another run's weights, unless it has a checkpoint of its own to resume.
        init = (ckpt.read_init_weights(config.init_from, self.model_config)
                if checkpoint is None and config.init_from is not None else None)
        self.init_dir = init[0] if init else None

        device = ranks.device
        self.mode = parallel_mode(config.parallel, ranks)
        amp = autocast_dtype(device, config.precision)
        self.amp_dtype = amp if uses_autocast(self.mode) else None
        torch.manual_seed(config.seed)
        with device:
            self.module = DecoderLM(self.model_config)
        self.model = parallelize(self.module, self.mode, ranks, amp, config.compile)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, betas=config.betas,
                                           eps=config.eps, weight_decay=config.weight_decay)
        self.schedule = warmup_schedule(self.optimizer, config.warmup, config.steps)
        # The losses of the steps since the last metrics line: their mean is the next line's loss.
        self.step, self.loss_sum, self.loss_steps = 0, torch.zeros((), device=device), 0
        if init is not None:
            self._load_weights(init[1], f"init_from {self.init_dir}")
        if checkpoint is None:
            # Dropout draws differ between ranks; the seed of each is fixed by (seed, rank).
            torch.manual_seed(int(np.random.SeedSequence([config.seed, ranks.rank]).generate_state(1)[0]))
        else:
            self._restore(checkpoint)
        self.tokens_per_step = config.batch_size * config.grad_accum * ranks.world_size * config.seq_len
        self.start, self.start_step = time.perf_counter(), self.step

    def _checkpoint_to_resume(self, resume: bool, missing_ok: bool) -> ckpt.TrainCheckpoint | None:
        """The newest readable checkpoint of out_dir. A corrupt one is skipped, with a warning, for the one before
        it, and set aside by rank 0 when training starts (CheckpointError if none is readable)."""
        checkpoints = ckpt.list_checkpoints(self.out_dir)
        if not checkpoints:
            if resume and not missing_ok:
                raise ValueError(f"resume: {self.out_dir} holds no checkpoint to continue from; --resume-or-start "
                                 "starts the run afresh instead")
            return None
        if not resume:
            raise ValueError(f"out: {self.out_dir} already holds checkpoints (newest {checkpoints[-1].name}); pass "
                             "--resume to continue that run or choose another directory")
        for directory in reversed(checkpoints):
            try:
                checkpoint = ckpt.read_checkpoint(directory)
                break
            except CheckpointError as error:
                if directory == checkpoints[0]:
                    raise CheckpointError(f"{error}; no older checkpoint to resume from") from None
                warnings.warn(f"{error}; resuming from the checkpoint before it (this one is renamed "
                              f"{ckpt.corrupt_name(directory).name})", stacklevel=2)
                self.corrupt.append(directory)
        ckpt.check_resumable(checkpoint, directory, self.model_config, self.config.to_dict(), self.ranks.world_size)
        return checkpoint

    def _load_weights(self, weights: dict[str, torch.Tensor], source: str) -> None:
        try:
            set_model_state_dict(self.module, weights, options=_FULL)
        except (RuntimeError, KeyError, ValueError) as error:
            raise CheckpointError(f"{source}: weights do not fit this model ({error})") from None

    def _restore(self, checkpoint: ckpt.TrainCheckpoint) -> None:
        self._load_weights(checkpoint.weights, f"checkpoint step {checkpoint.step}")
        try:
            set_optimizer_state_dict(self.module, self.optimizer, checkpoint.optimizer, options=_FULL)
        except (RuntimeError, KeyError, ValueError) as error:
            raise CheckpointError(f"checkpoint step {checkpoint.step}: state does not fit this model ({error})") \
                from None
        self.schedule.load_state_dict(checkpoint.trainer["scheduler"])
        rng = checkpoint.rng[self.ranks.rank]
        torch.set_rng_state(rng["cpu"])
        if self.ranks.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.ranks.device)
        self.step = checkpoint.step
        loss_sum, self.loss_steps = checkpoint.trainer["loss_window"]
        self.loss_sum.fill_(loss_sum)

    def train(self, progress: bool) -> dict:
        """Run the remaining steps, logging, evaluating and checkpointing; return the final summary."""
        config = self.config
        log = self._open_log()
        last = {"stopped": "max_steps"}
        self.model.train()
        with StopRequest() as stop, tqdm(total=config.steps, initial=self.step, desc=f"train {config.preset}",
                                         unit="step", disable=not progress) as bar:
            while self.step < config.steps:
                lr = self.optimizer.param_groups[0]["lr"]
                loss, grad_norm = self._train_step()
                self.loss_sum += loss
                self.loss_steps += 1
                bar.update()
                done = self.step == config.steps
                if self.step % config.log_every == 0 or done:
                    last["loss"] = self.ranks.all_reduce_mean(self.loss_sum / self.loss_steps).item()
                    self.loss_sum.zero_()
                    self.loss_steps = 0
                    log.write({"step": self.step, "loss": last["loss"], "lr": lr, "grad_norm": grad_norm.item(),
                               **self._throughput()})
                    bar.set_postfix(loss=f"{last['loss']:.4f}")
                if self.step % config.eval_every == 0 or done:
                    last["val_mean_ppl"] = log.write(self._validate())["val_mean_ppl"]
                if self.step % config.checkpoint_every == 0 or done:
                    last["checkpoint"] = str(self._save())
                if not done and self._stop_agreed(stop):
                    last["checkpoint"], last["stopped"] = str(self._save()), "interrupted"
                    break
        log.close()
        return {"step": self.step, **last}

    def _stop_agreed(self, stop: StopRequest) -> bool:
        """Whether any rank was sent SIGINT or SIGTERM (every rank gets the same answer, so all stop together)."""
        if self.ranks.world_size == 1:
            return stop.signal is not None
        flag = torch.tensor(float(stop.signal is not None), device=self.ranks.device)
        return self.ranks.all_reduce_mean(flag).item() > 0

    def _train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on grad_accum micro-batches; returns this rank's detached mean loss and the
        gradient norm before clipping (both 0-dim, no host sync)."""
        config, device = self.config, self.ranks.device
        total = torch.zeros((), device=device)
        for micro in range(config.grad_accum):
            window = self.sampler.batch(self.step, micro, self.ranks.rank)
            window = window.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else window
            set_gradient_sync(self.model, micro == config.grad_accum - 1)
            with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                loss = self.model(window[:, :-1], window[:, 1:]) / config.grad_accum
            loss.backward()
            total += loss.detach()
        max_norm = config.grad_clip if config.grad_clip is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if isinstance(grad_norm, DTensor):
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.step += 1
        return total, grad_norm

    def _validate(self) -> dict:
        config = self.config
        self.model.eval()
        result = evaluate_ppl(self.model, self.val_split, config.seq_len, config.eval_batch_size or config.batch_size,
                              config.eval_windows, self.ranks.device, self.amp_dtype, self.ranks.rank,
                              self.ranks.world_size)
        self.model.train()
        return {"step": self.step, "val": result["domains"], "val_mean_ppl": result["mean_ppl"]}

    def _save(self) -> Path:
        """Write the checkpoint of this step (every rank takes part in gathering state; rank 0 writes)."""
        weights = get_model_state_dict(self.module, options=_FULL_ON_CPU)
        optimizer = get_optimizer_state_dict(self.module, self.optimizer, options=_FULL_ON_CPU)
        cuda = self.ranks.device.type == "cuda"
        rng = self.ranks.all_gather_object({"cpu": torch.get_rng_state(),
                                            "cuda": torch.cuda.get_rng_state(self.ranks.device) if cuda else None})
        loss_sum = self.ranks.all_reduce_mean(self.loss_sum.clone()).item()
        directory = ckpt.checkpoint_dir(self.out_dir, self.step)
        if self.ranks.is_main:
            trainer = {"step": self.step, "world_size": self.ranks.world_size, "config": self.config.to_dict(),
                       "scheduler": self.schedule.state_dict(), "loss_window": [loss_sum, self.loss_steps]}
            ckpt.write_checkpoint(directory, ckpt.TrainCheckpoint(self.model_config, weights, optimizer, rng, trainer))
            ckpt.prune_checkpoints(self.out_dir, self.config.keep_checkpoints)
        self.ranks.barrier()
        return directory

    def _open_log(self) -> RunLog:
        """Rank 0 writes train_config.json and the metrics; leftovers of a killed process are removed first."""
        if not self.ranks.is_main:
            return RunLog(self.out_dir, self.step, enabled=False)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ckpt.remove_incomplete(self.out_dir)
        for directory in self.corrupt:
            ckpt.set_aside(directory)
        resolved = {"train": self.config.to_dict(), "model": dataclasses.asdict(self.model_config),
                    "world_size": self.ranks.world_size, "parallel": self.mode,
                    "parameters": self.module.num_parameters(), "environment": run_metadata()}
        if self.init_dir is not None:
            resolved["init_checkpoint"] = str(self.init_dir)
        (self.out_dir / CONFIG_FILE).write_text(json.dumps(resolved, indent=2) + "\n", encoding="utf-8")
        return RunLog(self.out_dir, self.step)

    def _throughput(self) -> dict:
        """Tokens trained on so far (all ranks) and this process's rate since it started."""
        elapsed = time.perf_counter() - self.start
        return {"tokens": self.step * self.tokens_per_step, "elapsed_s": elapsed,
                "tokens_per_s": (self.step - self.start_step) * self.tokens_per_step / elapsed}
