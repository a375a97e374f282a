"""bAbI QA1–QA5 spread through distractor text: `mta eval babi` (the paper's BabiLong evaluation, arXiv 2406.10149).

A story of mta.data.babi is spread through held-out corpus text (mta.eval.background) up to a context length L:
its sentences go, in order, at sorted uniformly random points of a distractor window (each moved to a word
start), then the question and its completion cue follow, and the answer word is scored among the task's answer
vocabulary:

    ... distractor ... Mary moved to the bathroom. ... distractor ... John went to the hallway. ... distractor ...
    Where is Mary? Mary is in the          → candidates " kitchen", " garden", ..., " bathroom"

As in BabiLong, L counts everything: story + distractor + question + the longest candidate = L tokens, so the
distractor is L minus what the story needs (a 1,024-token setting fits a model of 1,024 tokens). L = 0 is the
plain story, no distractor. Scored by choice accuracy (mta.eval.choice), optionally also greedy exact match;
chance is 1/#candidates (6 rooms; QA5: 4 people or 3 objects). Sample i of a task uses story i of (seed, task) at
every L, so the lengths are compared on the same stories; its distractor window depends on (seed, task, i, L).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mta.data.babi import TASKS, generate_story

from .background import Background
from .choice import METRIC, ChoiceSample, candidate_logprobs, choice_credit, greedy_matches, mean

DEFAULT_LENGTHS = (0, 1024, 2048, 4096)


@dataclass
class BabiSample(ChoiceSample):
    """A ChoiceSample plus its task, context length (0: the plain story), how many distractor tokens it holds
    and where each story sentence starts in the prompt."""

    task: str
    length: int
    distractor_tokens: int
    sentence_starts: list[int]


def babi_samples(background: Background, task: str, length: int, samples: int, seed: int) -> list[BabiSample]:
    """Stories 0 .. samples-1 of (task, seed), each spread through distractor text up to `length` tokens in all
    (0: no distractor). ValueError if a story does not fit in `length`."""
    if not isinstance(length, int) or length < 0:
        raise ValueError(f"lengths: got {length!r}, expected non-negative token counts")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: got {samples!r}, expected a positive integer")
    out = []
    for index in range(samples):
        story = generate_story(task, seed, index)
        sentences = [background.encode(" " + sentence) for sentence in story.sentences]
        question = background.encode(f"\n{story.question} {story.cue}")
        candidates = [background.encode(" " + word) for word in story.candidates]
        needed = sum(map(len, sentences)) + len(question) + max(map(len, candidates))
        if length and needed > length:
            raise ValueError(f"lengths: {length} tokens cannot hold story {index} of {task} ({needed} tokens)")
        distractor = length - needed if length else 0
        rng = np.random.default_rng([seed, TASKS.index(task), index, length])
        window = background.window(rng, distractor) if distractor else np.zeros(0, dtype=np.int64)
        points = np.sort(rng.integers(0, distractor + 1, len(sentences)))
        positions = sorted(background.snap(window, int(p)) for p in points)
        tokens, starts = background.insert(window, sentences, positions)
        out.append(BabiSample(prompt=np.concatenate([tokens, question]), candidates=candidates,
                              answer=story.candidates.index(story.answer), task=task, length=length,
                              distractor_tokens=distractor, sentence_starts=starts))
    return out


def evaluate_babi(model: torch.nn.Module, background: Background, tasks=TASKS, lengths=DEFAULT_LENGTHS,
                  samples: int = 500, seed: int = 0, batch_size: int = 8, autocast_dtype: torch.dtype | None = None,
                  generate: bool = False, max_seq_len: int | None = None, skip_too_long: bool = False,
                  progress: bool = False) -> dict:
    """Choice accuracy (and with `generate`, greedy exact match) of `model` (tokens [B, N] -> logits [B, N, V]) for
    every (task, context length).

    A length longer than `max_seq_len` (for 0: a plain story longer than it) raises a ValueError, or with
    `skip_too_long` is left out and listed in "skipped"; so is a length too short for a story. Returns {"task",
    "metric", "settings", "rows": [{"task", "length", "samples", "accuracy_pct", "chance_pct",
    "distractor_tokens" (mean)[, "exact_match_pct"]}], "by_task", "by_length" (mean accuracy_pct),
    "mean_accuracy_pct", "skipped"}.
    """
    if not tasks or any(task not in TASKS for task in tasks):
        raise ValueError(f"tasks: got {list(tasks)!r}, expected some of {TASKS}")
    story = max(s.max_length() for task in tasks for s in babi_samples(background, task, 0, samples, seed))
    kept, skipped = [], []
    for length in lengths:
        if not isinstance(length, int) or length < 0:
            raise ValueError(f"lengths: got {length!r}, expected non-negative token counts")
        if 0 < length < story:
            reason = f"{length} tokens cannot hold the longest story ({story} tokens)"
        elif max_seq_len is not None and max(length, story) > max_seq_len:
            reason = f"{max(length, story)} tokens are more than the model's max_seq_len={max_seq_len}"
        else:
            kept.append(length)
            continue
        if not skip_too_long:
            raise ValueError(f"lengths: {reason}")
        skipped.append({"length": length, "reason": reason})
    if not kept:
        raise ValueError(f"lengths: none of {list(lengths)} fits (max_seq_len={max_seq_len}, stories up to {story} "
                         "tokens)")
    rows = []
    for length in kept:
        for task in tasks:
            batch = babi_samples(background, task, length, samples, seed)
            desc = f"babi {task} L={length}"
            scores = candidate_logprobs(model, batch, batch_size, autocast_dtype, progress, desc)
            row = {"task": task, "length": length, "samples": len(batch),
                   "accuracy_pct": mean([100 * choice_credit(sc, s.answer) for sc, s in zip(scores, batch)]),
                   "chance_pct": mean([100 / len(s.candidates) for s in batch]),
                   "distractor_tokens": mean([s.distractor_tokens for s in batch])}
            if generate:
                row["exact_match_pct"] = mean([100 * m for m in greedy_matches(model, batch, batch_size,
                                                                                autocast_dtype, progress, desc)])
            rows.append(row)

    def accuracy_where(key, value) -> float:
        return mean([r["accuracy_pct"] for r in rows if r[key] == value])

    return {"task": "babi", "metric": METRIC,
            "settings": {"tasks": list(tasks), "lengths": kept, "samples": samples, "seed": seed,
                         "distractor_text": background.source, "generate": generate},
            "rows": rows, "by_task": {task: accuracy_where("task", task) for task in tasks},
            "by_length": {str(length): accuracy_where("length", length) for length in kept},
            "mean_accuracy_pct": mean([r["accuracy_pct"] for r in rows]), "skipped": skipped}


