"""The tensor toy generator: the task's invariants, the encode_batch layout, determinism, the distribution."""

import collections

import pytest
import torch

from mta.data import toy
from mta.data.toy_tensor import decode_samples, draw_batch
from mta.eval.toy import encode_batch


def blocks_and_query(sample):
    body, query = sample["src"].split("#")
    return body.split("."), query


@pytest.mark.parametrize("n_block,n_query,num_blocks", [(5, 2, 52), (8, 2, 34), (3, 3, 12), (2, 1, 40)])
@pytest.mark.parametrize("variant", toy.VARIANTS)
def test_invariants_and_layout(n_block, n_query, num_blocks, variant):
    generator = torch.Generator().manual_seed(0)
    inputs, targets = draw_batch(64, n_block, n_query, variant, num_blocks, generator)
    samples = decode_samples(inputs, targets)
    for sample in samples:
        blocks, query = blocks_and_query(sample)
        assert len(blocks) == len(set(blocks)) == num_blocks
        assert all(len(b) == len(set(b)) == n_block for b in blocks)
        assert len(query) == len(set(query)) == n_query
        holders = [b for b in blocks if set(query) <= set(b)]
        assert len(holders) == 1
        assert sample["tgt"] == {"all": holders[0], "first": holders[0][0], "last": holders[0][-1]}[variant]
    expected_inputs, expected_targets = encode_batch(samples)
    assert torch.equal(inputs, expected_inputs) and torch.equal(targets, expected_targets)


def test_determinism_by_generator_state():
    draw = lambda seed: draw_batch(8, 5, 2, "all", 10, torch.Generator().manual_seed(seed))  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(draw(1), draw(1)))
    assert not torch.equal(draw(1)[0], draw(2)[0])


def test_rejection_is_exercised_and_respected():
    # 3-letter blocks over 26 letters with 2 query letters: a distractor holds both about 1% of the time, and
    # with 3 blocks of 1 letter out of 3 possible... force repeats: 1-letter blocks, 20 blocks, 1 query letter.
    inputs, targets = draw_batch(200, 1, 1, "all", 20, torch.Generator().manual_seed(0))
    for sample in decode_samples(inputs, targets):
        blocks, query = blocks_and_query(sample)
        assert len(set(blocks)) == 20 and blocks.count(query) == 1


def test_distribution_matches_the_python_generator():
    """Target position and letter frequencies agree with mta.data.toy within sampling noise."""
    n = 2000
    tensor_samples = decode_samples(*draw_batch(n, 5, 2, "first", 10, torch.Generator().manual_seed(3)))
    python_samples = toy.generate(5, 2, "first", n, seed=3, num_blocks=10)

    def stats(samples):
        positions = collections.Counter()
        firsts = collections.Counter()
        for sample in samples:
            blocks, query = blocks_and_query(sample)
            positions[[i for i, b in enumerate(blocks) if set(query) <= set(b)][0]] += 1
            firsts[sample["tgt"]] += 1
        return [positions[i] / len(samples) for i in range(10)], [firsts[c] / len(samples) for c in toy.ALPHABET]

    for ours, theirs, expected in zip(stats(tensor_samples), stats(python_samples), (0.1, 1 / 26)):
        assert max(abs(a - expected) for a in ours) < 0.035
        assert max(abs(a - expected) for a in theirs) < 0.035
