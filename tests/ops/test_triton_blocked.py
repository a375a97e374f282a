"""Wide head mixing through map blocks (mta.ops.triton.blocked, maps) against the float64 reference: every
option, several blocks with their halo rows, grouped-query heads, float16, forward and every gradient; the head-mix
kernels against head_mix. Without a GPU the kernels run under TRITON_INTERPRET=1 (set here before triton is
imported), tiny shapes."""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

import mta.ops.triton.blocked as blocked  # noqa: E402
from mta.ops.reference import causal_future, head_mix  # noqa: E402
from mta.ops.triton import triton_attention  # noqa: E402
from mta.ops.triton.maps import mix_maps, mix_maps_backward  # noqa: E402
import op_cases  # noqa: E402
from op_cases import OPTION_NAMES, make_inputs  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
HEADS = 8  # mixing all 8 heads: wider than the banded kernels take


def build_options(enabled, **kwargs):
    """Random non-identity float32 kernels (pre 3×3, post 2×3) and mixers over all HEADS heads."""
    settings = {"heads": HEADS, "pre": (3, 3), "post": (2, 3), "groups": (1, 1), **kwargs}
    return op_cases.build_options(enabled, **settings, dtype=torch.float32, device=DEVICE)


def inputs(dtype=torch.float32, **shape):
    shape = {"heads": HEADS, **shape}
    return [t.detach().to(DEVICE).requires_grad_() for t in make_inputs(dtype=dtype, **shape)]


def compare_with_reference(q, k, v, options, tol, block_rows, in_norm=False):
    def run(q, k, v, options, scale):
        return blocked.blocked_maps_attention(q, k, v, **options, scale=scale, block_rows=block_rows)

    op_cases.assert_matches_reference(run, q, k, v, options, tol, in_norm=in_norm)


@pytest.mark.parametrize("enabled", op_cases.OPTION_COMBINATIONS, ids=op_cases.combination_id)
def test_every_option_combination(enabled):
    # 4-row blocks: the 3 halo rows of the two convolutions reach into the block before
    q, k, v = inputs(batch=1, seq_len=11)
    compare_with_reference(q, k, v, build_options(enabled), tol=1e-4, block_rows=4)


@pytest.mark.parametrize("block_rows", [1, 64])
def test_block_sizes_grouped_query_heads_two_batches(block_rows):
    q, k, v = inputs(batch=2, kv_heads=2, seq_len=7)
    options = build_options(OPTION_NAMES, pre=(4, 3), groups=(2, 1))  # groups of 4 heads before, all 8 after
    compare_with_reference(q, k, v, options, tol=1e-4, block_rows=block_rows)


def test_float16():
    q, k, v = inputs(dtype=torch.float16, batch=1, seq_len=17)
    compare_with_reference(q, k, v, build_options(OPTION_NAMES), tol=2e-2, block_rows=6)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="half-precision GEMMs with float32 output need a GPU")
@pytest.mark.parametrize("enabled", [OPTION_NAMES, ("head_mix_pre", "head_mix_post")], ids=["paper-layer", "talking-heads"])
def test_bfloat16_on_gpu(enabled):
    q, k, v = inputs(dtype=torch.bfloat16, batch=2, heads=16, seq_len=300, head_dim=64)
    options = build_options(enabled, heads=16, pre=(6, 11), post=(6, 11))
    compare_with_reference(q, k, v, options, tol=3e-2, block_rows=128, in_norm=True)


def test_triton_backend_routes_only_wide_mixing_to_map_blocks(monkeypatch):
    calls = []
    original = blocked.blocked_maps_attention
    monkeypatch.setattr(blocked, "blocked_maps_attention", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    q, k, v = inputs(batch=1, seq_len=5)
    for groups, routed in (((2, 4), 0), ((1, 4), 1), ((4, 1), 1)):
        options = build_options(("head_mix_pre", "head_mix_post"), groups=groups)
        triton_attention(q, k, v, **options, scale=1.0, dropout_p=0.0)
        assert len(calls) == routed, groups
        calls.clear()


def test_default_block_rows_bounds_the_map_block():
    assert blocked.default_block_rows(2, 16, 8192) == blocked.BLOCK_ELEMENTS // (2 * 16 * 8192)
    assert blocked.default_block_rows(1, 1, 10) == 10  # never more rows than tokens
    assert blocked.default_block_rows(8, 64, 1 << 20) == blocked.MIN_BLOCK_ROWS
    with pytest.raises(ValueError, match="block_rows must be >= 1"):
        blocked.blocked_maps_attention(*inputs(seq_len=3), scale=1.0, block_rows=0)


@pytest.mark.parametrize("heads,size,precision", [(4, 2, "ieee"), (6, 3, "ieee"), (16, 16, "ieee"),
                                                   (16, 16, "tf32x3")])
def test_mix_maps_matches_head_mix(heads, size, precision):
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(2, heads, 5, 37, generator=gen).to(DEVICE).requires_grad_()
    mixer = torch.randn(heads // size, size, size, generator=gen).to(DEVICE).requires_grad_()
    row_start = 3  # rows are queries 3 … 7, so keys 4 … 36 are future for row 0
    future = causal_future(5, 37, row_start, maps.device)
    want = head_mix(maps, mixer)
    got = mix_maps(maps.detach(), mixer.detach(), row_start, fill=float("-inf"), precision=precision)
    torch.testing.assert_close(got, want.detach().masked_fill(future, float("-inf")))
    torch.testing.assert_close(mix_maps(maps.detach(), mixer.detach(), precision=precision), want.detach())
    cotangent = torch.randn(want.shape, generator=gen).to(DEVICE)
    want_maps, want_mixer = torch.autograd.grad(want, [maps, mixer], cotangent)
    got_maps, got_mixer = mix_maps_backward(maps.detach(), cotangent, mixer.detach(), row_start, zero_future=True,
                                            precision=precision)
    torch.testing.assert_close(got_maps, want_maps.masked_fill(future, 0.0))
    torch.testing.assert_close(got_mixer, want_mixer, rtol=1e-5, atol=1e-4)


def test_mix_maps_rejects_mismatched_mixer():
    with pytest.raises(ValueError, match="G·c = H"):
        mix_maps(torch.zeros(1, 4, 2, 2, device=DEVICE), torch.zeros(1, 2, 2, device=DEVICE))
    with pytest.raises(ValueError, match="precision must be one of"):
        mix_maps(torch.zeros(1, 4, 2, 2, device=DEVICE), torch.zeros(2, 2, 2, device=DEVICE), precision="fp16")
