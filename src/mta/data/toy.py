"""The toy task of the paper's Table 1: find the block that holds all query letters (docs/spec.md §5).

A sample's source is ``num_blocks`` blocks of ``n_block`` distinct letters joined by '.', then '#', then
``n_query`` query letters. Exactly one block (the target) holds every query letter; the label is that whole
block ("all"), its first letter ("first") or its last letter ("last"). Example (N = 3, L = 2, "all"):
``src = "qbe.kxa.mzc#ax"``, ``tgt = "kxa"``.

Unlike the official generator, a sample never truncates a block, and the output depends only on the seed.
"""

import functools
import json
import math
import os
import random
import string

ALPHABET = string.ascii_lowercase
BLOCK_SEP = "."
QUERY_SEP = "#"
VARIANTS = ("all", "first", "last")

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
CHARS = BLOCK_SEP + QUERY_SEP + ALPHABET
_CHAR_TO_ID = {ch: i + 3 for i, ch in enumerate(CHARS)}
VOCAB_SIZE = 3 + len(CHARS)


def encode(text: str) -> list[int]:
    """Return the token ids of ``text``, one per character (no BOS/EOS added)."""
    ids = []
    for pos, ch in enumerate(text):
        if ch not in _CHAR_TO_ID:
            raise ValueError(f"text: unknown character {ch!r} at position {pos}; expected one of {CHARS!r}")
        ids.append(_CHAR_TO_ID[ch])
    return ids


def decode(ids) -> str:
    """Return the characters of ``ids``; pad, BOS and EOS are dropped."""
    chars = []
    for pos, i in enumerate(ids):
        i = int(i)
        if not 0 <= i < VOCAB_SIZE:
            raise ValueError(f"ids: id {i} at position {pos} is outside the vocabulary [0, {VOCAB_SIZE})")
        if i > EOS_ID:
            chars.append(CHARS[i - 3])
    return "".join(chars)


def _check_block(n_block: int, n_query: int) -> None:
    if not 1 <= n_block <= len(ALPHABET):
        raise ValueError(f"n_block: got {n_block}, expected 1..{len(ALPHABET)}")
    if not 1 <= n_query <= n_block:
        raise ValueError(f"n_query: got {n_query}, expected 1..n_block ({n_block})")


def _validate(n_block: int, n_query: int, variant: str, num_blocks: int) -> None:
    _check_block(n_block, n_query)
    if variant not in VARIANTS:
        raise ValueError(f"variant: got {variant!r}, expected one of {VARIANTS}")
    if num_blocks < 1:
        raise ValueError(f"num_blocks: got {num_blocks}, expected >= 1")
    # Distinct strings of n_block distinct letters that miss at least one query letter; asking for more
    # distractors than exist would make the rejection sampling loop forever.
    n = len(ALPHABET)
    available = (math.comb(n, n_block) - math.comb(n - n_query, n_block - n_query)) * math.factorial(n_block)
    if num_blocks - 1 > available:
        raise ValueError(
            f"num_blocks: got {num_blocks}, but only {available} distinct distractor blocks exist for "
            f"n_block={n_block}, n_query={n_query}; expected num_blocks <= {available + 1}"
        )


def default_num_blocks(n_block: int, n_query: int, max_chars: int = 319) -> int:
    """Return the most whole blocks such that len(src) + len(tgt of the "all" variant) <= ``max_chars``.

    With the official 319 characters this is 52 blocks for n_block 5 and 34 for n_block 8.
    """
    _check_block(n_block, n_query)
    # num_blocks * n_block letters + (num_blocks - 1) '.' + '#' + query + target block
    num_blocks = (max_chars - n_query - n_block) // (n_block + 1)
    if num_blocks < 1:
        raise ValueError(
            f"max_chars: got {max_chars}, expected >= {2 * n_block + 1 + n_query} to fit one block, "
            f"the query and the target"
        )
    return num_blocks


def _draw(rng: random.Random, n_block: int, n_query: int, variant: str, num_blocks: int) -> dict:
    target = "".join(rng.sample(ALPHABET, n_block))
    query = rng.sample(target, n_query)
    needed = set(query)
    # A list, not a set, keeps the order (and so the output) independent of string hashing.
    blocks, seen = [target], {target}
    while len(blocks) < num_blocks:
        block = "".join(rng.sample(ALPHABET, n_block))
        if block not in seen and not needed.issubset(block):
            blocks.append(block)
            seen.add(block)
    rng.shuffle(blocks)
    src = BLOCK_SEP.join(blocks) + QUERY_SEP + "".join(query)
    tgt = {"all": target, "first": target[0], "last": target[-1]}[variant]
    return {"src": src, "tgt": tgt}


def make_sample(rng: random.Random, n_block: int, n_query: int, variant: str, num_blocks: int) -> dict:
    """Draw one sample with ``rng``; return ``{"src": str, "tgt": str}``.

    The target block has ``n_block`` distinct letters in random order; the ``n_query`` distinct query letters
    are drawn from it in random order. Each of the ``num_blocks - 1`` distractor blocks has ``n_block``
    distinct letters and is redrawn if it holds every query letter or repeats a block already drawn.
    """
    _validate(n_block, n_query, variant, num_blocks)
    return _draw(rng, n_block, n_query, variant, num_blocks)


def generate(
    n_block: int, n_query: int, variant: str, samples: int, seed: int, num_blocks: int | None = None
) -> list[dict]:
    """Return ``samples`` samples (see `make_sample`), determined by ``seed`` alone.

    ``num_blocks`` defaults to `default_num_blocks(n_block, n_query)`.
    """
    if num_blocks is None:
        num_blocks = default_num_blocks(n_block, n_query)
    _validate(n_block, n_query, variant, num_blocks)
    if samples < 0:
        raise ValueError(f"samples: got {samples}, expected >= 0")
    rng = random.Random(seed)
    return [_draw(rng, n_block, n_query, variant, num_blocks) for _ in range(samples)]


def answer_reach(sample: dict) -> int | None:
    """How far the furthest query letter sits from the first target letter, in letters within the target block.

    The first target letter (the block's first for "all" and "first", its last for "last") is the one that needs
    the target block found; a q–k kernel c_k keys wide scores a key by the query letters at most (c_k - 1) // 2
    letters away, so samples of a larger reach need more than one convolution step. E.g. N = 3, src
    "qbe.kxa#ax", tgt "k": the target block "kxa" has "a" 2 letters after "k", so the reach is 2. None where no
    single block holds every query letter and the first target letter (a file from elsewhere may truncate blocks).
    """
    return _reach(sample["src"], sample["tgt"])


# Cached: every evaluation of a training run scores the same held-out samples (100 times in a Table 1 run).
@functools.lru_cache(maxsize=1 << 16)
def _reach(src: str, tgt: str) -> int | None:
    blocks, _, query = src.rpartition(QUERY_SEP)
    holding = [block for block in blocks.split(BLOCK_SEP) if set(query) <= set(block)]
    if not query or not tgt or len(holding) != 1 or tgt[0] not in holding[0]:
        return None
    block = holding[0]
    answer = block.index(tgt[0])
    return max(abs(block.index(letter) - answer) for letter in query)


def write_jsonl(samples: list[dict], path: str | os.PathLike) -> None:
    """Write one ``{"src", "tgt"}`` JSON object per line to ``path``, creating its parent directory."""
    dirname = os.path.dirname(os.fspath(path))
    if dirname:
        os.makedirs(dirname, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps({"src": sample["src"], "tgt": sample["tgt"]}) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Return the ``{"src": str, "tgt": str}`` samples in ``path``; blank lines are skipped.

    Raises ValueError naming the line number when a line is not a JSON object with string src and tgt.
    """
    samples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("src", "tgt")):
                raise ValueError(f"{path}:{lineno}: expected an object with string 'src' and 'tgt'")
            samples.append({"src": obj["src"], "tgt": obj["tgt"]})
    return samples
