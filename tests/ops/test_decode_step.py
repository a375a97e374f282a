"""mta_attention_step (incremental decoding, docs/spec.md §6) against the full reference map: every option, every
position, steps of several sizes, grouped-query heads, c_q = 1, c_k = 1, kernels taller than the sequence so far,
and left padding (a padded row computes what its tokens compute unpadded)."""

import pytest
import torch

from mta.ops.decode import mta_attention_step, query_key_conv_rows
from mta.ops.reference import qk_conv, reference_attention
from op_cases import OPTION_COMBINATIONS, OPTION_NAMES, build_options, combination_id, decode, make_inputs

STEPS = (4, 1, 1, 3, 1, 1, 1, 1, 2)  # 15 positions: a prompt, single tokens and a few multi-token steps



def reference(q, k, v, options):
    return reference_attention(q, k, v, **options, scale=q.shape[-1] ** -0.5, dropout_p=0.0)


@pytest.mark.parametrize("enabled", OPTION_COMBINATIONS, ids=combination_id)
def test_every_option_every_position(enabled):
    q, k, v = (t.detach() for t in make_inputs(seq_len=sum(STEPS)))
    options = {name: t.detach() for name, t in build_options(enabled).items()}
    torch.testing.assert_close(decode(q, k, v, options, STEPS), reference(q, k, v, options), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "heads,kv_heads,pre,post,groups",
    [
        (4, 2, (3, 5), (4, 3), (2, 1)),   # grouped-query heads
        (4, 1, (2, 3), (2, 3), (1, 4)),   # one kv head; mixing groups of one head
        (4, 4, (1, 5), (1, 3), (2, 2)),   # c_q = 1: nothing cached but keys and values
        (4, 4, (3, 1), (2, 1), (4, 1)),   # c_k = 1
        (4, 4, (9, 3), (7, 5), (1, 1)),   # kernels taller than the first steps: rows before position 0
    ],
)
def test_shapes(heads, kv_heads, pre, post, groups):
    q, k, v = (t.detach() for t in make_inputs(heads=heads, kv_heads=kv_heads, seq_len=sum(STEPS)))
    options = {n: t.detach() for n, t in build_options(OPTION_NAMES, heads, pre, post, groups).items()}
    torch.testing.assert_close(decode(q, k, v, options, STEPS), reference(q, k, v, options), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows,c_q,c_k", [(1, 6, 11), (3, 6, 11), (4, 1, 5), (2, 3, 1), (5, 2, 15)])
def test_query_key_conv_rows_equal_the_last_rows_of_the_conv(rows, c_q, c_k):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, rows + c_q - 1, 9, generator=gen, dtype=torch.float64)
    kernel = torch.randn(3, c_q, c_k, generator=gen, dtype=torch.float64)
    expected = qk_conv(x, kernel)[:, :, c_q - 1 :]
    torch.testing.assert_close(query_key_conv_rows(x, kernel), expected, rtol=1e-12, atol=1e-12)


def test_one_step_for_the_whole_sequence_is_the_full_map():
    q, k, v = (t.detach() for t in make_inputs(seq_len=11))
    options = {n: t.detach() for n, t in build_options(OPTION_NAMES).items()}
    torch.testing.assert_close(decode(q, k, v, options, (11,)), reference(q, k, v, options), rtol=1e-12, atol=1e-12)


def test_float32_inputs_keep_their_dtype():
    q, k, v = (t.detach().float() for t in make_inputs(seq_len=9))
    options = {n: t.detach() for n, t in build_options(OPTION_NAMES, dtype=torch.float32).items()}
    out = decode(q, k, v, options, (5, 1, 1, 1, 1))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference(q, k, v, options), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("enabled", [(), OPTION_NAMES], ids=combination_id)
def test_left_padding_computes_the_unpadded_rows(enabled):
    length, pads = sum(STEPS), (0, 4, 6)
    q, k, v = (t.detach() for t in make_inputs(batch=3, seq_len=length))
    options = {n: t.detach() for n, t in build_options(enabled).items()}
    start = torch.tensor(pads)
    out = decode(q, k, v, options, STEPS, start=start)
    for row, pad in enumerate(pads):
        alone = [t[row : row + 1, :, pad:] for t in (q, k, v)]  # the same tokens without the padding
        torch.testing.assert_close(out[row : row + 1, :, pad:], reference(*alone, options), rtol=1e-12, atol=1e-12)
        assert torch.equal(out[row, :, :pad], torch.zeros_like(out[row, :, :pad]))  # padding rows attend nowhere


def test_missing_or_misshapen_cache_is_named():
    q, k, v = (t.detach() for t in make_inputs(seq_len=6))
    options = {n: t.detach() for n, t in build_options(OPTION_NAMES).items()}  # pre (3, 5), post (4, 3)
    with pytest.raises(ValueError, match="^q_past: needed for the 5 positions"):
        mta_attention_step(q[:, :, 5:], k, v, **options)
    with pytest.raises(ValueError, match=r"^weights_past: expected shape \(2, 4, 3, 5\)"):
        mta_attention_step(q[:, :, 5:], k, v, q_past=q[:, :, 3:5], weights_past=torch.zeros(2, 4, 3, 4), **options)
    with pytest.raises(ValueError, match="^q_past: given, but no kernel"):
        mta_attention_step(q[:, :, 5:], k, v, q_past=q[:, :, 3:5])
    with pytest.raises(ValueError, match="^start: expected an integer tensor of shape"):
        mta_attention_step(q, k, v, start=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="^k: expected"):
        mta_attention_step(q, k[:, :, :3], v[:, :, :3])
    with pytest.raises(ValueError, match=r"^q: expected at least one head and a head dim d >= 1, got \(2, 4, 6, 0\)"):
        mta_attention_step(q[..., :0], k[..., :0], v)
    with pytest.raises(ValueError, match="^kernel_pre"):
        mta_attention_step(q, k, v, kernel_pre=torch.zeros(4, 2, 2, dtype=q.dtype))
