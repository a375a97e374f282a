"""Training on the toy task of the paper's Table 1 (docs/spec.md §5).

The defaults are the paper's: presets toy-transformer / toy-mta, AdamW lr 1e-4, β = (0.9, 0.98), weight decay 0,
1000 warmup steps then constant, batch 64, up to 100k steps. Training samples are drawn fresh from an endless
seeded stream; the held-out set is generated with another seed. Training stops early once the held-out sequence
error has been 0 at `patience` consecutive evaluations.

A run directory holds: metrics.jsonl (one line every `log_every` steps and at every evaluation), the final
checkpoint (model.safetensors + config.json, see mta.models.checkpoint; also written on Ctrl-C) and result.json.
A run that ends before its protocol does (time cap, Ctrl-C, SIGTERM) also leaves its training state in
checkpoints/step-<step>/ (mta.train.checkpoint_state's format: weights, AdamW and schedule state, RNG states, data
stream position, evaluations so far), from which `train_toy(..., resume=True)` continues it exactly; a run that
ends by the protocol (solved, or at `steps`) removes it.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import torch
from tqdm import tqdm

from mta.data import toy as toy_data
from mta.data.toy_tensor import draw_batch
from mta.eval.toy import IGNORE_INDEX, encode_batch, evaluate_toy
from mta.models import DecoderLM, ModelConfig, get_preset
from mta.models.checkpoint import CheckpointError, save_checkpoint
from mta.provenance import run_metadata

from . import checkpoint_state as ckpt
from .metrics import JsonlLog
from .runtime import autocast_dtype, resolve_device
from .schedule import warmup_schedule
from .signals import StopRequest
from .stream import SeededBatches

ARCHS = ("transformer", "mta")
DATA_SOURCES = ("auto", "python", "tensor")
# torch.compile of the training loss: off (eager), default (fused kernels) or reduce-overhead (also CUDA graphs)
COMPILE_MODES = ("off", "default", "reduce-overhead")
EVAL_SEED_OFFSET = 1000  # held-out set seed = seed + 1000 unless given
TENSOR_DRAW_STEPS = 16  # data="tensor": training batches drawn per call of draw_batch
# ToyTrainConfig fields a resumed run may change: they decide how it runs and what it logs, not what it computes.
RESUMABLE_CHANGES = frozenset({"compile", "log_every", "device"})


@dataclass
class ToyTrainConfig:
    """One toy-task run. Task: arch ("transformer" | "mta"), variant ("all" | "first" | "last"), n_block (N,
    letters per block), n_query (L), num_blocks (None: the most that fit 319 characters, as the paper).
    Optimisation: steps (the most), batch_size, lr, warmup (linear, then constant), betas, weight_decay,
    grad_clip (max gradient norm, None = off). Evaluation: every eval_every steps on eval_samples held-out
    samples drawn with eval_seed (None: seed + 1000); stop after `patience` consecutive evaluations at 0%
    sequence error. log_every: steps between metrics lines. device: "auto" | "cpu" | "cuda[:N]".
    precision: "auto" (bf16 autocast on CUDA, float32 on CPU) | "bf16" | "fp32".
    data: how training batches are drawn: "python" (mta.data.toy, one sample at a time), "tensor"
    (mta.data.toy_tensor, a batch at once on the device: the same distribution, other draws) or "auto" (tensor
    on CUDA, where the Python generator costs more than a step, python on CPU).
    model: ModelConfig overrides of the preset toy-<arch> (dim, n_layers, n_heads, dropout, backend, pre_kernel...).
    compile: torch.compile of the training loss (COMPILE_MODES): "default" fuses the many small elementwise
    kernels of a toy model, "reduce-overhead" also replays them as CUDA graphs; evaluation stays eager.
    """

    arch: str = "mta"
    variant: str = "all"
    n_block: int = 5
    n_query: int = 2
    num_blocks: int | None = None
    seed: int = 42
    steps: int = 100_000
    batch_size: int = 64
    lr: float = 1e-4
    warmup: int = 1000
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    eval_every: int = 1000
    eval_samples: int = 1000
    eval_seed: int | None = None
    patience: int = 3
    log_every: int = 100
    device: str = "auto"
    precision: str = "auto"
    data: str = "auto"
    model: dict[str, Any] = field(default_factory=dict)
    compile: str = "off"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch: got {self.arch!r}, expected one of {ARCHS}")
        for name in ("steps", "batch_size", "eval_every", "eval_samples", "patience", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: got {value!r}, expected a positive integer")
        if self.warmup < 0:
            raise ValueError(f"warmup: got {self.warmup}, expected >= 0")
        if not self.lr > 0:
            raise ValueError(f"lr: got {self.lr}, expected > 0")
        if self.num_blocks is None:
            self.num_blocks = toy_data.default_num_blocks(self.n_block, self.n_query)
        # Draw one sample to validate the task settings now rather than inside the loop.
        toy_data.make_sample(random.Random(0), self.n_block, self.n_query, self.variant, self.num_blocks)
        if self.data not in DATA_SOURCES:
            raise ValueError(f"data: got {self.data!r}, expected one of {DATA_SOURCES}")
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile: got {self.compile!r}, expected one of {COMPILE_MODES}")
        if self.eval_seed is None:
            self.eval_seed = self.seed + EVAL_SEED_OFFSET
        self._warn_if_kernel_misses_blocks()

    def _warn_if_kernel_misses_blocks(self) -> None:
        """Warn when the centred key window (c_k wide) cannot cover a whole block from its first or last letter,
        i.e. c_k < 2·n_block − 1: with 2×9 at N = 8, MTA failed the task (docs/results/toy.md, "the key window's reach")."""
        kernel = self.model_config().pre_kernel
        reach = 2 * self.n_block - 1
        if kernel is not None and kernel[1] < reach:
            warnings.warn(
                f"pre_kernel: c_k = {kernel[1]} < 2·n_block − 1 = {reach}: the key window does not cover a whole "
                f"block of {self.n_block} letters from its first or last letter, so MTA may not find the block "
                f"(with 2×9 it failed N = 8); --kernel {kernel[0]} {reach} (pre_kernel ({kernel[0]}, {reach})) covers it",
                stacklevel=4,
            )

    @property
    def sequence_length(self) -> int:
        """Model input length of a sample: BOS + src + tgt (EOS is only predicted)."""
        src = self.num_blocks * (self.n_block + 1) + self.n_query
        tgt = self.n_block if self.variant == "all" else 1
        return 1 + src + tgt

    def model_config(self) -> ModelConfig:
        """The preset toy-<arch> with the `model` overrides; max_seq_len grows to fit the samples if needed."""
        preset = get_preset(f"toy-{self.arch}")
        overrides = {"max_seq_len": max(preset.max_seq_len, self.sequence_length), **self.model}
        return get_preset(f"toy-{self.arch}", **overrides)


def train_toy(config: ToyTrainConfig, out_dir: str | Path, progress: bool = True,
              max_minutes: float | None = None, resume: bool = False, missing_ok: bool = False) -> dict:
    """Train one model as `config` says, writing the run directory `out_dir`; return result.json's contents.

    max_minutes: wall-time cap of this call (None: none); at the cap the run is evaluated, saved with its training
    state and ended with stopped = "time_limit". On SIGINT or SIGTERM (mta.train.signals) the step in progress is
    finished, then the run is saved with its training state and ended with stopped = "interrupted". A
    KeyboardInterrupt raised otherwise (a second Ctrl-C) writes the same, without the training state if it fell
    inside a step, and is raised again. resume: continue from the training state in `out_dir` (module
    docstring); ValueError if there is none, unless missing_ok (then start afresh); CheckpointError if that state
    belongs to another run.
    """
    run = ToyRun(config, Path(out_dir), max_minutes, resume, missing_ok)
    with StopRequest() as stop, JsonlLog(run.out_dir / "metrics.jsonl", append=run.step > 0) as log:
        try:
            run.train(log, progress, stop)
        except KeyboardInterrupt:
            run.stopped = "interrupted"
            run.finish()
            raise
    return run.finish()


class TrainingStream:
    """Endless (inputs, targets) [B, T] training batches on `device` from the source `config.data` names, seeded
    by config.seed. `state()` is its position between batches; TrainingStream(config, device, state) goes on
    from there with the same batches the first stream would have drawn."""

    def __init__(self, config: ToyTrainConfig, device: torch.device, state: dict | None = None):
        self.batch_size, self.device = config.batch_size, device
        self.task = (config.n_block, config.n_query, config.variant, config.num_blocks)
        self.on_device = config.data == "tensor" or (config.data == "auto" and device.type == "cuda")
        if self.on_device:
            # Batches are drawn TENSOR_DRAW_STEPS at a time: the rejection sampling syncs with the device once a
            # draw. The position is the generator's state before the current draw and the batches taken from it.
            self.generator = torch.Generator(device=device).manual_seed(config.seed)
            self.draw_state, self.drawn, self.taken = None, [], 0
            if state is not None and state["draw_state"] is not None:
                self.generator.set_state(state["draw_state"])
                self._draw()
                self.taken = state["taken"]
        else:
            self.samples = SeededBatches(lambda rng: toy_data.make_sample(rng, *self.task), config.batch_size,
                                         f"train-{config.seed}")
            if state is not None:
                self.samples.load_state(state["python_rng"])

    def __iter__(self) -> "TrainingStream":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.on_device:
            return encode_batch(next(self.samples), self.device)
        if self.taken == len(self.drawn):
            self._draw()
        self.taken += 1
        return self.drawn[self.taken - 1]

    def _draw(self) -> None:
        self.draw_state = self.generator.get_state()
        inputs, targets = draw_batch(self.batch_size * TENSOR_DRAW_STEPS, *self.task, self.generator, self.device,
                                     IGNORE_INDEX)
        self.drawn, self.taken = list(zip(inputs.split(self.batch_size), targets.split(self.batch_size))), 0

    def state(self) -> dict:
        if self.on_device:
            return {"draw_state": self.draw_state, "taken": self.taken}
        return {"python_rng": self.samples.state()}


class ToyRun:
    """The state of one toy run (what `train_toy` trains): model, optimiser, data, evaluations so far and how the
    run ended.

    config: the run's ToyTrainConfig; out_dir: its run directory (Path), created if missing; max_minutes: wall-time
    cap or None; resume: continue from the training state in out_dir (missing_ok: start afresh if there is none).
    `train_step()` takes one optimiser step on a fresh batch of inputs, targets [B, T] and returns the loss, a
    0-dim tensor; `device` is the torch.device it trains on.
    """

    def __init__(self, config: ToyTrainConfig, out_dir: Path, max_minutes: float | None = None,
                 resume: bool = False, missing_ok: bool = False):
        self.config, self.out_dir = config, out_dir
        saved = ckpt.latest_checkpoint(out_dir) if resume else None
        if resume and saved is None and not missing_ok:
            raise ValueError(f"resume: {out_dir} holds no training state to continue (a run leaves one in "
                             f"{ckpt.CHECKPOINTS_DIR}/ when stopped by its time cap, Ctrl-C or SIGTERM); "
                             "--resume-or-start starts afresh instead")
        out_dir.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(config.device)
        self.amp_dtype = autocast_dtype(self.device, config.precision)
        torch.manual_seed(config.seed)
        self.model = DecoderLM(config.model_config()).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
        self.schedule = warmup_schedule(self.optimizer, config.warmup)
        self.loss = compiled(self.model, config.compile)
        self.held_out = held_out_samples(config)
        self.step, self.stopped, self.zero_streak = 0, "max_steps", 0
        self.evaluations: list[dict] = []
        # The losses of the steps since the last metrics line: their mean is the next line's loss.
        self.loss_sum, self.loss_count = torch.zeros((), device=self.device), 0
        self.resumed_at: list[int] = []  # the steps this run was resumed from
        self.mid_step = False  # inside train_step: a Ctrl-C now may leave the step half applied
        self.earlier_s = 0.0  # training time of the calls before this one
        self.batches = TrainingStream(config, self.device, self._restore(saved) if saved else None)
        self.start = time.perf_counter()
        self.deadline = None if max_minutes is None else self.start + 60 * max_minutes

    def _restore(self, directory: Path) -> dict:
        """Load the training state saved in `directory` (model, optimiser, schedule, RNG, evaluations) and cut
        metrics.jsonl back to its step; return the data stream's position."""
        state = read_state(directory, self.config)
        if "schedule" not in state.trainer:
            raise CheckpointError(f"resume from {directory}: a state of stacked runs (`mta toy sweep`), which "
                                  "`train_toy_stack(..., resume=True)` (`mta toy sweep --resume`) continues")
        self.model.load_state_dict(state.weights)
        self.optimizer.load_state_dict(state.optimizer)
        self.schedule.load_state_dict(state.trainer["schedule"])
        torch.set_rng_state(state.rng[0]["cpu"])
        if self.device.type == "cuda" and state.rng[0]["cuda"] is not None:
            torch.cuda.set_rng_state(state.rng[0]["cuda"], self.device)
        self.step, self.zero_streak = state.trainer["step"], state.trainer["zero_streak"]
        self.evaluations = state.trainer["evaluations"]
        loss_sum, self.loss_count = state.trainer.get("loss_window", (0.0, 0))  # states of before it had none
        self.loss_sum.fill_(loss_sum)
        self.resumed_at = state.trainer["resumed_at"] + [self.step]
        self.earlier_s = state.trainer["elapsed_s"]
        cut_metrics(self.out_dir, self.step)
        return state.rng[0]["toy_data"]

    def train(self, log: JsonlLog, progress: bool, stop: StopRequest) -> None:
        """Run the optimisation steps, logging and evaluating, until solved, out of steps or time, or stopped by
        a signal (then without a final evaluation)."""
        config = self.config
        self.model.train()
        with tqdm(total=config.steps, desc=f"toy {config.arch}", unit="step", disable=not progress, leave=False) as bar:
            while self.step < config.steps:
                lr = self.optimizer.param_groups[0]["lr"]
                self.loss_sum += self.train_step()
                self.loss_count += 1
                bar.update()
                if self.deadline is not None and time.perf_counter() >= self.deadline:
                    self.stopped = "time_limit"
                    break
                is_eval = self.step % config.eval_every == 0
                if is_eval or self.step % config.log_every == 0:
                    record = {"step": self.step, "loss": self.loss_sum.item() / self.loss_count, "lr": lr}
                    self.loss_sum.zero_()
                    self.loss_count = 0
                    if is_eval:
                        record.update(self.evaluate())
                    log.write({**record, "elapsed_s": self.elapsed()})
                    bar.set_postfix(loss=f"{record['loss']:.4f}", **self.postfix())
                    if self.zero_streak >= config.patience:
                        self.stopped = "solved"
                        break
                if stop.signal is not None:
                    self.stopped = "interrupted"
                    return
        if not self.evaluations or self.evaluations[-1]["step"] != self.step:
            log.write({"step": self.step, **self.evaluate(), "elapsed_s": self.elapsed()})

    def train_step(self) -> torch.Tensor:
        """One optimiser step on a fresh batch; returns the detached loss (no device sync)."""
        self.mid_step = True
        inputs, targets = next(self.batches)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.loss(inputs, targets, ignore_index=IGNORE_INDEX)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        self.step += 1
        self.mid_step = False
        return loss.detach()

    def evaluate(self) -> dict:
        """Evaluate on the held-out set, update the run of 0% evaluations; return the metrics fields."""
        result = evaluate_toy(self.model, self.held_out, autocast_dtype=self.amp_dtype)
        self.zero_streak, fields = record_evaluation(self.evaluations, self.zero_streak, self.step, result)
        return fields

    def postfix(self) -> dict:
        return {"seq_err": f"{self.evaluations[-1]['sequence_error_pct']:.1f}%"} if self.evaluations else {}

    def elapsed(self) -> float:
        """Training time so far, over every call that trained this run."""
        return self.earlier_s + time.perf_counter() - self.start

    def finish(self) -> dict:
        """Save the checkpoint and result.json, and the training state if the run may go on (time cap, Ctrl-C
        between steps; after a Ctrl-C inside a step an earlier state is kept) or remove it if it ended by the
        protocol; return the result."""
        result = {**self.result(), "resumed_at": self.resumed_at}
        if self.stopped in ("time_limit", "interrupted"):
            if not self.mid_step:
                self.save_state(result["elapsed_s"])
        else:
            ckpt.prune_checkpoints(self.out_dir, keep=0)
        return save_run(self.out_dir, self.model, result)

    def save_state(self, elapsed_s: float) -> None:
        """Write checkpoints/step-<step>/ (atomically) and remove older ones."""
        cuda = self.device.type == "cuda"
        # The data stream's position (generator states, not JSON) travels with the torch RNG states.
        rng = [{"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
                "toy_data": self.batches.state()}]
        trainer = {"step": self.step, "schedule": self.schedule.state_dict(), "world_size": 1,
                   "config": dataclasses.asdict(self.config), "zero_streak": self.zero_streak,
                   "evaluations": self.evaluations, "resumed_at": self.resumed_at, "elapsed_s": elapsed_s,
                   "loss_window": [self.loss_sum.item(), self.loss_count]}
        weights = {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()}
        state = ckpt.TrainCheckpoint(self.model.config, weights, self.optimizer.state_dict(), rng, trainer)
        ckpt.write_checkpoint(ckpt.checkpoint_dir(self.out_dir, self.step), state)
        ckpt.prune_checkpoints(self.out_dir, keep=1)

    def result(self) -> dict:
        return toy_result(self.config, self.model, self.step, self.stopped, self.evaluations, self.zero_streak,
                          self.elapsed())


def read_state(directory: Path, config: ToyTrainConfig) -> ckpt.TrainCheckpoint:
    """The training state saved in `directory`; CheckpointError unless its run had `config`'s settings (up to
    RESUMABLE_CHANGES)."""
    state = ckpt.read_checkpoint(directory)
    ours = json.loads(json.dumps(dataclasses.asdict(config)))  # as trainer.json holds it
    changes = ckpt.setting_changes(state.trainer["config"], ours, RESUMABLE_CHANGES)
    if changes:
        raise CheckpointError(f"resume from {directory}: its run had other settings ({changes}); an exact "
                              f"resume needs the same ones (only {sorted(RESUMABLE_CHANGES)} may change)")
    return state


def cut_metrics(out_dir: Path, step: int) -> None:
    """Drop the lines of out_dir/metrics.jsonl after `step` (written after the training state a run resumes from)."""
    metrics = out_dir / "metrics.jsonl"
    kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= step]
    metrics.write_text("".join(line + "\n" for line in kept))


def compiled(function, mode: str):
    """`function` itself for mode "off", else torch.compile(function, mode=mode) (see COMPILE_MODES)."""
    return function if mode == "off" else torch.compile(function, mode=mode)


def record_evaluation(evaluations: list[dict], zero_streak: int, step: int, result: dict) -> tuple[int, dict]:
    """Append `result` (evaluate_toy's) at `step` to `evaluations`; return the new streak of 0% evaluations
    (early stopping) and the metrics-line fields."""
    evaluations.append({"step": step, **result})
    zero_streak = zero_streak + 1 if result["sequence_error_pct"] == 0 else 0
    return zero_streak, {"eval_sequence_error_pct": result["sequence_error_pct"],
                         "eval_token_error_pct": result["token_error_pct"]}


def save_run(out_dir: Path, model: DecoderLM, result: dict) -> dict:
    """Write a finished run's checkpoint and result.json into `out_dir`; return `result`."""
    save_checkpoint(model, out_dir)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def held_out_samples(config: ToyTrainConfig) -> list[dict]:
    """The run's held-out set: config.eval_samples samples drawn with config.eval_seed."""
    task = (config.n_block, config.n_query, config.variant)
    return toy_data.generate(*task, config.eval_samples, config.eval_seed, config.num_blocks)


def toy_result(config: ToyTrainConfig, model: DecoderLM, step: int, stopped: str, evaluations: list[dict],
               zero_streak: int, elapsed_s: float) -> dict:
    """result.json of a run: the task, how it ended (`stopped`: "solved", "max_steps", "time_limit" or
    "interrupted"), its errors (`evaluations`: {"step", **evaluate_toy's result} in order, the last `zero_streak`
    of them at 0%), its settings and where it ran."""
    best = min(evaluations, key=lambda e: (e["sequence_error_pct"], e["token_error_pct"]), default={})
    final = evaluations[-1] if evaluations else {}
    solved = stopped == "solved"
    return {
        "arch": config.arch,
        "variant": config.variant,
        "n_block": config.n_block,
        "n_query": config.n_query,
        "num_blocks": config.num_blocks,
        "seed": config.seed,
        "steps": step,
        "stopped": stopped,
        # The first evaluation of the closing run of 0% evaluations that stopped training.
        "solved_step": evaluations[-zero_streak]["step"] if solved else None,
        "best_sequence_error_pct": best.get("sequence_error_pct"),
        "best_token_error_pct": best.get("token_error_pct"),
        "best_step": best.get("step"),
        "final_sequence_error_pct": final.get("sequence_error_pct"),
        "final_token_error_pct": final.get("token_error_pct"),
        "final_position_error_pct": final.get("position_error_pct"),
        "final_sequence_error_pct_by_reach": final.get("sequence_error_pct_by_reach"),
        "eval_samples": config.eval_samples,
        "elapsed_s": elapsed_s,
        "parameters": model.num_parameters(),
        "device": str(next(model.parameters()).device),
        "train_config": dataclasses.asdict(config),
        "model_config": dataclasses.asdict(model.config),
        "environment": run_metadata(),
    }
