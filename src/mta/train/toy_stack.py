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
"""

from __future__ import annotations

import copy
import dataclasses
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

from .metrics import JsonlLog
from .runtime import autocast_dtype, resolve_device
from .schedule import lr_factor
from .toy import (ToyTrainConfig, TrainingStream, compiled, held_out_samples, record_evaluation, save_run,
                  toy_result)

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
                    max_minutes: float | None = None) -> list[dict]:
    """Train the runs `configs` together, run i writing the run directory `out_dirs[i]`; return their results.

    configs: ToyTrainConfigs that agree on SHARED_FIELDS; their data must be "tensor" or "auto" (taken as
    "tensor" on any device).
    max_minutes: wall-time cap for the whole stack (None: none). On KeyboardInterrupt every run still going
    is saved with stopped = "interrupted", then the interrupt is raised again.
    """
    _check_stack(configs, out_dirs)
    configs = [dataclasses.replace(c, data="tensor") if c.data == "auto" else c for c in configs]
    stack = ToyStack(configs, [Path(d) for d in out_dirs], max_minutes)
    try:
        stack.train(progress)
    except KeyboardInterrupt:
        stack.finish_all("interrupted")
        raise
    finally:
        for run in stack.runs:
            run.log.close()
    return [stack.results[i] for i in range(len(configs))]


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
    """

    def __init__(self, configs: list[ToyTrainConfig], out_dirs: list[Path], max_minutes: float | None):
        first = configs[0]
        self.device = resolve_device(first.device)
        self.amp_dtype = autocast_dtype(self.device, first.precision)
        self.shared = first
        self.deadline = None if max_minutes is None else time.perf_counter() + 60 * max_minutes
        self.start = time.perf_counter()
        # Runs with longer samples may need a larger max_seq_len; the stack's models share the largest one.
        max_seq_len = max(c.model_config().max_seq_len for c in configs)
        models = []
        for config in configs:
            torch.manual_seed(config.seed)
            models.append(DecoderLM(dataclasses.replace(config.model_config(), max_seq_len=max_seq_len)))
        self.scratch = models[0].to(self.device)  # evaluation and checkpoints load one run's weights into it
        self.base = copy.deepcopy(models[0]).to("meta")
        params, self.buffers = stack_module_state([m.to(self.device) for m in models])
        self.params = {name: p.detach().requires_grad_() for name, p in params.items()}
        self.optimizer = self._adamw(self.params.values())
        self.losses = compiled(self._stacked_losses, first.compile)  # recompiled when runs leave the stack
        self.runs = []
        for position, (config, out_dir) in enumerate(zip(configs, out_dirs)):
            out_dir.mkdir(parents=True, exist_ok=True)
            self.runs.append(_Run(position, config, out_dir, JsonlLog(out_dir / "metrics.jsonl"),
                                  TrainingStream(config, self.device), held_out_samples(config)))
        self.results: dict[int, dict] = {}
        self.step = 0
        self.length = max(c.sequence_length for c in configs)
        self.loss_sum, self.loss_count = torch.zeros(len(configs), device=self.device), 0  # since the last log

    def _adamw(self, params) -> torch.optim.AdamW:
        c = self.shared
        return torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)

    def train(self, progress: bool) -> None:
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
                    self.finish_all("time_limit")
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

    def finish_all(self, stopped: str) -> None:
        """End every run still going, evaluating first those whose last evaluation is not at this step."""
        for r, run in enumerate(self.runs):
            if not run.evaluations or run.evaluations[-1]["step"] != self.step:
                run.log.write({"step": self.step, **self.evaluate(r, run), "elapsed_s": self.elapsed()})
        self.finish(list(range(len(self.runs))), stopped)

    def finish(self, ended: list[int], stopped: str) -> None:
        """Save the runs at stack positions `ended` (checkpoint, result.json) and drop them from the stack."""
        if not ended:
            return
        for r in ended:
            run = self.runs[r]
            self.load_scratch(r)
            result = toy_result(run.config, self.scratch, self.step, stopped, run.evaluations, run.zero_streak,
                                self.elapsed())
            self.results[run.position] = save_run(run.out_dir, self.scratch, result)
            run.log.close()
        keep = [r for r in range(len(self.runs)) if r not in ended]
        self.runs = [self.runs[r] for r in keep]
        if keep:
            self._keep(keep)

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
