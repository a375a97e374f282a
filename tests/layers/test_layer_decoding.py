"""Every attention kind with left padding and an AttentionState cache (docs/spec.md §6): a padded row computes what its
tokens compute alone, and prefill + steps of one or more tokens compute the layer's full-sequence output."""

import pytest
import torch

from mta.layers import ATTENTION_KINDS, AttentionConfig, AttentionState, build_attention

DIM, SEQ, PROMPT = 32, 13, 5
MTA = dict(pre_kernel=(3, 5), post_kernel=(4, 3), pre_mix_group=2, post_mix_group=4, group_norm=True,
           depth_scaling=True, gate=True)
CASES = {
    "transformer": ("transformer", {}),
    "diff": ("diff", {}),
    "talking_heads": ("talking_heads", {}),
    "mta": ("mta", MTA),
    "mta-tall-kernels": ("mta", dict(pre_kernel=(7, 3), post_kernel=(6, 5))),  # taller than the prompt's pads
    "mta-cq1": ("mta", dict(pre_kernel=(1, 5), post_kernel=(1, 3), pre_mix_group=4)),
}


def make_layer(case):
    kind, options = CASES[case]
    torch.manual_seed(0)
    layer = build_attention(kind, AttentionConfig(dim=DIM, n_heads=4, n_kv_heads=2, layer_index=1, **options))
    layer = layer.double().eval()
    with torch.no_grad():  # away from identity, so the convolutions and mixers really mix positions and heads
        for name, param in layer.named_parameters():
            if name.startswith(("kernel", "head_mix")):
                param.add_(torch.randn_like(param) * 0.5)
    return layer


def decode(layer, x, steps, start=None):
    state, outs, done = AttentionState(), [], 0
    for size in steps:
        outs.append(layer(x[:, done : done + size], start=start, state=state))
        done += size
    assert state.length == x.shape[1]
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("case", list(CASES))
def test_cached_decoding_equals_the_full_sequence(case):
    layer = make_layer(case)
    x = torch.randn(2, SEQ, DIM, dtype=torch.float64)
    steps = (PROMPT, 1, 1, 3, 1, 2)
    torch.testing.assert_close(decode(layer, x, steps), layer(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_left_padding_equals_each_row_alone_with_and_without_cache(case):
    layer = make_layer(case)
    pads = (0, 3, 4)  # row 2's prompt is one token: every conv row above it is padding
    x = torch.randn(len(pads), SEQ, DIM, dtype=torch.float64)
    start = torch.tensor(pads)
    full = layer(x, start=start)
    cached = decode(layer, x, (PROMPT, 1, 1, 3, 1, 2), start=start)
    for row, pad in enumerate(pads):
        alone = layer(x[row : row + 1, pad:])
        torch.testing.assert_close(full[row : row + 1, pad:], alone, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(cached[row : row + 1, pad:], alone, rtol=1e-12, atol=1e-12)
        assert torch.equal(full[row, :pad], torch.zeros_like(full[row, :pad]))


def test_every_kind_is_covered():
    assert {kind for kind, _ in CASES.values()} == set(ATTENTION_KINDS)


def test_position_offset_is_refused_with_a_state():
    layer = make_layer("mta")
    with pytest.raises(ValueError, match="^position_offset: got 3"):
        layer(torch.randn(1, 4, DIM, dtype=torch.float64), 3, state=AttentionState())


def test_state_select_reorders_rows():
    layer = make_layer("mta")
    x = torch.randn(3, 6, DIM, dtype=torch.float64)
    state = AttentionState()
    layer(x[:, :5], state=state)
    state.select(torch.tensor([2, 0]))
    torch.testing.assert_close(layer(x[[2, 0], 5:], state=state), layer(x[[2, 0]])[:, 5:], rtol=1e-12, atol=1e-12)
