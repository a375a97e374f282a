"""bAbI QA1–QA5 in distractor text (`mta eval babi`): stories are spread in order through one window of held-out
text up to exactly L tokens, seeded; the scoring gives 100% to a model that knows the answers and 0% to one that
knows wrong ones; a length that does not fit is an error (or skipped by default); `mta eval babi` end to end."""

import json

import numpy as np
import pytest
import torch

from lm_oracle import right_and_wrong
from mta.cli import main
from mta.data.babi import TASKS, generate_story
from mta.eval.babi import babi_samples, evaluate_babi
from mta.models import DecoderLM, get_preset
from mta.models.checkpoint import save_checkpoint


def occurs_in(window: np.ndarray, tokens: np.ndarray) -> bool:
    views = np.lib.stride_tricks.sliding_window_view(tokens, len(window))
    return bool((views == window).all(axis=1).any())


@pytest.mark.parametrize("task", ["qa2", "qa5"])
def test_story_is_spread_in_order_through_held_out_text_up_to_the_length(background, task):
    plain = babi_samples(background, task, 0, 3, seed=4)
    spread = babi_samples(background, task, 240, 3, seed=4)
    for index, (bare, sample) in enumerate(zip(plain, spread)):
        story = generate_story(task, 4, index)
        sentences = [background.encode(" " + s) for s in story.sentences]
        question = background.encode(f"\n{story.question} {story.cue}")
        assert bare.prompt.tolist() == [t for s in sentences for t in s] + question and bare.distractor_tokens == 0
        assert sample.max_length() == 240  # prompt + longest candidate: exactly the context length
        assert len(sample.prompt) == sample.distractor_tokens + sum(map(len, sentences)) + len(question)
        assert sample.sentence_starts == sorted(sample.sentence_starts)
        kept, previous = [], 0
        for start, tokens in zip(sample.sentence_starts, sentences):
            assert sample.prompt[start:start + len(tokens)].tolist() == tokens
            kept += sample.prompt[previous:start].tolist()
            previous = start + len(tokens)
        distractor = np.array(kept + sample.prompt[previous:len(sample.prompt) - len(question)].tolist())
        assert len(distractor) == sample.distractor_tokens > 100 and occurs_in(distractor, background.tokens)
        assert sample.prompt[-len(question):].tolist() == question
        assert [background.tokenizer.decode(c).strip() for c in sample.candidates] == list(story.candidates)
        assert sample.answer == bare.answer == story.candidates.index(story.answer)


def test_samples_are_deterministic_by_seed(background):
    def key(samples):
        return [(s.prompt.tolist(), s.answer) for s in samples]

    first = babi_samples(background, "qa3", 200, 4, seed=0)
    assert key(first) == key(babi_samples(background, "qa3", 200, 4, seed=0))
    assert key(first)[:2] == key(babi_samples(background, "qa3", 200, 2, seed=0))
    assert key(first) != key(babi_samples(background, "qa3", 200, 4, seed=1))


def test_a_model_that_knows_the_answers_scores_100_and_a_wrong_one_0(background):
    lengths = (0, 200)
    samples = [s for task in TASKS for n in lengths for s in babi_samples(background, task, n, 3, seed=1)]
    right, wrong = right_and_wrong(samples, background.vocab_size)
    for model, expected in ((right, 100.0), (wrong, 0.0)):
        report = evaluate_babi(model, background, TASKS, lengths, samples=3, seed=1, batch_size=4, generate=True)
        assert [(r["task"], r["length"]) for r in report["rows"]] == [(t, n) for n in lengths for t in TASKS]
        assert {r["accuracy_pct"] for r in report["rows"]} == {expected}
        assert {r["exact_match_pct"] for r in report["rows"]} == {expected}
        assert set(report["by_task"].values()) == set(report["by_length"].values()) == {expected}
    chance = {r["task"]: r["chance_pct"] for r in report["rows"]}
    assert chance["qa1"] == pytest.approx(100 / 6) and 25 <= chance["qa5"] <= 100 / 3


def test_lengths_that_do_not_fit_are_errors_or_skipped(background):
    right, _ = right_and_wrong(babi_samples(background, "qa1", 0, 2, seed=0), background.vocab_size)
    with pytest.raises(ValueError, match="^lengths: 400 tokens are more than the model's max_seq_len=256"):
        evaluate_babi(right, background, ("qa1",), (0, 400), samples=2, max_seq_len=256)
    with pytest.raises(ValueError, match=r"^lengths: 20 tokens cannot hold the longest story \(\d+ tokens\)"):
        evaluate_babi(right, background, ("qa1",), (20,), samples=2)
    report = evaluate_babi(right, background, ("qa1",), (0, 20, 400), samples=2, max_seq_len=256, skip_too_long=True)
    assert report["settings"]["lengths"] == [0] and [s["length"] for s in report["skipped"]] == [20, 400]
    with pytest.raises(ValueError, match="^lengths: none of"):
        evaluate_babi(right, background, ("qa1",), (400,), samples=2, max_seq_len=256, skip_too_long=True)
    with pytest.raises(ValueError, match="^tasks"):
        evaluate_babi(right, background, ("qa9",), (0,), samples=2)
    with pytest.raises(ValueError, match="^lengths: 20 tokens cannot hold story 0 of qa3"):
        babi_samples(background, "qa3", 20, 2, seed=0)
    with pytest.raises(ValueError, match="^lengths"):
        babi_samples(background, "qa1", -5, 2, seed=0)


def test_cli_on_a_tiny_checkpoint(tmp_path, corpus, capsys):
    torch.manual_seed(0)
    config = get_preset("tiny-mta", vocab_size=600, dim=32, n_layers=1, max_seq_len=1024, qk_conv_layers=[0])
    save_checkpoint(DecoderLM(config), tmp_path / "model")
    out = tmp_path / "babi.json"
    assert main(["eval", "babi", "--checkpoint", str(tmp_path / "model"), "--data", str(corpus), "--tasks", "qa1",
                 "qa4", "--samples", "2", "--device", "cpu", "--out", str(out), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(out.read_text())
    # By default the lengths of 0/1024/2048/4096 that fit: 0 and 1024 in 1024 tokens.
    assert report["settings"]["lengths"] == [0, 1024] and [s["length"] for s in report["skipped"]] == [2048, 4096]
    assert [(r["task"], r["length"]) for r in report["rows"]] == [("qa1", 0), ("qa4", 0), ("qa1", 1024),
                                                                  ("qa4", 1024)]
    assert report["model"]["attention"] == "mta" and report["precision"] == "fp32"
    assert (tmp_path / "babi.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        main(["eval", "babi", "--checkpoint", str(tmp_path / "model"), "--data", str(corpus), "--lengths", "2048",
              "--device", "cpu"])
    assert "lengths: 2048 tokens are more than the model's max_seq_len=1024" in capsys.readouterr().err
