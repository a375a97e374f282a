"""Multi-needle retrieval (`mta eval needle`): samples are seeded and well formed, needles sit at their depth, the
scoring gives 100% to a model that knows the answers, 0% to one that knows wrong ones and chance to one that
knows nothing; `mta eval needle` on a tiny checkpoint."""

import json
import re

import pytest
import torch

from lm_oracle import Uniform, right_and_wrong
from mta.cli import main
from mta.eval.background import SNAP
from mta.eval.choice import choice_credit
from mta.eval.needle import NEEDLE, QUESTION, evaluate_needle, needle_samples, value_pool
from mta.models import DecoderLM, get_preset
from mta.models.checkpoint import save_checkpoint

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def text(background, ids):
    return background.tokenizer.decode([int(t) for t in ids])


def test_samples_are_deterministic_by_seed(background):
    first = needle_samples(background, 3, 160, DEPTHS, 4, seed=0)
    again = needle_samples(background, 3, 160, DEPTHS, 4, seed=0)
    fewer = needle_samples(background, 3, 160, DEPTHS, 2, seed=0)
    other = needle_samples(background, 3, 160, DEPTHS, 4, seed=1)

    def key(samples):
        return [(s.prompt.tolist(), s.candidates, s.answer, s.depth) for s in samples]

    assert key(first) == key(again)
    assert key(fewer) == key(first)[:len(fewer)]  # sample i does not depend on how many are drawn
    assert key(other) != key(first)


@pytest.mark.parametrize("values", ["numbers", "words"])
def test_samples_are_well_formed_and_needles_sit_at_their_depth(background, values):
    kind = {"numbers": "number", "words": "word"}[values]
    samples = needle_samples(background, 4, 200, DEPTHS, 3, seed=5, values=values)
    assert len(samples) == 3 * len(DEPTHS)
    for index in range(3):
        paired = samples[index * len(DEPTHS):(index + 1) * len(DEPTHS)]
        haystacks = []
        for sample, depth in zip(paired, DEPTHS):
            assert sample.depth == depth and sample.needles == 4 and sample.length == 200
            assert len(sample.prompt) + len(sample.candidates[0]) == 200  # exactly L tokens scored
            assert len({len(c) for c in sample.candidates}) == 1  # no candidate favoured by its length
            prompt = text(background, sample.prompt)
            needles = dict(re.findall(rf"The secret {kind} of (\w+) is (\w+)\.", prompt))  # key -> value
            values_text = [text(background, c).strip() for c in sample.candidates]
            assert len(needles) == 4 and sorted(needles.values()) == sorted(values_text)
            asked = next(key for key, value in needles.items() if value == values_text[sample.answer])
            assert prompt.endswith(QUESTION.format(kind=kind, key=asked))
            starts = {key: _find(background, sample.prompt, NEEDLE.format(kind=kind, key=key, value=value))
                      for key, value in needles.items()}
            assert starts[asked] == sample.needle_start
            # the haystack tokens before the asked needle: its start less the other needles placed before it
            others = sum(len(background.encode(NEEDLE.format(kind=kind, key=key, value=needles[key])))
                         for key, start in starts.items() if key != asked and start < sample.needle_start)
            assert sample.needle_start - others == sample.haystack_before
            assert abs(sample.haystack_before - depth * sample.haystack) <= SNAP
            haystacks.append(_without(background, sample.prompt, [NEEDLE.format(kind=kind, key=key, value=value)
                                                                  for key, value in needles.items()]))
        assert paired[0].needle_start == 0 and paired[-1].haystack_before == paired[-1].haystack
        assert all(h == haystacks[0] for h in haystacks)  # depths share the haystack: only the needle moves


def _find(background, prompt, piece):
    """Where the tokens of `piece` start in `prompt` (they occur once)."""
    tokens, prompt = background.encode(piece), prompt.tolist()
    found = [i for i in range(len(prompt)) if prompt[i:i + len(tokens)] == tokens]
    assert len(found) == 1
    return found[0]


def _without(background, prompt, pieces):
    """`prompt` with the tokens of every piece cut out."""
    spans = sorted((_find(background, prompt, piece), len(background.encode(piece))) for piece in pieces)
    prompt, kept, previous = prompt.tolist(), [], 0
    for start, length in spans:
        kept += prompt[previous:start]
        previous = start + length
    return kept + prompt[previous:]


def test_value_pool_has_one_token_count(background):
    for values in ("numbers", "words"):
        pool = value_pool(background, values)
        assert len(pool) >= 6 and len({len(background.encode(" " + v)) for v in pool}) == 1
    with pytest.raises(ValueError, match="^values"):
        value_pool(background, "colours")


def test_a_model_that_knows_the_answers_scores_100_and_a_wrong_one_0(background):
    settings = dict(needles=(2, 3), lengths=(120, 160), depths=(0.0, 0.5, 1.0), samples=3, seed=2, generate=True)
    samples = [s for k in settings["needles"] for n in settings["lengths"]
               for s in needle_samples(background, k, n, settings["depths"], 3, seed=2)]
    right, wrong = right_and_wrong(samples, background.vocab_size)
    for model, expected in ((right, 100.0), (wrong, 0.0)):
        report = evaluate_needle(model, background, batch_size=5, **settings)
        assert len(report["rows"]) == 2 * 2 * 3
        assert {r["accuracy_pct"] for r in report["rows"]} == {expected}
        assert {r["exact_match_pct"] for r in report["rows"]} == {expected}
        assert report["mean_accuracy_pct"] == expected and set(report["by_needles"].values()) == {expected}
        assert report["by_depth"] == {"0": expected, "0.5": expected, "1": expected}
    assert {(r["needles"], r["chance_pct"]) for r in report["rows"]} == {(2, 50.0), (3, 100 / 3)}


def test_a_model_that_knows_nothing_scores_chance(background):
    report = evaluate_needle(Uniform(background.vocab_size), background, needles=(2, 4), lengths=(160,),
                             depths=(0.5,), samples=4, seed=0, batch_size=3)
    assert [r["accuracy_pct"] for r in report["rows"]] == pytest.approx([50.0, 25.0])


def test_choice_credit_splits_ties():
    assert choice_credit([-1.0, -2.0, -3.0], 0) == 1.0 and choice_credit([-1.0, -2.0], 1) == 0.0
    assert choice_credit([-1.0, -1.0, -5.0], 1) == 0.5 and choice_credit([-1.0, -1.0, -5.0], 2) == 0.0


@pytest.mark.parametrize("overrides, match", [
    (dict(lengths=(600,)), "^lengths: got 600, longer than the model's max_seq_len=512"),
    (dict(lengths=(40,)), "^lengths: 40 tokens cannot hold 2 needles"),
    (dict(depths=(0.5, 1.5)), "^depths"),
    (dict(depths=(0.5, 0.5)), "^depths"),
    (dict(needles=(0,)), "^needles"),
    (dict(needles=(100,)), "^needles"),
    (dict(samples=0), "^samples"),
])
def test_bad_settings_are_errors_naming_the_argument(background, overrides, match):
    settings = dict(needles=(2,), lengths=(160,), depths=(0.5,), samples=2, max_seq_len=512)
    with pytest.raises(ValueError, match=match):
        evaluate_needle(Uniform(background.vocab_size), background, **{**settings, **overrides})


def test_cli_on_a_tiny_checkpoint(tmp_path, corpus, capsys):
    torch.manual_seed(0)
    config = get_preset("tiny-transformer", vocab_size=600, dim=32, n_layers=1, max_seq_len=192)
    save_checkpoint(DecoderLM(config), tmp_path / "model")
    out = tmp_path / "needle.json"
    assert main(["eval", "needle", "--checkpoint", str(tmp_path / "model"), "--data", str(corpus), "--needles", "2",
                 "--depths", "0", "1", "--samples", "2", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.read_text())
    assert report["settings"]["lengths"] == [96, 192]  # half and all of max_seq_len (no training run)
    assert [(r["length"], r["depth"]) for r in report["rows"]] == [(96, 0.0), (96, 1.0), (192, 0.0), (192, 1.0)]
    assert all(0 <= r["accuracy_pct"] <= 100 and r["samples"] == 2 for r in report["rows"])
    assert report["model"]["attention"] == "transformer" and report["environment"]["commit"]
    assert (tmp_path / "needle.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(SystemExit):
        main(["eval", "needle", "--checkpoint", str(tmp_path / "model"), "--data", str(corpus), "--lengths", "400",
              "--device", "cpu"])
    assert "lengths: got 400, longer than the model's max_seq_len=192" in capsys.readouterr().err
