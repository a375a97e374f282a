"""The toy task (docs/spec.md §5) drawn as token tensors, a whole batch at once, on any device.

`mta.data.toy` draws one sample at a time in Python (≈ 0.3 ms each), which starves a GPU: a batch of 64 costs
more than a training step of the paper's toy model. This module draws the same distribution with tensor
operations: every block is a uniformly random ordered choice of `n_block` distinct letters; the target block
sits at a uniformly random position; the query is `n_query` distinct letters of the target in random order;
distractors holding every query letter, and repeated blocks, are redrawn until none is left (rejection
sampling, as the Python generator does). Samples are the same distribution, not the same draws, as
`mta.data.toy.generate` with the same seed.

Output: `inputs`, `targets` [B, T] long, laid out exactly as `mta.eval.toy.encode_batch` lays out a batch
(BOS + src + tgt as inputs; the next token at target and EOS positions, `ignore_index` elsewhere).
"""

from __future__ import annotations

import torch

from .toy import ALPHABET, BOS_ID, EOS_ID, VARIANTS, _validate, decode, encode

LETTER_OFFSET = encode("a")[0]
BLOCK_SEP_ID, QUERY_SEP_ID = encode(".")[0], encode("#")[0]


def _draw_blocks(shape: tuple[int, ...], n_block: int, generator: torch.Generator, device) -> torch.Tensor:
    """[*shape, n_block] letter indices (0..25), distinct within each block, uniform over ordered choices."""
    keys = torch.rand(*shape, len(ALPHABET), generator=generator, device=device)
    return keys.argsort(dim=-1)[..., :n_block]


def _invalid_distractors(blocks: torch.Tensor, query: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
    """Bool [B, M]: distractor blocks that hold every query letter or repeat an earlier block of their sample."""
    batch, num_blocks, _ = blocks.shape
    holds_letter = (blocks.unsqueeze(-1) == query[:, None, None, :]).any(dim=2)  # [B, M, L]
    holds_all = holds_letter.all(dim=-1)
    same = (blocks.unsqueeze(2) == blocks.unsqueeze(1)).all(dim=-1)  # [B, M, M]
    earlier = torch.ones(num_blocks, num_blocks, dtype=torch.bool, device=blocks.device).tril(-1)
    repeats = (same & earlier).any(dim=-1)
    is_target = torch.arange(num_blocks, device=blocks.device) == target_index.unsqueeze(1)
    # The target never moves: a distractor equal to it is a repeat even when it comes first.
    repeats_target = (blocks == blocks[torch.arange(batch), target_index].unsqueeze(1)).all(dim=-1)
    return ~is_target & (holds_all | repeats | repeats_target)


def draw_batch(
    batch_size: int,
    n_block: int,
    n_query: int,
    variant: str,
    num_blocks: int,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of toy samples as (inputs, targets), both [B, T] long on `device` (module docstring).

    generator: a torch.Generator on `device`; the batch depends on its state alone.
    T = 1 + num_blocks·(n_block + 1) + n_query + len(tgt), len(tgt) = n_block for "all", else 1.
    """
    _validate(n_block, n_query, variant, num_blocks)
    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}, expected >= 1")
    device = torch.device(device)
    rows = torch.arange(batch_size, device=device)
    blocks = _draw_blocks((batch_size, num_blocks), n_block, generator, device)
    target_index = torch.randint(num_blocks, (batch_size,), generator=generator, device=device)
    target = blocks[rows, target_index]
    picks = torch.rand(batch_size, n_block, generator=generator, device=device).argsort(dim=-1)[:, :n_query]
    query = target.gather(1, picks)
    invalid = _invalid_distractors(blocks, query, target_index)
    while invalid.any():
        redraw = _draw_blocks((int(invalid.sum()),), n_block, generator, device)
        blocks[invalid] = redraw
        invalid = _invalid_distractors(blocks, query, target_index)

    label = {"all": target, "first": target[:, :1], "last": target[:, -1:]}[variant]
    letters = blocks + LETTER_OFFSET
    separators = torch.full((batch_size, num_blocks, 1), BLOCK_SEP_ID, device=device)
    body = torch.cat([letters, separators], dim=-1).flatten(1)[:, :-1]  # blocks joined by '.'
    bos, query_sep, eos = (torch.full((batch_size, 1), token, device=device) for token in (BOS_ID, QUERY_SEP_ID, EOS_ID))
    sequence = torch.cat([bos, body, query_sep, query + LETTER_OFFSET, label + LETTER_OFFSET, eos], dim=1)
    inputs, targets = sequence[:, :-1].clone(), sequence[:, 1:].clone()
    source_len = body.shape[1] + 1 + n_query
    targets[:, :source_len] = ignore_index
    return inputs, targets


def decode_samples(inputs: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> list[dict]:
    """Turn a batch from `draw_batch` back into {"src", "tgt"} samples (for tests and inspection)."""
    samples = []
    for row_inputs, row_targets in zip(inputs.tolist(), targets.tolist()):
        first = next(i for i, t in enumerate(row_targets) if t != ignore_index)
        sequence = row_inputs + [row_targets[-1]]
        samples.append({"src": decode(sequence[1 : first + 1]), "tgt": decode(sequence[first + 1 : -1])})
    return samples


__all__ = ["draw_batch", "decode_samples", "VARIANTS"]
