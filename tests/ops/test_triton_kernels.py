"""The Triton banded flash attention against its materialised PyTorch form: out, lse and every gradient.

Without a GPU the kernels run under TRITON_INTERPRET=1 (set here before triton is imported) in float32 and
float16; bfloat16 and the autotuned launch run only on a GPU. Every kernel output starts as NaN, so an
element a kernel fails to write fails the test.
"""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from mta.ops.triton import function  # noqa: E402  (after TRITON_INTERPRET is set)
from mta.ops.triton.function import BlockConfig, banded_flash_attention  # noqa: E402
from mta.ops.triton.primitives import banded_attention_torch  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
TOLERANCE = {torch.float32: 2e-4, torch.float16: 2e-2}
BF16_RELATIVE_RMS = 1e-2


@pytest.fixture(autouse=True)
def nan_outputs(monkeypatch):
    def nan_filled(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(function, "empty_output", nan_filled)


def make_operands(seq_len, dqk, dv, width, dtype, batch=1, heads=1, seed=0, window=(1, 1)):
    """q (of d = dqk / (taps·group) for window = (taps, group)), kw, vw in `dtype` and a float32 band of scores
    (None for width None), all requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    qw = torch.randn(batch, heads, seq_len, dqk // (window[0] * window[1]), generator=gen) * dqk**-0.25
    kw = torch.randn(batch, heads, seq_len, dqk, generator=gen) * dqk**-0.25
    vw = torch.randn(batch, heads, seq_len, dv, generator=gen)
    band = None if width is None else torch.randn(batch, heads, seq_len, width, generator=gen)
    tensors = [x.to(DEVICE, dtype) for x in (qw, kw, vw)] + ([] if band is None else [band.to(DEVICE)])
    return [x.requires_grad_() for x in tensors]


def check_against_torch(operands, config, dtype, window=(1, 1), skip=0):
    """Forward and the gradients of every operand (q, kw, vw, band) for random d_out and d_lse."""
    qw, kw, vw, *rest = operands
    band = rest[0] if rest else None
    out, lse = banded_flash_attention(qw, kw, vw, band, config, *window, skip)
    ref_out, ref_lse = banded_attention_torch(qw, kw, vw, band, *window, skip)
    gen = torch.Generator().manual_seed(1)
    d_out = torch.randn(out.shape, generator=gen).to(DEVICE, out.dtype)
    d_lse = torch.randn(lse.shape, generator=gen).to(DEVICE)
    grads = torch.autograd.grad((out.float() * d_out).sum() + (lse * d_lse).sum(), operands)
    ref_grads = torch.autograd.grad(  # a W = 0 band is unused by the oracle: its gradient is an empty tensor
        (ref_out.float() * d_out).sum() + (ref_lse * d_lse).sum(), operands, allow_unused=True, materialize_grads=True
    )
    assert out.dtype == dtype and lse.dtype == torch.float32
    pairs = [("out", out, ref_out), ("lse", lse, ref_lse.float())]
    pairs += [(f"grad of {name}", got, ref) for name, got, ref in zip(["q", "kw", "vw", "band"], grads, ref_grads)]
    for name, got, ref in pairs:
        if dtype == torch.bfloat16:
            # bf16 operands (8-bit mantissa) of wide products: bound the error relative to the tensor's size, as
            # benchmarks/triton_accuracy.py does; elementwise bounds fail by chance on entries near zero.
            error = (got.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12)
            assert error <= BF16_RELATIVE_RMS, f"{name}: relative RMS error {error:.2e} > {BF16_RELATIVE_RMS}"
        else:
            tol = TOLERANCE[dtype]
            torch.testing.assert_close(got, ref, rtol=tol, atol=tol, msg=lambda m: f"{name}: {m}")


CASES = [
    # seq_len, dqk, dv, width, config
    (1, 16, 16, 3, BlockConfig(16, 16, 16, 16)),    # one token, band wider than the sequence
    (37, 16, 32, None, BlockConfig(16, 16, 16, 16)),  # no band, Dv wider than a chunk: P blocks forward
    (37, 16, 32, None, BlockConfig(16, 16, 16, 16, block=16)),  # ... over three query blocks
    (37, 48, 16, 3, BlockConfig(16, 16, 32, 16)),   # Dqk tail inside a chunk
    (70, 48, 32, 10, BlockConfig(32, 16, 32, 16)),  # query tiles taller than key tiles, band across tiles
    (70, 48, 16, 10, BlockConfig(32, 16, 32, 16, block=24)),  # key blocks cut tiles and the band
    (70, 32, 16, 3, BlockConfig(16, 32, 16, 16)),   # key tiles taller than query tiles
    (45, 16, 48, 0, BlockConfig(16, 16, 16, 16)),   # W = 0 band tensor; more Dv than Dqk chunks
    (29, 24, 8, 5, BlockConfig(16, 16, 16, 16)),    # Dqk and Dv not multiples of 16
    (29, 24, 40, 5, BlockConfig(16, 16, 16, 16, block=8)),  # blocks narrower than a tile, Dv not a multiple
    (21, 16, 16, 1, BlockConfig(16, 16, 16, 16)),   # W = 1 (an integer argument Triton may specialise)
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("seq_len,dqk,dv,width,config", CASES)
def test_matches_torch(seq_len, dqk, dv, width, config, dtype):
    check_against_torch(make_operands(seq_len, dqk, dv, width, dtype), config, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize(
    "seq_len,heads,d,window,config",
    [
        (37, 1, 16, (3, 1), BlockConfig(16, 16, 16, 16)),  # a query window of 3 taps
        (37, 4, 8, (2, 2), BlockConfig(16, 16, 16, 16, block=16)),  # taps and heads of a group, two key blocks
        (5, 2, 16, (6, 1), BlockConfig(16, 16, 32, 16)),  # more taps than half the tokens
        (19, 4, 8, (6, 2), BlockConfig(16, 16, 16, 16, block=4)),  # key blocks shorter than the window
    ],
)
def test_query_window(seq_len, heads, d, window, config, dtype):
    """q enters through qw = query_window(q, taps, group): its gradient is the window's adjoint."""
    dqk = d * window[0] * window[1]
    operands = make_operands(seq_len, dqk, 16, 4, dtype, batch=2, heads=heads, window=window)
    check_against_torch(operands, config, dtype, window)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize(
    "seq_len,dv,width,skip,config",
    [
        (37, 16, 3, 5, BlockConfig(16, 16, 16, 16)),  # fused forward, excluded diagonals wider than the band
        (37, 16, None, 2, BlockConfig(16, 16, 16, 16)),  # exclusion without a band
        (45, 48, 10, 4, BlockConfig(32, 16, 16, 16, block=24)),  # P blocks forward, key blocks cut the diagonals
        (29, 40, 2, 20, BlockConfig(16, 16, 16, 16, block=8)),  # exclusion across several tiles
        (3, 16, 1, 7, BlockConfig(16, 16, 16, 16)),  # exclusion wider than the sequence: out is 0
    ],
)
def test_excluded_diagonals(seq_len, dv, width, skip, config, dtype):
    """out leaves the diagonals i-j < skip out (the softmax keeps them): forward and every gradient."""
    check_against_torch(make_operands(seq_len, 16, dv, width, dtype, heads=2), config, dtype, skip=skip)


@pytest.mark.parametrize("fused", [True, False])
def test_band_and_excluded_diagonals_never_read_their_products(fused):
    """kw read only on the band (replaced) and vw read only on excluded diagonals reach neither out, lse nor any
    gradient, when huge (1e30), nor out and lse when NaN: the kernels select, never add, there. (A NaN cannot be
    kept out of a matrix product's gradient: 0 · NaN is NaN.)"""
    config = BlockConfig(16, 16, 16, 16, block=16)
    clean = make_operands(37, 16, 16 if fused else 32, 4, torch.float32, heads=2)

    def run(key, value, grads=True):
        operands = [x.detach().clone() for x in clean]
        operands[1][:, :, 33] = key  # key 33 of 37: rows 33-36 see it on diagonals 0-3 (the band)
        operands[2][:, :, 34] = value  # value 34: rows 34-36 on diagonals 0-2 (excluded)
        operands = [x.requires_grad_() for x in operands]
        out, lse = banded_flash_attention(*operands, config, 1, 1, 3)
        if not grads:
            return [out, lse]
        cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        return [out, lse, *torch.autograd.grad((out * cotangent).sum() + lse.sum(), operands)]

    want = run(clean[1][:, :, 33].detach(), clean[2][:, :, 34].detach())
    for name, got, expected in zip(["out", "lse", "q", "kw", "vw", "band"], run(1e30, 1e30), want):
        assert torch.equal(got, expected), name
    for name, got, expected in zip(["out", "lse"], run(float("nan"), 0.0, grads=False), want):
        assert torch.equal(got, expected), f"{name} with a NaN key"


def test_float32_queries_half_operands():
    """q in float32 (a leaf other ops share) with float16 kw, vw: rounded for the kernel, gradient in float32."""
    q, kw, vw, band = make_operands(29, 48, 16, 5, torch.float16, heads=2, window=(3, 1))
    q32 = q.detach().float().requires_grad_()
    out, lse = banded_flash_attention(q32, kw, vw, band, BlockConfig(16, 16, 16, 16), 3, 1)
    ref_out, ref_lse = banded_attention_torch(q, kw, vw, band, 3, 1)
    torch.testing.assert_close(out, ref_out, rtol=2e-2, atol=2e-2)
    grad, ref_grad = (torch.autograd.grad(lse.sum(), x)[0] for x, lse in ((q32, lse), (q, ref_lse)))
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad, ref_grad.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="bfloat16 tl.dot and the autotuner need a GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("seq_len,dqk,dv,width", [(1000, 384, 64, 10), (257, 64, 768, 5), (129, 1536, 128, None)])
def test_autotuned_on_gpu(seq_len, dqk, dv, width, dtype):
    check_against_torch(make_operands(seq_len, dqk, dv, width, dtype, batch=2), None, dtype)


def test_lse_gradient_alone():
    qw, kw, vw, band = make_operands(21, 16, 16, 4, torch.float32, heads=2)
    lse = banded_flash_attention(qw, kw, vw, band, BlockConfig(16, 16, 16, 16))[1]
    ref_lse = banded_attention_torch(qw, kw, vw, band)[1]
    grads = torch.autograd.grad(lse.sum(), (qw, kw, vw, band))
    ref_grads = torch.autograd.grad(ref_lse.sum(), (qw, kw, band))
    for got, ref in zip(grads[:2] + grads[3:], ref_grads):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(grads[2], torch.zeros_like(vw))


def test_rejects_mismatched_operands():
    qw, kw, vw = make_operands(8, 16, 16, None, torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        banded_flash_attention(qw, kw.half(), vw)
    with pytest.raises(ValueError, match="band"):
        banded_flash_attention(qw, kw, vw, torch.zeros(1, 2, 7, 3, device=DEVICE))
    with pytest.raises(ValueError, match="taps = 2"):
        banded_flash_attention(qw, kw, vw, taps=2)
    with pytest.raises(ValueError, match="skip"):
        banded_flash_attention(qw, kw, vw, skip=-1)
