"""Training on the toy task of the paper's Table 1 (shared/mta-spec.md §5).

The defaults are the paper's: presets toy-transformer / toy-mta, AdamW lr 1e-4, β = (0.9, 0.98), weight decay 0,
1000 warmup steps then constant, batch 64, up to 100k steps. Training samples are drawn fresh from an endless
seeded stream; the held-out set is generated with another seed. Training stops early once the held-out sequence
error has been 0 at `patience` consecutive evaluations.

A run directory holds: metrics.jsonl (one line every `log_every` steps and at every evaluation), the final
checkpoint (model.safetensors + config.json, see mta.models.checkpoint; also written on Ctrl-C) and result.json.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
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
from mta.models.checkpoint import save_checkpoint
from mta.provenance import run_metadata

from .metrics import JsonlLog
from .runtime import autocast_dtype, resolve_device
from .schedule import warmup_schedule
from .stream import seeded_batches

ARCHS = ("transformer", "mta")
DATA_SOURCES = ("auto", "python", "tensor")
# torch.compile of the training loss: off (eager), default (fused kernels) or reduce-overhead (also CUDA graphs)
COMPILE_MODES = ("off", "default", "reduce-overhead")
EVAL_SEED_OFFSET = 1000  # held-out set seed = seed + 1000 unless given
TENSOR_DRAW_STEPS = 16  # data="tensor": training batches drawn per call of draw_batch


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
              max_minutes: float | None = None) -> dict:
    """Train one model as `config` says, writing the run directory `out_dir`; return result.json's contents.

    max_minutes: wall-time cap (None: none); at the cap the run is evaluated, saved and ended with
    stopped = "time_limit". On KeyboardInterrupt the checkpoint and result.json (stopped = "interrupted") are
    written, then the interrupt is raised again.
    """
    run = _ToyRun(config, Path(out_dir), max_minutes)
    with JsonlLog(run.out_dir / "metrics.jsonl") as log:
        try:
            run.train(log, progress)
        except KeyboardInterrupt:
            run.stopped = "interrupted"
            run.finish()
            raise
    return run.finish()


def training_batches(config: ToyTrainConfig, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (inputs, targets) [B, T] batches on `device` from the source `config.data` names, seeded by config.seed."""
    task = (config.n_block, config.n_query, config.variant, config.num_blocks)
    if config.data == "tensor" or (config.data == "auto" and device.type == "cuda"):
        # Batches are drawn TENSOR_DRAW_STEPS at a time: the rejection sampling syncs with the device once a draw.
        generator = torch.Generator(device=device).manual_seed(config.seed)
        while True:
            inputs, targets = draw_batch(config.batch_size * TENSOR_DRAW_STEPS, *task, generator, device, IGNORE_INDEX)
            yield from zip(inputs.split(config.batch_size), targets.split(config.batch_size))
    for samples in seeded_batches(lambda rng: toy_data.make_sample(rng, *task), config.batch_size, f"train-{config.seed}"):
        yield encode_batch(samples, device)


class _ToyRun:
    """The state of one run: model, optimiser, data, evaluations so far and how the run ended."""

    def __init__(self, config: ToyTrainConfig, out_dir: Path, max_minutes: float | None = None):
        self.config, self.out_dir = config, out_dir
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
        self.batches = training_batches(config, self.device)
        self.step, self.stopped, self.zero_streak = 0, "max_steps", 0
        self.evaluations: list[dict] = []
        self.start = time.perf_counter()
        self.deadline = None if max_minutes is None else self.start + 60 * max_minutes

    def train(self, log: JsonlLog, progress: bool) -> None:
        """Run the optimisation steps, logging and evaluating, until solved or out of steps."""
        config = self.config
        loss_sum, loss_count = torch.zeros((), device=self.device), 0
        self.model.train()
        with tqdm(total=config.steps, desc=f"toy {config.arch}", unit="step", disable=not progress, leave=False) as bar:
            while self.step < config.steps:
                lr = self.optimizer.param_groups[0]["lr"]
                loss_sum += self.train_step()
                loss_count += 1
                bar.update()
                if self.deadline is not None and time.perf_counter() >= self.deadline:
                    self.stopped = "time_limit"
                    break
                is_eval = self.step % config.eval_every == 0
                if not (is_eval or self.step % config.log_every == 0):
                    continue
                record = {"step": self.step, "loss": loss_sum.item() / loss_count, "lr": lr}
                loss_sum.zero_()
                loss_count = 0
                if is_eval:
                    record.update(self.evaluate())
                log.write({**record, "elapsed_s": self.elapsed()})
                bar.set_postfix(loss=f"{record['loss']:.4f}", **self.postfix())
                if self.zero_streak >= config.patience:
                    self.stopped = "solved"
                    break
        if not self.evaluations or self.evaluations[-1]["step"] != self.step:
            log.write({"step": self.step, **self.evaluate(), "elapsed_s": self.elapsed()})

    def train_step(self) -> torch.Tensor:
        """One optimiser step on a fresh batch; returns the detached loss (no device sync)."""
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
        return loss.detach()

    def evaluate(self) -> dict:
        """Evaluate on the held-out set, update the run of 0% evaluations; return the metrics fields."""
        result = evaluate_toy(self.model, self.held_out, autocast_dtype=self.amp_dtype)
        self.zero_streak, fields = record_evaluation(self.evaluations, self.zero_streak, self.step, result)
        return fields

    def postfix(self) -> dict:
        return {"seq_err": f"{self.evaluations[-1]['sequence_error_pct']:.1f}%"} if self.evaluations else {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def finish(self) -> dict:
        """Save the checkpoint and result.json; return the result."""
        return save_run(self.out_dir, self.model, self.result())

    def result(self) -> dict:
        return toy_result(self.config, self.model, self.step, self.stopped, self.evaluations, self.zero_streak,
                          self.elapsed())


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
    "interrupted"), its errors (`evaluations`: {"step", "sequence_error_pct", "token_error_pct"} in order,
    the last `zero_streak` of them at 0%), its settings and where it ran."""
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
        "eval_samples": config.eval_samples,
        "elapsed_s": elapsed_s,
        "parameters": model.num_parameters(),
        "device": str(next(model.parameters()).device),
        "train_config": dataclasses.asdict(config),
        "model_config": dataclasses.asdict(model.config),
        "environment": run_metadata(),
    }
