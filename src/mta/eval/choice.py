"""Scoring a language model on multiple-choice questions: the shared metric of `mta eval needle` and `mta eval babi`.

A ChoiceSample is a prompt and candidate answers (token ids). The model scores candidate c = (c_0 .. c_{T-1}) by
its log-likelihood after the prompt, teacher-forced:

    log p(c | prompt) = Σ_j log softmax(model(prompt + c[:-1]))[len(prompt) - 1 + j, c_j]

Primary metric, choice accuracy: a sample earns 1 when its right answer has the highest log-likelihood among its
candidates, 1/m when it shares the highest value with m - 1 others (ties are split as if broken at random, so a
model that cannot tell the candidates apart scores the chance level 1/#candidates exactly), else 0. Summed
log-likelihood is the probability of the answer string; the needle task draws candidates of equal token length,
so length does not favour any. It is meaningful for small models that rarely produce an exact answer.

Secondary metric, exact match: greedy decoding of len(answer) tokens after the prompt, recomputing the whole
sequence at every step (no cache), reproduces the answer's tokens.

Forward passes are batched: the candidates of one sample that share all but their last token share one input
row (one-token candidates share the prompt alone), rows of many samples go into one batch, right-padded (a
causal model never sees the padding from earlier positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

PAD_ID = 0  # any valid id: padding sits after every scored position
METRIC = ("choice accuracy: % of samples whose right answer has the highest log-likelihood after the prompt among "
          "the candidates (ties split)")


@dataclass
class ChoiceSample:
    """`prompt`: token ids [P] (a list or a 1-D int64 array); `candidates`: the token ids of each candidate answer
    (non-empty lists); `answer`: the index of the right one."""

    prompt: Sequence[int]
    candidates: list[list[int]]
    answer: int

    def __post_init__(self) -> None:
        if not self.candidates or any(len(c) == 0 for c in self.candidates):
            raise ValueError("candidates: expected one or more non-empty token lists")
        if not 0 <= self.answer < len(self.candidates):
            raise ValueError(f"answer: got {self.answer}, expected an index into {len(self.candidates)} candidates")

    def max_length(self) -> int:
        """The longest sequence the scoring feeds the model: prompt + the longest candidate."""
        return len(self.prompt) + max(len(c) for c in self.candidates)


def choice_credit(scores: Sequence[float], answer: int) -> float:
    """1/m if candidate `answer` is among the m candidates of highest score, else 0 (module docstring)."""
    best = max(scores)
    tied = [i for i, score in enumerate(scores) if score == best]
    return 1.0 / len(tied) if answer in tied else 0.0


def mean(values) -> float:
    """The mean of a non-empty sequence of numbers, as a float (the reports' accuracies and chance levels)."""
    return float(sum(values) / len(values))


@torch.no_grad()
def candidate_logprobs(model: torch.nn.Module, samples: Sequence[ChoiceSample], batch_size: int = 8,
                       autocast_dtype: torch.dtype | None = None, progress: bool = False,
                       desc: str = "score") -> list[list[float]]:
    """log p(candidate | prompt) of every candidate of every sample (module docstring), as float64 Python floats.

    model: tokens [B, N] long -> logits [B, N, V]; evaluated in eval mode on its parameters' device (its training
    mode is restored). Returns one list per sample, one value per candidate.
    """
    _check_batch_size(batch_size)
    rows: list[tuple[int, tuple[int, ...]]] = []  # model inputs as (sample, candidate prefix): prompt + prefix
    jobs: list[list[Sequence[int]]] = []  # per row: the candidates scored on it
    where: list[list[tuple[int, int]]] = []  # per sample, per candidate: (row, index in jobs[row])
    for index, sample in enumerate(samples):
        shared: dict[tuple[int, ...], int] = {}
        places = []
        for candidate in sample.candidates:
            prefix = tuple(candidate[:-1])
            if prefix not in shared:
                shared[prefix] = len(rows)
                rows.append((index, prefix))
                jobs.append([])
            row = shared[prefix]
            places.append((row, len(jobs[row])))
            jobs[row].append(candidate)
        where.append(places)
    device = next(model.parameters()).device
    scores: list[list[float]] = []  # per row, per candidate on it
    with _eval_mode(model):
        for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", disable=not progress,
                          leave=False):
            inputs = [np.concatenate([samples[i].prompt, np.asarray(prefix, dtype=np.int64)])
                      for i, prefix in rows[start:start + batch_size]]
            logits = _forward(model, inputs, device, autocast_dtype)
            for offset, (row, candidates) in enumerate(zip(inputs, jobs[start:start + batch_size])):
                scores.append(_summed_logprobs(logits[offset], len(row), candidates))
    return [[scores[row][job] for row, job in places] for places in where]


def _summed_logprobs(logits: torch.Tensor, length: int, candidates) -> list[float]:
    """Σ_j log p(c_j) for each candidate c continuing the last len(c) - 1 of the row's `length` tokens
    (the row is prompt + c[:-1]: token j is predicted at position length - len(c) + j). logits: [N, V]."""
    positions = [length - len(c) + j for c in candidates for j in range(len(c))]
    targets = torch.tensor([int(t) for c in candidates for t in c], device=logits.device)
    logprob = torch.log_softmax(logits[positions].float(), dim=-1)
    picked = logprob.gather(-1, targets[:, None])[:, 0].double().tolist()
    sums, cursor = [], 0
    for candidate in candidates:
        sums.append(sum(picked[cursor:cursor + len(candidate)]))
        cursor += len(candidate)
    return sums


@torch.no_grad()
def greedy_matches(model: torch.nn.Module, samples: Sequence[ChoiceSample], batch_size: int = 8,
                   autocast_dtype: torch.dtype | None = None, progress: bool = False,
                   desc: str = "generate") -> list[bool]:
    """Whether greedy decoding of len(right answer) tokens after each prompt reproduces the right answer's tokens.

    Recomputes every sequence in full at each step (O(T) forward passes of the whole prompt per sample).
    """
    _check_batch_size(batch_size)
    device = next(model.parameters()).device
    matches = []
    with _eval_mode(model):
        for start in tqdm(range(0, len(samples), batch_size), desc=desc, unit="batch", disable=not progress,
                          leave=False):
            batch = samples[start:start + batch_size]
            answers = [s.candidates[s.answer] for s in batch]
            sequences = [[int(t) for t in s.prompt] for s in batch]
            for step in range(max(len(a) for a in answers)):
                active = [i for i, a in enumerate(answers) if step < len(a)]
                logits = _forward(model, [sequences[i] for i in active], device, autocast_dtype)
                last = torch.tensor([len(sequences[i]) - 1 for i in active], device=device)
                chosen = logits[torch.arange(len(active), device=device), last].argmax(-1).tolist()
                for i, token in zip(active, chosen):
                    sequences[i].append(token)
            matches += [seq[len(s.prompt):] == [int(t) for t in a] for seq, s, a in zip(sequences, batch, answers)]
    return matches


def _forward(model, rows, device, autocast_dtype) -> torch.Tensor:
    """Logits [len(rows), longest row, V] of the right-padded rows (sequences of token ids)."""
    length = max(len(row) for row in rows)
    tokens = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.as_tensor(np.asarray(row, dtype=np.int64))
    tokens = tokens.to(device)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        return model(tokens)


class _eval_mode:
    """Put `model` in eval mode for a block, then restore its training mode."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size!r}, expected a positive integer")
