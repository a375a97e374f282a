"""Many toy-task runs trained at once, in one process on one device (the paper's Table 1 has 36 of them).

One toy model (3.4M parameters) leaves an H200 mostly idle, and 36 processes sharing it spend their time in
launch overhead. Here R runs of one architecture become one model whose parameters carry a leading replica
axis: `torch.func.vmap` over `functional_call` computes the R losses in one pass of batched kernels, their sum
backpropagates to every replica's own gradients, and AdamW, elementwise, updates each replica as it would
alone. The runs may differ in task (variant, N, L, blocks) and seed, not in model or optimiser settings;
shorter samples are padded on the right, which a causal model (MTA included: Mask0 hides every later key)
cannot see.

Each run keeps its own seed, data stream (`TrainingStream`, data="tensor"), held-out set, evaluations, early
stopping, run directory and result.json, exactly as `train_toy` writes them; without dropout a stacked run
computes what `train_toy` computes (the tests check it). Attention dropout draws its masks for the whole stack,
so with dropout the masks differ from a lone run's. A run that is solved leaves the stack at once; at
`max_minutes` every run still going is evaluated, saved and ended with stopped = "time_limit".

A stack that ends before its protocol does (time cap, SIGINT, SIGTERM) leaves each run still going its training
state in <run>/checkpoints/step-<step>/ (mta.train.checkpoint_state's format: the run's weights, its slice of
the stack's AdamW state, the stack's RNG state, its data stream position and evaluations; no LR-scheduler state,
the stack's rate follows from the step), from which `train_toy_stack(..., resume=True)` continues the stack
exactly; a run that ends by the protocol removes it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.attention import sdpa_kernel
from tqdm import tqdm

from mta.data.toy import PAD_ID
from mta.eval.toy import IGNORE_INDEX, evaluate_toy
from mta.layers.attention import SDPA_BACKENDS_WITHOUT_CUDNN
from mta.models import DecoderLM

from . import checkpoint_state as ckpt
from .metrics import JsonlLog
from .runtime import autocast_dtype, resolve_device
from .schedule import lr_factor
from .signals import StopRequest
from .toy import (ToyTrainConfig, TrainingStream, compiled, cut_metrics, held_out_samples, read_state,
                  record_evaluation, save_run, toy_result)

# The settings every run of a stack shares (the task fields and seeds may differ).
SHARED_FIELDS = ("arch", "steps", "batch_size", "lr", "warmup", "betas", "weight_decay", "grad_clip", "eval_every",
                 "eval_samples", "patience", "log_every", "device", "precision", "model", "compile")


@dataclass
class _Run:
    """One run of the stack: its settings, data, held-out set, log and evaluations so far."""

    position: int  # in the configs given to train_toy_stack
    config: ToyTrainConfig
    out_dir: Path
    log: JsonlLog
    batches: object
    held_out: list[dict]
    evaluations: list[dict] = field(default_factory=list)
    zero_streak: int = 0


def train_toy_stack(configs: list[ToyTrainConfig], out_dirs: list[str | Path], progress: bool = True,
                    max_minutes: float | None = None, resume: bool = False, missing_ok: bool = False) -> list[dict]:
    """Train the runs `configs` together, run i writing the run directory `out_dirs[i]`; return their results.

    configs: ToyTrainConfigs that agree on SHARED_FIELDS; their data must be "tensor" or "auto" (taken as
    "tensor" on any device).
    max_minutes: wall-time cap for the whole stack (None: none). On SIGINT or SIGTERM (mta.train.signals) the
    step in progress is finished, then every run still going is saved with its training state and stopped =
    "interrupted". A KeyboardInterrupt raised otherwise (a second Ctrl-C) saves them evaluated, without a training
    state, and is raised again. resume: continue the stack from its runs' training states (module docstring),
    the runs that had ended by the protocol keeping their results; ValueError if no run has one, unless
    missing_ok (then start afresh); CheckpointError if a state belongs to another run.
    """
    _check_stack(configs, out_dirs)
    configs = [dataclasses.replace(c, data="tensor") if c.data == "auto" else c for c in configs]
    out_dirs = [Path(d) for d in out_dirs]
    saved, ended = _resume_plan(out_dirs, resume, missing_ok)
    stack = ToyStack(configs, out_dirs, max_minutes, saved, ended)
    try:
        with StopRequest() as stop:
            stack.train(progress, stop)
    except KeyboardInterrupt:
        stack.finish_all("interrupted")
        raise
    finally:
        for run in stack.runs:
            run.log.close()
    return [ended[i] if i in ended else stack.results[i] for i in range(len(configs))]


def _resume_plan(out_dirs: list[Path], resume: bool, missing_ok: bool) -> tuple[list[Path | None], dict[int, dict]]:
    """The training state each run resumes from (None: none) and the results of the runs that ended by the
    protocol before (by position); a resumed stack goes on with the runs it stopped, all at one step."""
    saved = [ckpt.latest_checkpoint(d) if resume else None for d in out_dirs]
    if not resume or not any(saved):
        if resume and not missing_ok:
            raise ValueError(f"resume: none of the {len(out_dirs)} run directories holds a training state to "
                             f"continue (a stack leaves one in each run's {ckpt.CHECKPOINTS_DIR}/ when stopped by "
                             "its time cap, Ctrl-C or SIGTERM); --resume-or-start starts afresh instead")
        return [None] * len(out_dirs), {}
    if len({state.name for state in saved if state is not None}) > 1:
        raise ValueError(f"resume: the runs' training states are at different steps "
                         f"({sorted({state.name for state in saved if state is not None})}); a stack resumes at one")
    ended = {}
    for i, (out_dir, state) in enumerate(zip(out_dirs, saved)):
        result_file = out_dir / "result.json"
        result = json.loads(result_file.read_text()) if state is None and result_file.is_file() else {}
        if state is None and result.get("stopped") not in ("solved", "max_steps"):
            raise ValueError(f"resume: {out_dir} holds neither a training state nor a finished run, but the "
                             "other runs hold states; train it in a stack of its own")
        if result:
            ended[i] = result
    return saved, ended


def _check_stack(configs: list[ToyTrainConfig], out_dirs: list) -> None:
    if not configs:
        raise ValueError("configs: got none, expected at least one ToyTrainConfig")
    if len(out_dirs) != len(configs):
        raise ValueError(f"out_dirs: got {len(out_dirs)} directories for {len(configs)} configs")
    if len({str(Path(d).resolve()) for d in out_dirs}) != len(out_dirs):
        raise ValueError("out_dirs: every run needs its own directory, got repeats")
    first = configs[0]
    for index, config in enumerate(configs):
        for name in SHARED_FIELDS:
            if getattr(config, name) != getattr(first, name):
                raise ValueError(f"configs[{index}].{name}: got {getattr(config, name)!r}, but a stack shares "
                                 f"it and configs[0] has {getattr(first, name)!r}")
        if config.data == "python":
            raise ValueError(f"configs[{index}].data: got 'python', a stack draws its batches as tensors "
                             "('tensor' or 'auto')")


class ToyStack:
    """R toy runs trained as one stack (what `train_toy_stack` trains): the stacked parameters, their optimiser and
    the runs still training.

    configs: the R runs' ToyTrainConfigs (one architecture, compile mode, device and precision); out_dirs: their R run
    directories (Paths); max_minutes: wall-time cap or None. `train_step(lr)` takes one AdamW step of every run on
    its own batch of inputs, targets [R, B, T] and returns the losses [R]; `device` is the torch.device it trains on.

    saved: the training state each run resumes from (None: it starts afresh; default: none does); ended: the
    positions of runs that ended before, left out of the stack (their task still sets the stack's padded length,
    as it did)."""

    def __init__(self, configs: list[ToyTrainConfig], out_dirs: list[Path], max_minutes: float | None,
                 saved: list[Path | None] | None = None, ended: dict[int, dict] | None = None):
        saved, ended = saved or [None] * len(configs), ended or {}
        first = configs[0]
        self.device = resolve_device(first.device)
        self.amp_dtype = autocast_dtype(self.device, first.precision)
        self.shared = first
        self.deadline = None if max_minutes is None else time.perf_counter() + 60 * max_minutes
        self.start = time.perf_counter()
        # Runs with longer samples may need a larger max_seq_len; the stack's models share the largest one.
        max_seq_len = max(c.model_config().max_seq_len for c in configs)
        going = [i for i in range(len(configs)) if i not in ended]
        models = []
        for config in (configs[i] for i in going):
            torch.manual_seed(config.seed)
            models.append(DecoderLM(dataclasses.replace(config.model_config(), max_seq_len=max_seq_len)))
        self.scratch = models[0].to(self.device)  # evaluation and checkpoints load one run's weights into it
        self.base = copy.deepcopy(models[0]).to("meta")
        params, self.buffers = stack_module_state([m.to(self.device) for m in models])
        self.params = {name: p.detach().requires_grad_() for name, p in params.items()}
        self.optimizer = self._adamw(self.params.values())
        self.losses = compiled(self._stacked_losses, first.compile)  # recompiled when runs leave the stack
        self.results: dict[int, dict] = {}
        self.step = 0
        self.length = max(c.sequence_length for c in configs)
        self.loss_sum, self.loss_count = torch.zeros(len(going), device=self.device), 0  # since the last log
        states = [read_state(saved[i], configs[i]) if saved[i] else None for i in going]
        self.runs = []
        for r, (position, state) in enumerate(zip(going, states)):
            config, out_dir = configs[position], out_dirs[position]
            out_dir.mkdir(parents=True, exist_ok=True)
            if state is not None:
                cut_metrics(out_dir, state.step)
            stream = TrainingStream(config, self.device, state.rng[0]["toy_data"] if state else None)
            log = JsonlLog(out_dir / "metrics.jsonl", append=state is not None)
            self.runs.append(_Run(position, config, out_dir, log, stream, held_out_samples(config)))
            if state is not None:
                self._restore(r, state)

    def _restore(self, r: int, state: ckpt.TrainCheckpoint) -> None:
        """Load one run's training state into stack position `r`, and the stack's step, RNG and clock from it."""
        with torch.no_grad():
            for name, param in self.params.items():
                param[r].copy_(state.weights[name])
        for index, param in enumerate(self.params.values()):
            for key, value in state.optimizer["state"][index].items():
                held = self.optimizer.state[param]
                if value.dim() == 0:
                    held[key] = value.to(self.device)
                else:
                    held.setdefault(key, torch.zeros_like(param))[r] = value
        run, trainer = self.runs[r], state.trainer
        run.evaluations, run.zero_streak = trainer["evaluations"], trainer["zero_streak"]
        self.loss_sum[r], self.loss_count = trainer["loss_window"]
        self.step = trainer["step"]
        self.start = time.perf_counter() - trainer["elapsed_s"]
        torch.set_rng_state(state.rng[0]["cpu"])
        if self.device.type == "cuda" and state.rng[0]["cuda"] is not None:
            torch.cuda.set_rng_state(state.rng[0]["cuda"], self.device)

    def _adamw(self, params) -> torch.optim.AdamW:
        c = self.shared
        return torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)

    def train(self, progress: bool, stop: StopRequest) -> None:
        """Train until every run has ended: solved, out of steps or time, or stopped by a signal (then without a
        final evaluation)."""
        shared = self.shared
        with tqdm(total=shared.steps, desc=f"toy {shared.arch} ×{len(self.runs)}", unit="step",
                  disable=not progress, leave=False) as bar:
            while self.runs and self.step < shared.steps:
                lr = shared.lr * lr_factor(self.step, shared.warmup)
                self.loss_sum += self.train_step(lr)
                self.loss_count += 1
                bar.update()
                is_eval = self.step % shared.eval_every == 0
                out_of_time = self.deadline is not None and time.perf_counter() >= self.deadline
                if is_eval or self.step % shared.log_every == 0 or out_of_time:
                    self.log(lr, evaluate=is_eval or out_of_time)
                    bar.set_postfix(running=len(self.runs))
                if out_of_time:
                    self.finish_all("time_limit", save_state=True)
                if stop.signal is not None:
                    self.finish(list(range(len(self.runs))), "interrupted", save_state=True)
        self.finish_all("max_steps")

    def train_step(self, lr: float) -> torch.Tensor:
        """One AdamW step of every run on its own fresh batch; returns the detached losses [R] (no sync)."""
        inputs, targets = self.next_batches()

        sdpa = sdpa_kernel(SDPA_BACKENDS_WITHOUT_CUDNN) if self.shared.compile != "off" else nullcontext()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None), sdpa:
            losses = self.losses(self.params, self.buffers, inputs, targets)
        losses.sum().backward()
        if self.shared.grad_clip is not None:
            self._clip_per_run(self.shared.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return losses.detach()

    def next_batches(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every run's next training batch, padded to the stack's length: inputs, targets [R, B, T]."""
        batch = [next(run.batches) for run in self.runs]
        return (torch.stack([self._pad(x, PAD_ID) for x, _ in batch]),
                torch.stack([self._pad(y, IGNORE_INDEX) for _, y in batch]))

    def _stacked_losses(self, params: dict, buffers: dict, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The R runs' losses [R] on their batches inputs, targets [R, B, T] (vmap over functional_call)."""
        def loss(params, buffers, x, y):
            return functional_call(self.base, (params, buffers), (x, y), {"ignore_index": IGNORE_INDEX})

        return vmap(loss, randomness="different")(params, buffers, inputs, targets)

    def _pad(self, x: torch.Tensor, value: int) -> torch.Tensor:
        """[B, T] -> [B, self.length], padded on the right with `value`."""
        return torch.nn.functional.pad(x, (0, self.length - x.shape[1]), value=value)

    def _clip_per_run(self, max_norm: float) -> None:
        """Clip each run's gradient to `max_norm` over all its parameters, as clip_grad_norm_ does alone."""
        grads = [p.grad for p in self.params.values()]
        norms = torch.stack([g.flatten(1).float().pow(2).sum(1) for g in grads]).sum(0).sqrt()  # [R]
        factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(factor.view(-1, *[1] * (g.dim() - 1)).to(g.dtype))

    def log(self, lr: float, evaluate: bool) -> None:
        """Write every run's metrics line (with an evaluation if `evaluate`); end the runs that are solved."""
        losses = (self.loss_sum / self.loss_count).tolist()
        self.loss_sum.zero_()
        self.loss_count = 0
        solved = []
        for r, run in enumerate(self.runs):
            record = {"step": self.step, "loss": losses[r], "lr": lr}
            if evaluate:
                record.update(self.evaluate(r, run))
            run.log.write({**record, "elapsed_s": self.elapsed()})
            if run.zero_streak >= run.config.patience:
                solved.append(r)
        self.finish(solved, "solved")

    def evaluate(self, r: int, run: _Run) -> dict:
        """Evaluate run `r` (its position in the stack) on its held-out set; update its streak of 0% results."""
        self.load_scratch(r)
        result = evaluate_toy(self.scratch, run.held_out, autocast_dtype=self.amp_dtype)
        run.zero_streak, fields = record_evaluation(run.evaluations, run.zero_streak, self.step, result)
        return fields

    def load_scratch(self, r: int) -> None:
        with torch.no_grad():
            for name, tensor in self.scratch.named_parameters():
                tensor.copy_(self.params[name][r])

    def finish_all(self, stopped: str, save_state: bool = False) -> None:
        """End every run still going, evaluating first those whose last evaluation is not at this step."""
        for r, run in enumerate(self.runs):
            if not run.evaluations or run.evaluations[-1]["step"] != self.step:
                run.log.write({"step": self.step, **self.evaluate(r, run), "elapsed_s": self.elapsed()})
        self.finish(list(range(len(self.runs))), stopped, save_state)

    def finish(self, ended: list[int], stopped: str, save_state: bool = False) -> None:
        """Save the runs at stack positions `ended` (checkpoint, result.json) and drop them from the stack;
        save_state: also write their training states (runs that may go on), else a run that ended by the
        protocol (solved, max_steps) removes its own."""
        if not ended:
            return
        for r in ended:
            run = self.runs[r]
            self.load_scratch(r)
            result = toy_result(run.config, self.scratch, self.step, stopped, run.evaluations, run.zero_streak,
                                self.elapsed())
            if save_state:
                self.save_state(r, run, result["elapsed_s"])
            elif stopped in ("solved", "max_steps"):
                ckpt.prune_checkpoints(run.out_dir, keep=0)
            self.results[run.position] = save_run(run.out_dir, self.scratch, result)
            run.log.close()
        keep = [r for r in range(len(self.runs)) if r not in ended]
        self.runs = [self.runs[r] for r in keep]
        if keep:
            self._keep(keep)

    def save_state(self, r: int, run: _Run, elapsed_s: float) -> None:
        """Write run `r`'s checkpoints/step-<step>/ (module docstring; the scratch model holds its weights) and
        remove its older ones."""
        optimizer = self.optimizer.state_dict()
        optimizer["state"] = {index: {key: value if value.dim() == 0 else value[r].clone()
                                      for key, value in state.items()}
                              for index, state in optimizer["state"].items()}
        cuda = self.device.type == "cuda"
        rng = [{"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
                "toy_data": run.batches.state()}]
        trainer = {"step": self.step, "world_size": 1, "config": dataclasses.asdict(run.config),
                   "zero_streak": run.zero_streak, "evaluations": run.evaluations, "elapsed_s": elapsed_s,
                   "loss_window": [self.loss_sum[r].item(), self.loss_count]}
        weights = {name: tensor.detach().cpu() for name, tensor in self.scratch.state_dict().items()}
        state = ckpt.TrainCheckpoint(self.scratch.config, weights, optimizer, rng, trainer)
        ckpt.write_checkpoint(ckpt.checkpoint_dir(run.out_dir, self.step), state)
        ckpt.prune_checkpoints(run.out_dir, keep=1)

    def _keep(self, keep: list[int]) -> None:
        """Shrink the parameters, buffers and AdamW state to the stack positions `keep`."""
        rows = torch.tensor(keep, device=self.device)
        old_state = self.optimizer.state
        params = {name: p.detach()[rows].clone().requires_grad_() for name, p in self.params.items()}
        optimizer = self._adamw(params.values())
        for name, new in params.items():
            state = old_state.get(self.params[name])
            if state:
                optimizer.state[new] = {key: value if value.dim() == 0 else value[rows].clone()
                                        for key, value in state.items()}
        self.params, self.optimizer = params, optimizer
        self.buffers = {name: b[rows] for name, b in self.buffers.items()}
        self.loss_sum = self.loss_sum[rows]

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
