"""A stand-in language model for evaluation tests: it "knows" given token sequences and nothing else."""

from __future__ import annotations

import torch
from torch import nn

CONFIDENT = 30.0  # logit of the predicted token (the others are 0): log p ≈ 0 for it, ≈ -30 for any other


class Oracle(nn.Module):
    """tokens [B, N] -> logits [B, N, V]. Each input row is matched to the sequence of `sequences` with which it
    shares the longest prefix; at every position inside that shared prefix the logits put (almost) all mass on
    the sequence's next token, elsewhere they are uniform. Given prompt + right answer for every sample, it is a
    model that always answers right; given prompt + a wrong answer, one that always answers that.
    """

    def __init__(self, sequences, vocab_size: int):
        super().__init__()
        self.sequences = [torch.as_tensor(list(map(int, s)), dtype=torch.long) for s in sequences]
        self.vocab_size = vocab_size
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the evaluation a device to read

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length = tokens.shape
        logits = torch.zeros(batch, length, self.vocab_size)
        for b in range(batch):
            shared, sequence = max((self._shared(tokens[b], s), i) for i, s in enumerate(self.sequences))
            sequence = self.sequences[sequence]
            follow = min(shared, len(sequence) - 1)  # positions whose next token the sequence gives
            logits[b, torch.arange(follow), sequence[1:follow + 1]] = CONFIDENT
        return logits

    @staticmethod
    def _shared(row: torch.Tensor, sequence: torch.Tensor) -> int:
        n = min(len(row), len(sequence))
        differs = (row[:n] != sequence[:n]).nonzero()
        return int(differs[0]) if len(differs) else n


def right_and_wrong(samples, vocab_size: int) -> tuple[Oracle, Oracle]:
    """An Oracle that knows every sample's right answer, and one that knows the next candidate instead."""
    right = [list(s.prompt) + list(s.candidates[s.answer]) for s in samples]
    wrong = [list(s.prompt) + list(s.candidates[(s.answer + 1) % len(s.candidates)]) for s in samples]
    return Oracle(right, vocab_size), Oracle(wrong, vocab_size)


class Uniform(nn.Module):
    """Equal logits for every token: it cannot tell any candidates of equal token count apart."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*tokens.shape, self.vocab_size)
