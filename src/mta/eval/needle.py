"""Multi-needle retrieval in a haystack of held-out text: `mta eval needle` (the paper's multi-needle test).

A sample of context length L with k needles: k facts "The secret number of <key> is <value>." (distinct keys,
distinct values) are spliced into L minus a few tokens of held-out corpus text (mta.eval.background), then the
question names one key and the prompt ends where the value should follow:

    ... haystack ... The secret number of lemon is 4821. ... haystack ... The secret number of tiger is 7305. ...
    What is the secret number of tiger? The secret number of tiger is      → candidates " 4821", " 7305": answer 2nd

Depth: the asked needle is inserted after round(depth × H) of the H haystack tokens (0: first, 1: last, moved to a
word start within mta.eval.background.SNAP tokens); the other needles at uniformly random depths. Every scored
sequence (prompt + candidate) has exactly L tokens. The candidates are the k values in the context, so the
model must bind the value to its key, not just copy a number; chance is 1/k. Values come from a pool whose
members all have the same token count under the corpus's tokenizer, so no candidate is favoured by its length.
Scored by choice accuracy (mta.eval.choice), optionally also greedy exact match.

Sample i of (k, L) depends only on (seed, k, L, i), and the samples of the depths of one (k, L) share their
haystack, keys, values and other needles: only the asked needle moves, so the depths are compared on paired data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from .background import Background
from .choice import METRIC, ChoiceSample, candidate_logprobs, choice_credit, greedy_matches, mean

NEEDLE = " The secret {kind} of {key} is {value}."
QUESTION = "\nWhat is the secret {kind} of {key}? The secret {kind} of {key} is"
KEYS = ("apple", "river", "candle", "mirror", "garden", "lemon", "tiger", "violin", "castle", "saddle", "anchor",
        "basket", "blanket", "bottle", "bridge", "button", "carpet", "cellar", "chimney", "compass", "copper",
        "crystal", "dagger", "desert", "dragon", "engine", "falcon", "feather", "forest", "fountain", "harbor",
        "helmet", "island", "jacket", "kettle", "ladder", "lantern", "marble", "meadow", "needle", "orchard",
        "palace", "parrot", "pepper", "pillow", "planet", "pocket", "rabbit", "ribbon", "rocket", "salmon",
        "shadow", "silver", "spider", "statue", "temple", "thunder", "timber", "tunnel", "turtle", "valley",
        "wagon", "window", "winter")
VALUE_WORDS = ("red", "blue", "green", "black", "white", "gold", "brown", "grey", "horse", "sheep", "wolf", "bear",
               "lion", "eagle", "fox", "deer", "stone", "iron", "salt", "bread", "wine", "milk", "honey", "oil",
               "rose", "lily", "oak", "pine", "corn", "wheat", "rice", "bean", "north", "south", "east", "west",
               "king", "queen", "judge", "prince", "sword", "shield", "bow", "spear", "ring", "crown", "key", "door",
               "ship", "boat", "cart", "wheel", "star", "moon", "sun", "cloud", "rain", "snow", "fire", "wind",
               "hill", "lake", "sea", "sand")
VALUE_KINDS = {"numbers": "number", "words": "word"}  # --values -> the word in the needle
DEFAULT_NEEDLES = (2, 4, 6)
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class NeedleSample(ChoiceSample):
    """A ChoiceSample plus where its asked needle is: it starts at prompt[needle_start], after `haystack_before`
    of the prompt's `haystack` haystack tokens."""

    needles: int
    length: int
    depth: float
    needle_start: int
    haystack_before: int
    haystack: int


def value_pool(background: Background, values: str) -> list[str]:
    """The values ("numbers": 1000–9999, "words": VALUE_WORDS) whose " value" has the most common token count
    (the smaller count on a tie), in their natural order."""
    if values not in VALUE_KINDS:
        raise ValueError(f"values: got {values!r}, expected one of {tuple(VALUE_KINDS)}")
    texts = [str(n) for n in range(1000, 10000)] if values == "numbers" else list(VALUE_WORDS)
    lengths = [len(background.encode(" " + text)) for text in texts]
    counts = Counter(lengths)
    modal = min(counts, key=lambda n: (-counts[n], n))
    return [text for text, n in zip(texts, lengths) if n == modal]


def needle_samples(background: Background, needles: int, length: int, depths, samples: int, seed: int,
                   values: str = "numbers") -> list[NeedleSample]:
    """`samples` samples for each depth of `depths` (sample-major: sample 0 at every depth, then sample 1, ...)."""
    pool = value_pool(background, values)
    _check_settings(needles, length, depths, samples, len(pool))
    check_room(background, needles, length, values, pool)
    kind = VALUE_KINDS[values]
    out = []
    for index in range(samples):
        rng = np.random.default_rng([seed, needles, length, index])
        keys = [KEYS[i] for i in rng.choice(len(KEYS), needles, replace=False)]
        chosen = [pool[i] for i in rng.choice(len(pool), needles, replace=False)]
        asked = int(rng.integers(needles))
        fractions = rng.random(needles)
        pieces = [background.encode(NEEDLE.format(kind=kind, key=k, value=v)) for k, v in zip(keys, chosen)]
        question = background.encode(QUESTION.format(kind=kind, key=keys[asked]))
        candidates = [background.encode(" " + v) for v in chosen]
        haystack = length - len(candidates[0]) - sum(map(len, pieces)) - len(question)  # >= 1: check_room
        window = background.window(rng, haystack)
        for depth in depths:
            where = [depth if i == asked else float(f) for i, f in enumerate(fractions)]
            positions = [background.snap(window, round(f * haystack)) for f in where]
            tokens, starts = background.insert(window, pieces, positions)
            out.append(NeedleSample(prompt=np.concatenate([tokens, question]), candidates=candidates, answer=asked,
                                    needles=needles, length=length, depth=float(depth), needle_start=starts[asked],
                                    haystack_before=positions[asked], haystack=haystack))
    return out


def evaluate_needle(model: torch.nn.Module, background: Background, needles=DEFAULT_NEEDLES, lengths=(512, 1024),
                    depths=DEFAULT_DEPTHS, samples: int = 500, seed: int = 0, values: str = "numbers",
                    batch_size: int = 8, autocast_dtype: torch.dtype | None = None, generate: bool = False,
                    max_seq_len: int | None = None, progress: bool = False) -> dict:
    """Choice accuracy (and with `generate`, greedy exact match) of `model` (tokens [B, N] -> logits [B, N, V]) for
    every (needle count, context length, depth); `max_seq_len`: the model's, checked against `lengths`.

    Returns {"task", "metric", "settings", "rows": [{"needles", "length", "depth", "samples", "accuracy_pct",
    "chance_pct"[, "exact_match_pct"]}], "by_needles" and "by_depth" (mean accuracy_pct), "mean_accuracy_pct"}.
    """
    if max_seq_len is not None and max(lengths) > max_seq_len:
        raise ValueError(f"lengths: got {max(lengths)}, longer than the model's max_seq_len={max_seq_len}; use "
                         "shorter contexts or extend the model's (docs/results/longctx.md)")
    pool = value_pool(background, values)
    for k in needles:
        for length in lengths:
            _check_settings(k, length, depths, samples, len(pool))
            check_room(background, k, length, values, pool)
    rows = []
    for k in needles:
        for length in lengths:
            batch = needle_samples(background, k, length, depths, samples, seed, values)
            desc = f"needle k={k} L={length}"
            scores = candidate_logprobs(model, batch, batch_size, autocast_dtype, progress, desc)
            matches = greedy_matches(model, batch, batch_size, autocast_dtype, progress, desc) if generate else None
            for depth in depths:
                picked = [i for i, s in enumerate(batch) if s.depth == float(depth)]
                row = {"needles": k, "length": length, "depth": float(depth), "samples": len(picked),
                       "accuracy_pct": 100 * mean([choice_credit(scores[i], batch[i].answer) for i in picked]),
                       "chance_pct": 100 / k}
                if matches is not None:
                    row["exact_match_pct"] = 100 * mean([matches[i] for i in picked])
                rows.append(row)
    by_needles = {str(k): mean([r["accuracy_pct"] for r in rows if r["needles"] == k]) for k in needles}
    by_depth = {f"{d:g}": mean([r["accuracy_pct"] for r in rows if r["depth"] == float(d)]) for d in depths}
    settings = {"needles": list(needles), "lengths": list(lengths), "depths": [float(d) for d in depths],
                "samples": samples, "seed": seed, "values": values, "haystack": background.source,
                "needle": NEEDLE.format(kind=VALUE_KINDS[values], key="<key>", value="<value>"),
                "generate": generate}
    return {"task": "needle", "metric": METRIC, "settings": settings, "rows": rows, "by_needles": by_needles,
            "by_depth": by_depth, "mean_accuracy_pct": mean([r["accuracy_pct"] for r in rows])}


def check_room(background: Background, needles: int, length: int, values: str, pool: list[str]) -> None:
    """ValueError unless `length` tokens hold `needles` of the longest needles, the longest question and an answer
    with at least one haystack token to spare."""
    kind = VALUE_KINDS[values]
    needle = max(len(background.encode(NEEDLE.format(kind=kind, key=key, value=pool[0]))) for key in KEYS)
    question = max(len(background.encode(QUESTION.format(kind=kind, key=key))) for key in KEYS)
    needed = needles * needle + question + len(background.encode(" " + pool[0]))
    if length <= needed:
        raise ValueError(f"lengths: {length} tokens cannot hold {needles} needles, the question and the answer (up to "
                         f"{needed} tokens) and a haystack; use a longer context or fewer needles")


def _check_settings(needles: int, length: int, depths, samples: int, pool: int) -> None:
    if not isinstance(needles, int) or not 1 <= needles <= min(len(KEYS), pool):
        raise ValueError(f"needles: got {needles!r}, expected 1 to {min(len(KEYS), pool)} (distinct keys and values)")
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"lengths: got {length!r}, expected positive integers")
    if not depths or any(not 0 <= d <= 1 for d in depths) or len(set(depths)) != len(depths):
        raise ValueError(f"depths: got {list(depths)!r}, expected distinct fractions in [0, 1]")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: got {samples!r}, expected a positive integer")
