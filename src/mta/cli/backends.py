"""`mta backends`: build a small MTA model, train it briefly on random tokens, and show what each backend of the op
costs (time and largest tensor of one training step)."""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm import tqdm

from mta.models import DecoderLM, get_preset


def register(subparsers) -> None:
    parser = subparsers.add_parser("backends", help="train a small MTA model on random tokens and compare backends")
    parser.add_argument("--steps", type=int, default=30, help="training steps (default 30)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256, help="training sequence length (default 256)")
    parser.add_argument("--cost-lengths", type=int, nargs="+", default=[256, 2048],
                        help="sequence lengths of the backend cost table (default 256 2048)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)


def random_batch(vocab_size: int, batch: int, seq_len: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.randint(vocab_size, (batch, seq_len + 1), generator=generator).to(device)


def train_step(model: DecoderLM, tokens: torch.Tensor, optimizer: torch.optim.Optimizer | None = None) -> float:
    loss = model.loss(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return loss.item()


def run(args: argparse.Namespace) -> None:
    if args.steps < 1 or args.batch < 1 or args.seq_len < 1:
        raise ValueError(f"--steps, --batch and --seq-len must be >= 1, got {args.steps}, {args.batch}, {args.seq_len}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    config = get_preset("tiny-mta", max_seq_len=max(args.seq_len, *args.cost_lengths))
    model = DecoderLM(config).to(device)
    print(f"tiny-mta on {device}: {model.num_parameters():,} parameters, {config.n_layers} layers, "
          f"{config.n_heads} heads, q-k convs in layers {list(config.qk_conv_layers or range(config.n_layers))}")

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    progress = tqdm(range(args.steps), desc="training on random tokens", unit="step")
    losses = []
    for _ in progress:
        losses.append(train_step(model, random_batch(config.vocab_size, args.batch, args.seq_len, generator, device), optimizer))
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} (uniform guessing: {torch.log(torch.tensor(float(config.vocab_size))):.3f})")

    print("\none training step (forward + backward), batch 1:")
    print(f"{'model / backend':<24}{'N':>7}{'ms':>10}{'largest tensor MiB':>21}")
    for seq_len in args.cost_lengths:
        tokens = random_batch(config.vocab_size, 1, seq_len, generator, device)
        for label, preset, backend in (("transformer (SDPA)", "tiny-transformer", "auto"),
                                       ("mta reference", "tiny-mta", "reference"),
                                       ("mta chunked", "tiny-mta", "chunked")):
            candidate = DecoderLM(get_preset(preset, max_seq_len=seq_len, backend=backend)).to(device)
            seconds = median_seconds(lambda: train_step(candidate, tokens), device)
            with LargestTensorProbe() as probe:
                train_step(candidate, tokens)
            print(f"{label:<24}{seq_len:>7}{seconds * 1e3:>10.1f}{probe.largest_bytes / 2**20:>21.2f}")


class LargestTensorProbe(TorchDispatchMode):
    """While active, records the size of the largest tensor any operator returns (`largest_bytes`).

    On a CPU, where torch keeps no allocator statistics, this shows whether anything of N×N size is built.
    """

    def __init__(self) -> None:
        super().__init__()
        self.largest_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest_bytes = max(self.largest_bytes, tensor.numel() * tensor.element_size())
        return out


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` calls after `warmup` calls, synchronising a GPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
