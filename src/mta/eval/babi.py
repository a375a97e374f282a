"""bAbI QA1–QA5 spread through distractor text: `mta eval babi` (the paper's BabiLong evaluation, arXiv 2406.10149).

A story of mta.data.babi is spread through D tokens of held-out corpus text (mta.eval.background): its sentences
go, in order, at sorted uniformly random points of the distractor window (each moved to a word start), then the
question and its completion cue follow, and the answer word is scored among the task's answer vocabulary:

    ... distractor ... Mary moved to the bathroom. ... distractor ... John went to the hallway. ... distractor ...
    Where is Mary? Mary is in the          → candidates " kitchen", " garden", ..., " bathroom"

D = 0 is the plain story. Scored by choice accuracy (mta.eval.choice), optionally also greedy exact match; chance
is 1/#candidates (6 rooms; QA5: 4 people or 3 objects). Sample i of a task uses story i of (seed, task) at every D,
so the distraction lengths are compared on the same stories; its distractor window depends on (seed, task, i, D).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mta.data.babi import TASKS, generate_story

from .background import Background
from .choice import METRIC, ChoiceSample, candidate_logprobs, choice_credit, greedy_matches

DEFAULT_DISTRACTION = (0, 1000, 2000, 4000)


@dataclass
class BabiSample(ChoiceSample):
    """A ChoiceSample plus its task, distraction length and where each story sentence starts in the prompt."""

    task: str
    distraction: int
    sentence_starts: list[int]


def babi_samples(background: Background, task: str, distraction: int, samples: int, seed: int) -> list[BabiSample]:
    """Stories 0 .. samples-1 of (task, seed), each spread through `distraction` tokens of `background`."""
    if not isinstance(distraction, int) or distraction < 0:
        raise ValueError(f"distraction: got {distraction!r}, expected non-negative token counts")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: got {samples!r}, expected a positive integer")
    out = []
    for index in range(samples):
        story = generate_story(task, seed, index)
        sentences = [background.encode(" " + sentence) for sentence in story.sentences]
        question = background.encode(f"\n{story.question} {story.cue}")
        rng = np.random.default_rng([seed, TASKS.index(task), index, distraction])
        window = background.window(rng, distraction) if distraction else np.zeros(0, dtype=np.int64)
        points = np.sort(rng.integers(0, distraction + 1, len(sentences)))
        positions = sorted(background.snap(window, int(p)) for p in points)
        tokens, starts = background.insert(window, sentences, positions)
        out.append(BabiSample(prompt=np.concatenate([tokens, question]),
                              candidates=[background.encode(" " + word) for word in story.candidates],
                              answer=story.candidates.index(story.answer), task=task, distraction=distraction,
                              sentence_starts=starts))
    return out


def evaluate_babi(model: torch.nn.Module, background: Background, tasks=TASKS, distractions=DEFAULT_DISTRACTION,
                  samples: int = 500, seed: int = 0, batch_size: int = 8, autocast_dtype: torch.dtype | None = None,
                  generate: bool = False, max_seq_len: int | None = None, skip_too_long: bool = False,
                  progress: bool = False) -> dict:
    """Choice accuracy (and with `generate`, greedy exact match) of `model` (tokens [B, N] -> logits [B, N, V]) for
    every (task, distraction length).

    A distraction length whose longest scored sequence would exceed `max_seq_len` raises a ValueError, or with
    `skip_too_long` is left out (before any text is drawn for it) and listed in "skipped". Returns {"task",
    "metric", "settings", "rows": [{"task", "distraction", "samples", "accuracy_pct", "chance_pct", "max_tokens"
    [, "exact_match_pct"]}], "by_task", "by_distraction" (mean accuracy_pct), "mean_accuracy_pct", "skipped"}.
    """
    if not tasks or any(task not in TASKS for task in tasks):
        raise ValueError(f"tasks: got {list(tasks)!r}, expected some of {TASKS}")
    # Distractor text adds exactly d tokens to a story, so the plain stories tell which lengths fit.
    story_tokens = max(s.max_length() for task in tasks for s in babi_samples(background, task, 0, samples, seed))
    kept, skipped = [], []
    for d in distractions:
        if max_seq_len is None or story_tokens + d <= max_seq_len:
            kept.append(d)
            continue
        message = (f"{d} tokens of distraction make sequences of up to {story_tokens + d} tokens, more than the "
                   f"model's max_seq_len={max_seq_len}")
        if not skip_too_long:
            raise ValueError(f"distraction: {message}; use shorter distraction")
        skipped.append({"distraction": d, "reason": message})
    if not kept:
        raise ValueError(f"distraction: none of {list(distractions)} fits the model's max_seq_len={max_seq_len}")
    rows = []
    for task, d in ((task, d) for d in kept for task in tasks):
        batch = babi_samples(background, task, d, samples, seed)
        desc = f"babi {task} D={d}"
        scores = candidate_logprobs(model, batch, batch_size, autocast_dtype, progress, desc)
        row = {"task": task, "distraction": d, "samples": len(batch),
               "accuracy_pct": float(100 * np.mean([choice_credit(sc, s.answer) for sc, s in zip(scores, batch)])),
               "chance_pct": float(100 * np.mean([1 / len(s.candidates) for s in batch])),
               "max_tokens": max(s.max_length() for s in batch)}
        if generate:
            row["exact_match_pct"] = float(100 * np.mean(greedy_matches(model, batch, batch_size, autocast_dtype,
                                                                        progress, desc)))
        rows.append(row)

    def mean(key, value) -> float:
        return float(np.mean([r["accuracy_pct"] for r in rows if r[key] == value]))

    return {"task": "babi", "metric": METRIC,
            "settings": {"tasks": list(tasks), "distractions": kept, "samples": samples, "seed": seed,
                         "distractor_text": background.source, "generate": generate},
            "rows": rows, "by_task": {task: mean("task", task) for task in tasks},
            "by_distraction": {str(d): mean("distraction", d) for d in kept},
            "mean_accuracy_pct": float(np.mean([r["accuracy_pct"] for r in rows])), "skipped": skipped}
