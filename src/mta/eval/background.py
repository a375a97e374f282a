"""Held-out corpus text as token ids: the haystack of `mta eval needle` and the distractor text of `mta eval babi`.

The text is a split (by default "val", documents the model never trained on) of a `mta data prepare` corpus,
every domain's token stream joined into one, documents separated by <|eos|> as in training. Pieces of text
(needles, story sentences) are spliced into a window of it at token positions, each moved to the nearest word
start (a token that begins with whitespace) within SNAP tokens, so that no word of the haystack is cut in two:

    window  t0 t1 t2 | t3 t4 ...          insert(window, [piece], [3])
    result  t0 t1 t2 p0 p1 p2 t3 t4 ...   piece starts at 3; t3 begins with a space, so the text still reads well
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mta.data.corpus import load_manifest, load_tokenizer, token_memmap

SNAP = 8  # how far (tokens) an insertion point may move to reach a word start


@dataclass
class Background:
    """`tokens` [T] int64: the text to draw windows from; `tokenizer`: a `tokenizers.Tokenizer` for the pieces;
    `word_start` [V] bool: which token ids begin with whitespace; `source`: where the text came from."""

    tokens: np.ndarray
    tokenizer: object
    word_start: np.ndarray
    source: str

    @classmethod
    def from_corpus(cls, data_dir: str | os.PathLike, split: str = "val",
                    domains: list[str] | None = None) -> "Background":
        """The `split` of `domains` (default: all, in manifest order) of the prepared corpus in `data_dir`."""
        manifest = load_manifest(data_dir)
        names = list(manifest.domains) if domains is None else domains
        for name in names:
            if name not in manifest.domains:
                raise ValueError(f"domains: {name!r} is not in {data_dir}; it has {sorted(manifest.domains)}")
        tokens = np.concatenate([np.asarray(token_memmap(manifest, name, split), dtype=np.int64) for name in names])
        if tokens.size == 0:
            raise ValueError(f"data: the {split!r} split of {names} in {data_dir} holds no tokens")
        tokenizer = load_tokenizer(data_dir)
        vocab = tokenizer.get_vocab_size()
        word_start = np.array([tokenizer.decode([i])[:1].isspace() for i in range(vocab)], dtype=bool)
        return cls(tokens, tokenizer, word_start, f"{data_dir} ({split}: {', '.join(names)})")

    @property
    def vocab_size(self) -> int:
        return len(self.word_start)

    def encode(self, text: str) -> list[int]:
        """The token ids of `text` (no special tokens added)."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def window(self, rng: np.random.Generator, length: int) -> np.ndarray:
        """`length` consecutive tokens [length] from a random offset; ValueError if the text is shorter."""
        if length > len(self.tokens):
            raise ValueError(f"data: {self.source} has {len(self.tokens)} tokens, fewer than the {length} "
                             "needed for one haystack; use a larger split or shorter contexts")
        start = int(rng.integers(len(self.tokens) - length + 1))
        return self.tokens[start:start + length]

    def snap(self, window: np.ndarray, position: int) -> int:
        """The insertion point nearest `position` (0 <= position <= len(window)) that starts a word: 0, the end,
        or before a token that begins with whitespace, within SNAP tokens; `position` itself if there is none."""
        candidates = range(max(0, position - SNAP), min(len(window), position + SNAP) + 1)
        starts = [p for p in candidates if p in (0, len(window)) or self.word_start[window[p]]]
        return min(starts, key=lambda p: (abs(p - position), p)) if starts else position

    def insert(self, window: np.ndarray, pieces: list[list[int]], positions: list[int]) -> tuple[np.ndarray, list[int]]:
        """`window` with `pieces[i]` spliced in before window[positions[i]] (ties keep the pieces' order).

        Returns (the token ids [len(window) + Σ len(piece)] int64, where each piece starts in them). Positions are
        used as given (snap them first).
        """
        if len(pieces) != len(positions):
            raise ValueError(f"positions: got {len(positions)}, expected one per piece ({len(pieces)})")
        order = sorted(range(len(pieces)), key=lambda i: (positions[i], i))
        parts: list[np.ndarray] = []
        starts = [0] * len(pieces)
        previous = length = 0
        for i in order:
            if not previous <= positions[i] <= len(window):
                raise ValueError(f"positions: {positions[i]} is outside the window [0, {len(window)}]")
            parts += [window[previous:positions[i]], np.asarray(pieces[i], dtype=np.int64)]
            length += positions[i] - previous
            starts[i] = length
            length += len(pieces[i])
            previous = positions[i]
        parts.append(window[previous:])
        return np.concatenate(parts).astype(np.int64), starts
