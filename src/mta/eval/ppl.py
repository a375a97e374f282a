"""Perplexity per domain on packed token shards, and their mean (the paper's Table 2, docs/spec.md §4).

A domain's token stream is cut into windows of seq_len + 1 tokens that start every seq_len tokens, so
consecutive windows share one token and every token after the first is predicted exactly once, from at most
seq_len tokens of context inside its window; the tail shorter than a window is left out:

    stream  t0 t1 ... tL | t(L+1) ... t(2L) | ...          (L = seq_len)
    window  [t0 .. tL]     [tL .. t(2L)]   ...             inputs = window[:-1], targets = window[1:]

A domain's perplexity is exp(mean cross-entropy over its predicted tokens); `mean_ppl` is the plain mean of the
domains' perplexities. With `world_size` > 1 every rank scores a share of the windows and the sums are
all-reduced; every rank runs the same number of forward passes, as FSDP requires.

Datasets are `mta data prepare` directories ("mta-tokens-v1", mta.data.corpus); `load_split` reads one split.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from mta.data.corpus import load_manifest, token_memmap


@dataclass
class TokenSplit:
    """One split of a dataset: its vocabulary size, end-of-document id and a 1-D uint16 array per domain."""

    vocab_size: int
    eos_id: int
    domains: dict[str, np.ndarray]


def load_split(data_dir: str | os.PathLike, split: str) -> TokenSplit:
    """The `split` ("train" or "val") of every domain of the dataset in `data_dir`, memory-mapped.

    The manifest and shard sizes are checked by mta.data.corpus.load_manifest (ValueError naming the problem).
    """
    manifest = load_manifest(data_dir)
    domains = {name: token_memmap(manifest, name, split) for name in manifest.domains}
    return TokenSplit(vocab_size=manifest.vocab_size, eos_id=manifest.eos_id, domains=domains)


def window_starts(n_tokens: int, seq_len: int, windows: int | None = None) -> np.ndarray:
    """Start offsets of the windows of seq_len + 1 tokens in a stream of n_tokens (module docstring).

    windows=None: all of them; an int: that many spread evenly over the stream (all if there are fewer).
    """
    count = max(0, (n_tokens - 1) // seq_len)
    index = np.arange(count)
    if windows is not None and windows < count:
        index = np.arange(windows) * count // windows
    return index * seq_len


@torch.no_grad()
def evaluate_ppl(
    model: torch.nn.Module,
    split: TokenSplit,
    seq_len: int,
    batch_size: int = 8,
    windows: int | None = None,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> dict:
    """Perplexity of `model` (model(tokens [B, L], targets [B, L]) -> mean fp32 loss) on each domain of `split`.

    windows: per domain, None for every window or a number of evenly spread ones (`window_starts`).
    Returns {"domains": {name: {"loss", "ppl", "tokens"}}, "mean_ppl"}; the model's train/eval mode is the caller's.
    """
    device = torch.device(device)
    results = {}
    for name, tokens in split.domains.items():
        starts = window_starts(len(tokens), seq_len, windows)
        if len(starts) == 0:
            raise ValueError(f"data: domain {name!r} has {len(tokens)} tokens, fewer than a window of "
                             f"seq_len + 1 = {seq_len + 1}")
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # summed loss, predicted tokens
        for batch, weight in tqdm(_rank_batches(starts, batch_size, rank, world_size), desc=f"ppl {name}",
                                  unit="batch", disable=not progress, leave=False):
            window = torch.from_numpy(np.stack([tokens[s : s + seq_len + 1] for s in batch]).astype(np.int64))
            window = window.to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = model(window[:, :-1], window[:, 1:])
            predicted = len(batch) * seq_len * weight
            totals[0] += loss.double() * predicted
            totals[1] += predicted
        if world_size > 1:
            dist.all_reduce(totals)
        loss, count = totals.tolist()
        results[name] = {"loss": loss / count, "ppl": math.exp(loss / count), "tokens": int(count)}
    return {"domains": results, "mean_ppl": sum(r["ppl"] for r in results.values()) / len(results)}


def _rank_batches(starts: np.ndarray, batch_size: int, rank: int, world_size: int):
    """(window starts, weight) batches of this rank's share starts[rank::world_size].

    Every rank yields the same number of batches; a rank whose share has run out repeats a window with weight 0.
    """
    mine = starts[rank::world_size]
    count = math.ceil(math.ceil(len(starts) / world_size) / batch_size)
    for index in range(count):
        batch = mine[index * batch_size : (index + 1) * batch_size]
        yield (batch, 1.0) if len(batch) else (starts[:1], 0.0)
