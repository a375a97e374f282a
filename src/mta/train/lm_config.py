"""The configuration of a language-model training run, with the paper's recipe as defaults (docs/spec.md §3).

`LMTrainConfig.from_overrides(preset, data, ["key=value", ...])` is what `mta train --set key=value` builds:
values are JSON when they parse as JSON (numbers, true/false, null, lists, objects) and strings otherwise;
`model.<field>` sets a ModelConfig field of the preset. Every key and value, the model's included, is checked
when the config is built, so a typo or a model whose heads do not divide its width fails before any compute
with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from mta.layers.config import check_int
from mta.models import ModelConfig, get_preset

from .runtime import PRECISIONS

PARALLEL = ("auto", "ddp", "fsdp")


@dataclass
class LMTrainConfig:
    """One language-model run.

    What: preset (a `mta.models` preset name), data (a dataset directory, see mta.eval.ppl), model (ModelConfig
    overrides of the preset; vocab_size defaults to the dataset's), seq_len (training window, None = the model's
    max_seq_len, 2048 for the paper's sizes).
    Batches: batch_size sequences per micro-batch per rank, grad_accum micro-batches per optimiser step, so a
    step sees batch_size·grad_accum·world_size·seq_len tokens. mixture: {domain: weight} sampling weights of
    the train split's domains (unlisted domains get 0), None = by token count.
    Optimisation (the paper's): steps, AdamW lr, betas, eps, weight_decay on every parameter, warmup steps then
    linear decay to 0 at the last step, grad_clip (max gradient norm, None = off). seed: init, data, dropout.
    Bookkeeping: every log_every steps a metrics line; every eval_every steps the perplexity of each domain on
    eval_windows fixed validation windows (eval_batch_size per forward, None = batch_size); every
    checkpoint_every steps (and at the end) a checkpoint, the newest keep_checkpoints kept.
    Where: device ("auto" | "cpu" | "cuda"), precision ("auto": bf16 on CUDA, fp32 on CPU | "bf16" | "fp32"),
    parallel (under torchrun: "auto" = FSDP2 on CUDA and DDP on CPU, "ddp" or "fsdp"), compile (torch.compile
    each block).
    Fine-tuning: init_from, a checkpoint or `mta train` run directory (its newest checkpoint) whose weights start
    this run, with a fresh optimiser and schedule at step 0. Its ModelConfig must equal this run's except for
    mta.train.checkpoint_state.INIT_CHANGES (RoPE θ, max_seq_len, dropout, backend): e.g. context extension with
    model.rope_theta, model.max_seq_len and seq_len raised (docs/results/longctx.md).
    """

    preset: str
    data: str
    model: dict[str, Any] = field(default_factory=dict)
    seq_len: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    mixture: dict[str, float] | None = None
    steps: int = 10_000
    lr: float = 1.5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.05
    warmup: int = 375
    grad_clip: float | None = 1.0
    seed: int = 0
    log_every: int = 10
    eval_every: int = 1000
    eval_windows: int = 64
    eval_batch_size: int | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    device: str = "auto"
    precision: str = "auto"
    parallel: str = "auto"
    compile: bool = False
    init_from: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "steps", "log_every", "eval_every", "eval_windows",
                     "checkpoint_every", "keep_checkpoints"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup", "seed"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("seq_len", "eval_batch_size"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        if self.warmup > self.steps:
            raise ValueError(f"warmup: got {self.warmup}, expected <= steps ({self.steps})")
        for name in ("lr", "eps"):
            _check_number(name, getattr(self, name), positive=True)
        _check_number("weight_decay", self.weight_decay, positive=False)
        if self.grad_clip is not None:
            _check_number("grad_clip", self.grad_clip, positive=True)
        if not (isinstance(self.betas, (list, tuple)) and len(self.betas) == 2
                and all(_is_number(b) and 0 <= b < 1 for b in self.betas)):
            raise ValueError(f"betas: got {self.betas!r}, expected two numbers in [0, 1)")
        self.betas = tuple(self.betas)
        self._check_mixture()
        for name, choices in (("precision", PRECISIONS), ("parallel", PARALLEL)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}: got {getattr(self, name)!r}, expected one of {choices}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile: got {self.compile!r}, expected true or false")
        if self.init_from is not None and not (isinstance(self.init_from, str) and self.init_from):
            raise ValueError(f"init_from: got {self.init_from!r}, expected a checkpoint or run directory")
        if not isinstance(self.model, dict):
            raise ValueError(f"model: got {self.model!r}, expected a dict of ModelConfig overrides")
        model = self.model_config()
        if self.seq_len is None:
            self.seq_len = model.max_seq_len
        elif self.seq_len > model.max_seq_len:
            raise ValueError(f"seq_len: got {self.seq_len}, expected <= model.max_seq_len={model.max_seq_len}")

    def model_config(self, vocab_size: int | None = None) -> ModelConfig:
        """The preset with the `model` overrides; vocab_size (the dataset's) applies unless model.vocab_size is set.

        Raises ValueError naming the offending key as "model.<field>".
        """
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        for key in self.model:
            if key not in known:
                raise ValueError(f"model.{key}: not a ModelConfig field, expected one of {sorted(known)}")
        overrides = dict(self.model)
        if vocab_size is not None:
            overrides.setdefault("vocab_size", vocab_size)
        try:
            return get_preset(self.preset, **overrides)
        except ValueError as error:
            message = str(error)
            name = message.partition(":")[0]
            raise ValueError(f"preset:{message[5:]}" if name == "name" else f"model.{message}") from None

    @classmethod
    def from_overrides(cls, preset: str, data: str, assignments: list[str]) -> "LMTrainConfig":
        """The config of `preset` and `data` with each "key=value" of `assignments` applied (module docstring)."""
        keys = {f.name for f in dataclasses.fields(cls)} - {"preset", "data", "model"}
        values: dict[str, Any] = {"model": {}}
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"--set {assignment!r}: expected key=value")
            if key.startswith("model."):
                values["model"][key.removeprefix("model.")] = _parse_value(text)
            elif key in keys:
                values[key] = _parse_value(text)
            else:
                raise ValueError(f"{key}: unknown training key, expected model.<ModelConfig field> or one of "
                                 f"{sorted(keys)}")
        return cls(preset=preset, data=data, **values)

    def to_dict(self) -> dict:
        """The config as JSON values (tuples become lists), as written to train_config.json and checkpoints."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def _check_mixture(self) -> None:
        if self.mixture is None:
            return
        if not (isinstance(self.mixture, dict) and self.mixture
                and all(_is_number(w) and w >= 0 for w in self.mixture.values())
                and sum(self.mixture.values()) > 0):
            raise ValueError(f"mixture: got {self.mixture!r}, expected {{domain: weight >= 0}} with a positive sum")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_number(name: str, value: object, positive: bool) -> None:
    if not _is_number(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name}: got {value!r}, expected a {'positive' if positive else 'non-negative'} number")
