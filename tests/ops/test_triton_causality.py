"""Strict causality of the Triton backend and of its PyTorch-primitives path (glue + `TORCH_PRIMITIVES`).

Nothing at or after position t may reach an output before t, nor the gradient of a loss that reads only those
outputs: not a changed key, query or value (the past must stay bit-identical, not merely close), and not a NaN or
an Inf in a later key or query (padding, garbage in a cache slot, an overflow). Without a GPU the kernels run under
TRITON_INTERPRET=1 (set here before triton is imported), tiny shapes, float32 and float16.
"""

import os

import pytest
import torch
from hypothesis import given, settings, strategies as st

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from mta.ops import mta_attention  # noqa: E402
from mta.ops.triton.glue import banded_mta  # noqa: E402
from mta.ops.triton.primitives import TORCH_PRIMITIVES  # noqa: E402
from op_cases import OPTION_NAMES, build_options  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
HEADS, SEQ_LEN, HEAD_DIM = 2, 21, 8
# option sets: (enabled options, pre kernel, post kernel); mixers mix both heads (one group of 2)
CASES = {
    "pre": (("kernel_pre",), (3, 5), (1, 1)),
    "post": (("kernel_post",), (1, 1), (3, 5)),
    "both": (("kernel_pre", "kernel_post"), (2, 5), (3, 3)),
    "both-mixed": (OPTION_NAMES, (3, 3), (2, 5)),
}


def triton_run(q, k, v, options):
    return mta_attention(q, k, v, **options, backend="triton")


def primitives_run(q, k, v, options):
    full = {name: options.get(name) for name in OPTION_NAMES}
    return banded_mta(q, k, v, **full, scale=q.shape[-1] ** -0.5, ops=TORCH_PRIMITIVES)


def setup(case, dtype, seq_len=SEQ_LEN, seed=0):
    """q, k, v [1, HEADS, seq_len, HEAD_DIM] in dtype on the device, and the case's options (float32, or float64
    for float64 inputs)."""
    enabled, pre, post = case
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, HEADS, seq_len, HEAD_DIM, generator=gen).to(DEVICE, dtype) for _ in range(3))
    option_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    options = build_options(enabled, heads=HEADS, pre=pre, post=post, groups=(1, 1), dtype=option_dtype,
                            device=DEVICE)
    return (q, k, v), {name: x.detach() for name, x in options.items()}


def with_future(x, t, seed, scale=30.0):
    """x with its positions >= t replaced by large random values (large, so that any leak shows)."""
    gen = torch.Generator().manual_seed(seed)
    y = x.clone()
    y[:, :, t:] = scale * torch.randn(y[:, :, t:].shape, generator=gen).to(x.device, x.dtype)
    return y


def past_outputs(run, qkv, options, t):
    with torch.no_grad():
        return run(*qkv, options)[:, :, :t]


def past_gradients(run, qkv, options, t):
    """The gradients of q, k, v at positions < t of a loss that reads only the outputs before t."""
    leaves = [x.detach().requires_grad_() for x in qkv]
    past = run(*leaves, options)[:, :, :t].float()
    cotangent = torch.sin(torch.arange(past.numel(), dtype=torch.float32)).reshape(past.shape).to(past.device)
    grads = torch.autograd.grad((past * cotangent).sum(), leaves)
    return [g[:, :, :t] for g in grads]


def assert_identical(got, want, what):
    """got, want: one tensor (outputs) or the list of q, k, v gradients."""
    got, want = (list(x) if isinstance(x, list) else [x] for x in (got, want))
    names = ("q", "k", "v") if len(got) == 3 else ("out",)
    for name, g, w in zip(names, got, want):
        assert torch.isfinite(g).all(), f"{what}: non-finite {name} before the change"
        difference = (g.double() - w.double()).abs().max()
        assert torch.equal(g, w), f"{what}: {name} before the change differs by {difference:.3g}"


def assert_future_changes_leave_past(run, qkv, options, t, gradients):
    """Changing k alone (outputs only), and q, k and v together, at positions >= t leaves the outputs (with
    `gradients`: the gradients of q, k and v) before t bit-identical."""
    check = past_gradients if gradients else past_outputs
    clean = check(run, qkv, options, t)
    changes = {"q, k and v": [0, 1, 2]} if gradients else {"k": [1], "q, k and v": [0, 1, 2]}
    for name, which in changes.items():
        changed = [with_future(x, t, seed=10 + i) if i in which else x for i, x in enumerate(qkv)]
        assert_identical(check(run, changed, options, t), clean, f"{name} changed from t = {t}")


RUNS = {"triton": (triton_run, (torch.float32, torch.float16)), "primitives": (primitives_run, (torch.float64,))}
RUN_CASES = [
    pytest.param(run, dtype, case, id=f"{name}-{str(dtype)[6:]}-{case}")
    for name, (run, dtypes) in RUNS.items() for dtype in dtypes for case in CASES
]


@pytest.mark.parametrize("run,dtype,case", RUN_CASES)
def test_future_inputs_leave_past_outputs(run, dtype, case):
    qkv, options = setup(CASES[case], dtype)
    for t in (1, 6, SEQ_LEN - 2, SEQ_LEN - 1):
        assert_future_changes_leave_past(run, qkv, options, t, gradients=False)


@pytest.mark.parametrize("run,dtype,case", RUN_CASES)
def test_future_inputs_leave_past_gradients(run, dtype, case):
    qkv, options = setup(CASES[case], dtype)
    for t in (4, SEQ_LEN - 1):
        assert_future_changes_leave_past(run, qkv, options, t, gradients=True)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NaN arithmetic in the interpreter's numpy
@pytest.mark.parametrize("run,dtype,case", RUN_CASES)
def test_non_finite_future_leaves_past_outputs(run, dtype, case):
    """A NaN or Inf in a later key or query: earlier outputs stay finite and bit-identical to the clean run's."""
    qkv, options = setup(CASES[case], dtype)
    position = SEQ_LEN - 3
    clean = past_outputs(run, qkv, options, position)
    for which, value in ((1, float("nan")), (1, float("inf")), (1, float("-inf")), (0, float("nan"))):
        poisoned = [x.clone() for x in qkv]
        poisoned[which][:, :, position, 1] = value
        past = past_outputs(run, poisoned, options, position)
        assert_identical(past, clean, f"{value} in {'qk'[which]}[{position}]")


def random_case(draw, dtype):
    enabled = tuple(name for name in OPTION_NAMES if draw(st.booleans()))
    pre = (draw(st.integers(1, 3)), draw(st.sampled_from([1, 3, 5])))
    post = (draw(st.integers(1, 3)), draw(st.sampled_from([1, 3, 5])))
    seq_len = draw(st.integers(1, 24))
    t = draw(st.integers(1, seq_len))
    seed = draw(st.integers(0, 2**16))
    return setup((enabled, pre, post), dtype, seq_len=seq_len, seed=seed), t


@settings(max_examples=6, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([torch.float32, torch.float16]))
def test_random_options_are_causal(data, dtype):
    (qkv, options), t = random_case(data.draw, dtype)
    assert_future_changes_leave_past(triton_run, qkv, options, t, gradients=True)


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_random_options_are_causal_with_primitives(data):
    (qkv, options), t = random_case(data.draw, torch.float64)
    assert_future_changes_leave_past(primitives_run, qkv, options, t, gradients=True)
