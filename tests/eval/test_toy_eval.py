"""Toy-task evaluation: the sequence layout, the loss mask and the error metrics (docs/spec.md §5)."""

import pytest
import torch
from torch import nn

from mta.data import toy
from mta.eval.toy import IGNORE_INDEX, encode_batch, error_by_reach, evaluate_toy
from mta.models import DecoderLM, get_preset

SAMPLES = [
    {"src": "abc.def#ab", "tgt": "abc"},
    {"src": "xyz.uvw#wu", "tgt": "uvw"},
    {"src": "a.b#b", "tgt": "b"},  # shorter: padded
    {"src": "qrs.tuv.wxy#yw", "tgt": "wxy"},
]


def test_encode_batch_layout():
    inputs, targets = encode_batch([{"src": "ab.c#a", "tgt": "ab"}, {"src": "a#a", "tgt": "a"}])
    ids = toy.encode
    assert inputs.tolist() == [
        [toy.BOS_ID, *ids("ab.c#a"), *ids("ab")],
        [toy.BOS_ID, *ids("a#a"), *ids("a"), toy.PAD_ID, toy.PAD_ID, toy.PAD_ID, toy.PAD_ID],
    ]
    x = IGNORE_INDEX
    assert targets.tolist() == [
        [x, x, x, x, x, x, *ids("ab"), toy.EOS_ID],
        [x, x, x, *ids("a"), toy.EOS_ID, x, x, x, x],
    ]


def test_encode_batch_names_the_bad_sample():
    with pytest.raises(ValueError, match="sample 1: .*'A'"):
        encode_batch([{"src": "a#a", "tgt": "a"}, {"src": "A#a", "tgt": "a"}])


class ScriptedModel(nn.Module):
    """Predicts, for each input row it was built with, the true next tokens except at chosen positions.

    wrong: {(sample index, target index): predicted id}, target index len(tgt) meaning EOS.
    """

    def __init__(self, samples, wrong):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the model a device
        self.answers = {}
        for index, sample in enumerate(samples):
            inputs, targets = encode_batch([sample])
            logits = torch.zeros(inputs.shape[1], toy.VOCAB_SIZE)
            for pos, target in enumerate(targets[0].tolist()):
                logits[pos, toy.PAD_ID if target == IGNORE_INDEX else target] = 1.0
            for (i, k), token in wrong.items():
                if i == index:
                    logits[len(sample["src"]) + k] = 0.0
                    logits[len(sample["src"]) + k, token] = 1.0
            self.answers[tuple(inputs[0].tolist())] = logits

    def forward(self, tokens):
        rows = []
        for row in tokens.tolist():
            while tuple(row) not in self.answers:  # strip the batch's padding
                row = row[:-1]
            logits = self.answers[tuple(row)]
            rows.append(torch.cat([logits, torch.zeros(tokens.shape[1] - len(row), toy.VOCAB_SIZE)]))
        return torch.stack(rows)


TARGET_LETTERS = sum(len(s["tgt"]) for s in SAMPLES)  # 10


@pytest.mark.parametrize("batch_size", [1, 3, 64])
@pytest.mark.parametrize(
    "wrong,sequence_pct,token_pct,position_pct",
    [  # the targets have 4, 3 and 3 characters at positions 0, 1 and 2
        ({}, 0.0, 0.0, [0.0, 0.0, 0.0]),
        ({(1, 2): toy.encode("a")[0]}, 25.0, 100 / TARGET_LETTERS, [0.0, 0.0, 100 / 3]),
        ({(0, 0): toy.EOS_ID, (0, 1): toy.PAD_ID, (2, 0): toy.encode("a")[0]}, 50.0, 300 / TARGET_LETTERS,
         [50.0, 100 / 3, 0.0]),
        ({(3, 3): toy.PAD_ID}, 0.0, 0.0, [0.0, 0.0, 0.0]),  # a wrong EOS is not scored (the paper scores letters)
    ],
)
def test_errors_of_a_scripted_model(wrong, sequence_pct, token_pct, position_pct, batch_size):
    result = evaluate_toy(ScriptedModel(SAMPLES, wrong), SAMPLES, batch_size=batch_size)
    by_reach = result.pop("sequence_error_pct_by_reach")
    assert result == {"samples": 4, "sequence_error_pct": sequence_pct, "token_error_pct": pytest.approx(token_pct),
                      "position_error_pct": pytest.approx(position_pct)}
    assert sum(row["samples"] for row in by_reach) == 4  # every sample of SAMPLES has a reach
    assert sum(row["samples"] * row["sequence_error_pct"] for row in by_reach) / 4 == pytest.approx(sequence_pct)


def test_error_by_reach_of_a_scripted_model():
    # Reaches: 1 ("ab" from "a"), 2 ("wu" from "u"), 0 ("b" from "b"), 2 ("yw" from "w").
    result = evaluate_toy(ScriptedModel(SAMPLES, {(1, 0): toy.encode("a")[0]}), SAMPLES)
    assert result["sequence_error_pct_by_reach"] == [
        {"reach": 0, "samples": 1, "sequence_error_pct": 0.0},
        {"reach": 1, "samples": 1, "sequence_error_pct": 0.0},
        {"reach": 2, "samples": 2, "sequence_error_pct": 50.0},
    ]


def test_error_by_reach_leaves_out_samples_without_one():
    samples = [{"src": "ab.ba#ab", "tgt": "ab"}, {"src": "ab.cd#cd", "tgt": "cd"}]  # the first: two blocks match
    assert error_by_reach(samples, [True, True]) == [{"reach": 1, "samples": 1, "sequence_error_pct": 100.0}]
    with pytest.raises(ValueError):
        error_by_reach(samples, [True])


def test_padding_does_not_change_a_real_model():
    torch.manual_seed(0)
    model = DecoderLM(get_preset("toy-mta", dim=32, n_layers=1)).train()
    one = evaluate_toy(model, SAMPLES, batch_size=1)
    assert evaluate_toy(model, SAMPLES, batch_size=4) == one
    assert model.training  # restored


def test_no_samples():
    model = DecoderLM(get_preset("toy-transformer", dim=32, n_layers=1))
    assert evaluate_toy(model, []) == {"samples": 0, "sequence_error_pct": 0.0, "token_error_pct": 0.0,
                                       "position_error_pct": [], "sequence_error_pct_by_reach": []}
