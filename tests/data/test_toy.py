"""The toy-task generator and its CLI (docs/spec.md §5)."""

import argparse
import json
import random

import pytest

from mta.cli.toy import register
from mta.data import toy


def parse(sample):
    """Return (blocks, query) of a sample's source."""
    body, query = sample["src"].split("#")
    return body.split("."), query


def target_block(sample):
    blocks, query = parse(sample)
    holders = [b for b in blocks if set(query) <= set(b)]
    assert len(holders) == 1, sample
    return holders[0]


@pytest.mark.parametrize("n_block,n_query", [(5, 2), (8, 4), (3, 3), (1, 1), (26, 5)])
@pytest.mark.parametrize("variant", toy.VARIANTS)
def test_sample_structure_and_label(n_block, n_query, variant):
    num_blocks = 1 if n_block == 26 else 20
    for sample in toy.generate(n_block, n_query, variant, samples=30, seed=0, num_blocks=num_blocks):
        blocks, query = parse(sample)
        assert len(blocks) == num_blocks
        assert len(set(blocks)) == num_blocks
        for b in blocks:
            assert len(b) == len(set(b)) == n_block and set(b) <= set(toy.ALPHABET)
        assert len(query) == len(set(query)) == n_query
        target = target_block(sample)
        assert set(query) <= set(target)
        assert sample["tgt"] == {"all": target, "first": target[0], "last": target[-1]}[variant]


def test_query_order_and_target_position_vary():
    samples = toy.generate(5, 2, "all", samples=200, seed=1)
    positions = {parse(s)[0].index(target_block(s)) for s in samples}
    assert len(positions) > 20
    # The query letters are not always in the target block's letter order.
    queries = [parse(s)[1] for s in samples]
    assert any(s["tgt"].index(q[0]) > s["tgt"].index(q[1]) for s, q in zip(samples, queries))


def test_determinism_by_seed():
    a = toy.generate(5, 2, "all", samples=20, seed=7)
    assert a == toy.generate(5, 2, "all", samples=20, seed=7)
    assert a != toy.generate(5, 2, "all", samples=20, seed=8)
    rng = random.Random(3)
    assert toy.make_sample(rng, 5, 2, "last", 10) != toy.make_sample(rng, 5, 2, "last", 10)


@pytest.mark.parametrize(
    "sample,reach",
    [
        ({"src": "qbe.kxa#ax", "tgt": "k"}, 2),  # "first": "a" is 2 letters after "k"
        ({"src": "qbe.kxa#ax", "tgt": "kxa"}, 2),  # "all": the same first target letter
        ({"src": "qbe.kxa#xk", "tgt": "a"}, 2),  # "last": "k" is 2 letters before "a"
        ({"src": "qbe.kxa#xa", "tgt": "a"}, 1),  # a query letter may be the answer itself
        ({"src": "kxa.axz#ax", "tgt": "k"}, None),  # two blocks hold the query letters
        ({"src": "qbe.kxa#ax", "tgt": "q"}, None),  # the target letter is not in the query's block
        ({"src": "qbe.kxa#", "tgt": "k"}, None),  # no query
        ({"src": "qbe.kxa#ax", "tgt": ""}, None),  # no target
    ],
)
def test_answer_reach(sample, reach):
    assert toy.answer_reach(sample) == reach


@pytest.mark.parametrize("variant", toy.VARIANTS)
def test_answer_reach_of_generated_samples(variant):
    """With two query letters of an 8-letter block, a reach r in 1..7 comes from r of the 28 letter pairs."""
    samples = toy.generate(8, 2, variant, samples=400, seed=5)
    reaches = [toy.answer_reach(s) for s in samples]
    for sample, reach in zip(samples, reaches):
        block, answer = target_block(sample), sample["tgt"][0]
        assert reach == max(abs(block.index(q) - block.index(answer)) for q in parse(sample)[1])
    assert set(reaches) == set(range(1, 8))
    assert sum(r <= 4 for r in reaches) / len(reaches) == pytest.approx(10 / 28, abs=0.07)


def test_default_lengths():
    assert toy.default_num_blocks(5, 2) == 52
    assert toy.default_num_blocks(8, 4) == 34
    assert toy.default_num_blocks(8, 2) == 34
    for s in toy.generate(5, 2, "all", samples=5, seed=0):
        assert len(parse(s)[0]) == 52
        assert len(s["src"]) + len(s["tgt"]) == 319
    for s in toy.generate(8, 4, "first", samples=5, seed=0):
        assert len(parse(s)[0]) == 34
        assert len(s["src"]) + 8 <= 319


def test_vocabulary():
    assert toy.VOCAB_SIZE == 31
    assert (toy.PAD_ID, toy.BOS_ID, toy.EOS_ID) == (0, 1, 2)
    assert toy.encode(".#az") == [3, 4, 5, 30]
    text = toy.generate(5, 2, "all", samples=1, seed=0)[0]["src"]
    assert toy.decode(toy.encode(text)) == text
    assert toy.decode([toy.BOS_ID, 5, 6, toy.EOS_ID, toy.PAD_ID]) == "ab"
    with pytest.raises(ValueError, match="'A'"):
        toy.encode("abA")
    with pytest.raises(ValueError, match="31"):
        toy.decode([31])


def test_jsonl_round_trip(tmp_path):
    samples = toy.generate(5, 2, "first", samples=10, seed=0)
    path = tmp_path / "sub" / "toy.jsonl"
    toy.write_jsonl(samples, path)
    lines = path.read_text().splitlines()
    assert len(lines) == 10 and set(json.loads(lines[0])) == {"src", "tgt"}
    assert toy.read_jsonl(path) == samples


@pytest.mark.parametrize(
    "line",
    ['{"src": "ab"', '["ab", "a"]', '{"src": "ab"}', '{"src": "ab", "tgt": 3}'],
)
def test_read_jsonl_errors(tmp_path, line):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"src": "ab#a", "tgt": "ab"}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3:"):
        toy.read_jsonl(path)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(n_block=0), "n_block"),
        (dict(n_block=27), "n_block"),
        (dict(n_query=0), "n_query"),
        (dict(n_query=6), "n_query"),
        (dict(variant="middle"), "variant"),
        (dict(num_blocks=0), "num_blocks"),
        (dict(samples=-1), "samples"),
        # Every 26-letter block holds every query letter: no distractor exists.
        (dict(n_block=26, n_query=26, num_blocks=2), "num_blocks"),
        (dict(n_block=26, n_query=1, num_blocks=2), "num_blocks"),
        # Only 25 one-letter blocks miss the query letter.
        (dict(n_block=1, n_query=1, num_blocks=27), "num_blocks"),
    ],
)
def test_validation(kwargs, name):
    args = dict(n_block=5, n_query=2, variant="all", samples=1, seed=0, num_blocks=10) | kwargs
    with pytest.raises(ValueError, match=f"^{name}:"):
        toy.generate(**args)
    if name != "samples":
        del args["samples"], args["seed"]
        with pytest.raises(ValueError, match=f"^{name}:"):
            toy.make_sample(random.Random(0), **args)


def test_edges():
    # Exactly as many distractors as exist: every letter appears once.
    blocks, _ = parse(toy.generate(1, 1, "all", samples=1, seed=0, num_blocks=26)[0])
    assert sorted(blocks) == list(toy.ALPHABET)
    with pytest.raises(ValueError, match="max_chars"):
        toy.default_num_blocks(5, 2, max_chars=12)
    assert toy.default_num_blocks(5, 2, max_chars=13) == 1


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="mta")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_generate(tmp_path, capsys):
    out = tmp_path / "train.jsonl"
    run_cli(["toy", "generate", "--samples", "12", "--seed", "3", "--out", str(out)])
    assert str(out) in capsys.readouterr().out
    assert toy.read_jsonl(out) == toy.generate(5, 2, "all", samples=12, seed=3)

    run_cli(["toy", "generate", "--n-block", "8", "--n-query", "4", "--variant", "last", "--samples", "3",
             "--num-blocks", "6", "--out", str(out)])
    samples = toy.read_jsonl(out)
    assert len(samples) == 3 and all(len(parse(s)[0]) == 6 and len(s["tgt"]) == 1 for s in samples)


def test_cli_requires_subcommand():
    with pytest.raises(SystemExit):
        run_cli(["toy"])
