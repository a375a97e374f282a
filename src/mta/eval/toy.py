"""Toy-task error under teacher forcing (docs/spec.md §5), shared by `mta toy train` and `mta toy eval`.

A sample becomes the token sequence BOS + src + tgt + EOS (character ids of mta.data.toy). The model reads
every token but the last and is scored where the next token is a target character or EOS:

    position  0    1 .. S    S+1 .. S+T-1   S+T
    input     BOS  src       tgt[:-1]       tgt[-1]      (S = len(src), T = len(tgt))
    target    ·    · .. tgt[0]  tgt[1:]     EOS          (· = ignore_index, no loss)

The loss covers the T target characters and EOS. The error metrics count the target characters only, as the
paper's metric does ("% of test sequences with any wrong target token under teacher-forced argmax"); EOS is
trained but not scored, so a model that gets every letter right and then fails to stop scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mta.data.toy import BOS_ID, EOS_ID, PAD_ID, answer_reach, encode

IGNORE_INDEX = -100


def encode_batch(samples: Sequence[dict], device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Turn {"src", "tgt"} samples into (inputs, targets), both [B, T] long on `device`.

    T = max over the batch of len(src) + len(tgt) + 1; shorter rows are padded on the right (PAD_ID in
    inputs, IGNORE_INDEX in targets), which a causal model cannot see from earlier positions. targets holds
    the next token at the target and EOS positions and IGNORE_INDEX elsewhere (see the module docstring).
    """
    rows = []
    for index, sample in enumerate(samples):
        try:
            src, tgt = encode(sample["src"]), encode(sample["tgt"])
        except ValueError as error:
            raise ValueError(f"sample {index}: {error}") from None
        rows.append((src, tgt))
    length = max((len(src) + len(tgt) + 1 for src, tgt in rows), default=0)
    inputs, targets = [], []
    for src, tgt in rows:
        sequence = [BOS_ID, *src, *tgt, EOS_ID]
        pad = length - (len(sequence) - 1)
        inputs.append(sequence[:-1] + [PAD_ID] * pad)
        targets.append([IGNORE_INDEX] * len(src) + sequence[len(src) + 1 :] + [IGNORE_INDEX] * pad)
    inputs = torch.tensor(inputs, dtype=torch.long).reshape(len(rows), length)
    targets = torch.tensor(targets, dtype=torch.long).reshape(len(rows), length)
    return inputs.to(device), targets.to(device)


@torch.no_grad()
def evaluate_toy(
    model: torch.nn.Module,
    samples: Sequence[dict],
    batch_size: int = 128,
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """Teacher-forced argmax errors of `model` (tokens [B, T] -> logits [B, T, V]) on `samples`.

    Runs in eval mode (no dropout) on the device of the model's parameters, optionally under autocast to
    `autocast_dtype`, and restores the model's training mode afterwards. Returns {"samples": int,
    "sequence_error_pct": % of samples with any wrong target character, "token_error_pct": % of target
    characters wrong, "position_error_pct": [P] % wrong at each target position k over the samples whose target
    has a k-th character (P = the longest target), "sequence_error_pct_by_reach": [{"reach", "samples",
    "sequence_error_pct"}] by mta.data.toy.answer_reach, in increasing reach, over the samples that have one}; for no
    samples the two error percentages are 0.0 and the lists are empty.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}, expected >= 1")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sequence_wrongs = [torch.zeros(0, dtype=torch.bool)]  # [B] per batch: any target character wrong
    # Per scored target character of every batch: its index within its target, and whether it is wrong.
    positions, wrongs = [torch.zeros(0, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
    try:
        for start in range(0, len(samples), batch_size):
            inputs, targets = encode_batch(samples[start : start + batch_size], device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(inputs)
            scored = (targets != IGNORE_INDEX) & (targets != EOS_ID)
            wrong = (logits.argmax(-1) != targets) & scored
            sequence_wrongs.append(wrong.any(dim=1).cpu())
            positions.append((scored.cumsum(dim=1) - 1)[scored].cpu())
            wrongs.append(wrong[scored].long().cpu())
    finally:
        model.train(was_training)
    position, wrong, sequence_wrong = torch.cat(positions), torch.cat(wrongs), torch.cat(sequence_wrongs)
    scored_at = torch.bincount(position)  # [P] target characters at each position
    wrong_at = torch.bincount(position, wrong, minlength=len(scored_at))  # [P] wrong ones (float64 counts)
    return {
        "samples": len(samples),
        "sequence_error_pct": 100.0 * int(sequence_wrong.sum()) / max(len(samples), 1),
        "token_error_pct": 100.0 * int(wrong.sum()) / max(len(wrong), 1),
        "position_error_pct": (100.0 * wrong_at / scored_at.clamp(min=1)).tolist(),
        "sequence_error_pct_by_reach": error_by_reach(samples, sequence_wrong.tolist()),
    }


def error_by_reach(samples: Sequence[dict], sequence_wrong: Sequence[bool]) -> list[dict]:
    """[{"reach", "samples", "sequence_error_pct"}] of `samples` grouped by mta.data.toy.answer_reach (samples
    without one left out), in increasing reach; `sequence_wrong[i]` says whether sample i has a wrong letter."""
    counts: dict[int, list[int]] = {}  # reach -> [samples, wrong samples]
    for sample, is_wrong in zip(samples, sequence_wrong, strict=True):
        reach = answer_reach(sample)
        if reach is not None:
            count = counts.setdefault(reach, [0, 0])
            count[0] += 1
            count[1] += bool(is_wrong)
    return [{"reach": reach, "samples": total, "sequence_error_pct": 100.0 * wrong / total}
            for reach, (total, wrong) in sorted(counts.items())]
