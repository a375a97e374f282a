"""The Triton backend end to end against the float64 reference: every option, odd shapes, forward and every
gradient. Without a GPU it runs under TRITON_INTERPRET=1 (set here before triton is imported), tiny shapes."""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from mta.ops.triton import triton_attention  # noqa: E402
from mta.ops.triton.function import BlockConfig  # noqa: E402
import op_cases  # noqa: E402
from op_cases import OPTION_NAMES, make_inputs  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
# small tiles so that tiles and column chunks have tails (one config: no autotuning per test shape on a GPU)
CONFIG = BlockConfig(16, 16, 16, 32)


def build_options(enabled, **kwargs):
    """Random non-identity float32 kernels/mixers on the test device (post kernel 2×3 unless given)."""
    return op_cases.build_options(enabled, **{"post": (2, 3), **kwargs}, dtype=torch.float32, device=DEVICE)


def compare_with_reference(q, k, v, options, tol, in_norm=False):
    """Triton output and gradients against the float64 reference on the same (rounded) inputs."""
    def run(q, k, v, options, scale):
        return triton_attention(q, k, v, **options, scale=scale, dropout_p=0.0, config=CONFIG)

    op_cases.assert_matches_reference(run, q, k, v, options, tol, in_norm=in_norm)


def inputs(dtype=torch.float32, **shape):
    return [t.detach().to(DEVICE).requires_grad_() for t in make_inputs(dtype=dtype, **shape)]


@pytest.mark.parametrize("enabled", op_cases.OPTION_COMBINATIONS, ids=op_cases.combination_id)
def test_every_option_combination(enabled):
    q, k, v = inputs(batch=1, seq_len=19)
    compare_with_reference(q, k, v, build_options(enabled), tol=1e-4)


@pytest.mark.parametrize(
    "seq_len,pre,post,groups",
    [
        (1, (3, 5), (2, 3), (2, 1)),    # a single token
        (21, (1, 5), (1, 3), (1, 2)),   # c_q = 1, full pre mixing
        (21, (3, 1), (2, 1), (4, 4)),   # c_k = 1, groups of one head
        pytest.param(18, (6, 11), (6, 11), (2, 2), marks=pytest.mark.slow, id="paper-kernel"),  # ~10 s interpreted
    ],
)
def test_shapes(seq_len, pre, post, groups):
    q, k, v = inputs(batch=1, seq_len=seq_len)
    compare_with_reference(q, k, v, build_options(OPTION_NAMES, pre=pre, post=post, groups=groups), tol=1e-4)


@pytest.mark.slow
def test_head_dim_96_with_the_largest_kernels():
    """d = 96 (not a power of 2: the kernels' feature tiles have tails) and the largest kernels the backend must
    serve, 8×15 before and after softmax, with mixing in pairs."""
    q, k, v = inputs(batch=1, heads=2, seq_len=17, head_dim=96)
    options = build_options(OPTION_NAMES, heads=2, pre=(8, 15), post=(8, 15), groups=(1, 1))
    compare_with_reference(q, k, v, options, tol=1e-4)


def test_grouped_query_heads_two_batches():
    q, k, v = inputs(batch=2, heads=4, kv_heads=2, seq_len=11)
    compare_with_reference(q, k, v, build_options(OPTION_NAMES), tol=1e-4)


def test_float16():
    q, k, v = inputs(dtype=torch.float16, batch=1, seq_len=23)
    compare_with_reference(q, k, v, build_options(OPTION_NAMES), tol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="bfloat16 tl.dot needs a GPU")
def test_bfloat16_on_gpu():
    q, k, v = inputs(dtype=torch.bfloat16, batch=2, seq_len=300, head_dim=64)
    compare_with_reference(q, k, v, build_options(OPTION_NAMES, pre=(6, 11), post=(6, 11)), tol=3e-2, in_norm=True)


def test_rejects_dropout_and_float64():
    q, k, v = inputs(seq_len=4)
    with pytest.raises(ValueError, match="dropout_p"):
        triton_attention(q, k, v, scale=1.0, dropout_p=0.1)
    with pytest.raises(ValueError, match="float64"):
        triton_attention(q.double(), k.double(), v.double(), scale=1.0, dropout_p=0.0)
