"""The fused wide-head-mixing kernels (mta.ops.triton.mixing) against the float64 reference: forward and every
gradient, pre- and/or post-softmax mixing, grouped-query heads, several groups, odd N, head dims that are not
powers of 2. Without a GPU they run under TRITON_INTERPRET=1 (tiny shapes, float32 and float16)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton")

from mta.ops import mta_attention  # noqa: E402
from mta.ops.triton import function  # noqa: E402
from mta.ops.triton.mixing import MixConfig, fused_mixing_serves, mixed_heads_attention  # noqa: E402
from op_cases import assert_matches_reference, make_inputs, make_mixer  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"


@pytest.fixture(autouse=True)
def nan_outputs(monkeypatch):
    """Every buffer a kernel should fill starts as NaN, so an unwritten element fails the comparison."""
    monkeypatch.setattr(function, "empty_output",
                        lambda shape, dtype, device: torch.full(shape, float("nan"), dtype=dtype, device=device))


def check(pre=True, post=True, batch=1, heads=16, kv_heads=None, groups=1, seq_len=19, head_dim=8, value_dim=None,
          dtype=torch.float32, tol=1e-4, config=MixConfig()):
    q, k, v = (t.detach().to(DEVICE, dtype).requires_grad_()
               for t in make_inputs(batch=batch, heads=heads, kv_heads=kv_heads, seq_len=seq_len, head_dim=head_dim))
    if value_dim is not None:
        v = torch.randn(*v.shape[:3], value_dim, dtype=dtype, device=DEVICE, requires_grad=True)
    options = {}
    for name, enabled, seed in (("head_mix_pre", pre, 3), ("head_mix_post", post, 4)):
        if enabled:
            options[name] = make_mixer(groups, heads // groups, dtype=torch.float32, seed=seed).detach().to(DEVICE)
            options[name].requires_grad_()

    def run(q, k, v, options, scale):
        return mixed_heads_attention(q, k, v, options.get("head_mix_pre"), options.get("head_mix_post"), scale, config)

    assert_matches_reference(run, q, k, v, options, tol)


@pytest.mark.parametrize("pre,post", [(True, True), (True, False), (False, True)], ids=["pre+post", "pre", "post"])
def test_mixing_before_and_after_softmax(pre, post):
    check(pre=pre, post=post, seq_len=37)


def test_grouped_query_heads_two_batches_odd_head_dim():
    check(batch=2, kv_heads=4, seq_len=23, head_dim=12)


def test_two_groups_and_a_wider_value_dim():
    check(heads=32, groups=2, seq_len=17, head_dim=16, value_dim=20)


@pytest.mark.parametrize("seq_len", [1, 16, 33])
def test_sequence_lengths_around_the_tiles(seq_len):
    check(seq_len=seq_len, config=MixConfig(16, 32))


def test_float16():
    check(dtype=torch.float16, seq_len=21, tol=2e-2)


def test_past_outputs_ignore_the_future():
    """Changing, or putting NaN and Inf into, the keys and queries after position t leaves every output before t
    bit-identical (masked scores are selected away, never multiplied by zero)."""
    q, k, v = (t.detach().float().to(DEVICE) for t in make_inputs(batch=1, heads=16, seq_len=29, head_dim=8))
    mixers = [make_mixer(1, 16, dtype=torch.float32, seed=s).detach().to(DEVICE) for s in (3, 4)]
    clean = mixed_heads_attention(q, k, v, *mixers, 0.5)
    for t in (5, 16, 28):
        for poison in (float("nan"), float("inf"), 1e4):
            q2, k2, v2 = q.clone(), k.clone(), v.clone()
            k2[:, :, t:] = poison
            q2[:, :, t:] = poison
            v2[:, :, t:] = torch.randn_like(v2[:, :, t:])
            out = mixed_heads_attention(q2, k2, v2, *mixers, 0.5)
            assert torch.equal(out[:, :, :t], clean[:, :, :t]), (t, poison)


def test_serves_only_wide_power_of_two_groups_without_convolutions():
    wide, narrow = torch.zeros(1, 16, 16), torch.zeros(2, 8, 8)
    kernel = torch.zeros(16, 2, 3)
    assert fused_mixing_serves(None, None, wide, wide)
    assert fused_mixing_serves(None, None, None, wide)
    assert not fused_mixing_serves(None, None, narrow, narrow)
    assert not fused_mixing_serves(kernel, None, wide, wide)
    assert not fused_mixing_serves(None, None, wide, torch.zeros(4, 4, 4))
    assert not fused_mixing_serves(None, None, None, None)


def test_the_triton_backend_routes_talking_heads_here(monkeypatch):
    calls = []
    import mta.ops.triton.mixing as mixing

    original = mixing.mixed_heads_attention
    monkeypatch.setattr(mixing, "mixed_heads_attention", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    q, k, v = (t.detach().float().to(DEVICE) for t in make_inputs(batch=1, heads=16, seq_len=5, head_dim=4))
    mixer = make_mixer(1, 16, dtype=torch.float32).detach().to(DEVICE)
    mta_attention(q, k, v, head_mix_pre=mixer, head_mix_post=mixer, backend="triton")
    assert calls == [1]


def test_not_twice_differentiable():
    q, k, v = (t.detach().float().to(DEVICE).requires_grad_()
               for t in make_inputs(batch=1, heads=16, seq_len=4, head_dim=4))
    mixer = make_mixer(1, 16, dtype=torch.float32).detach().to(DEVICE)
    out = mixed_heads_attention(q, k, v, mixer, mixer, 0.5)
    with pytest.raises(RuntimeError, match="not twice differentiable"):
        torch.autograd.grad(out.sum(), q, create_graph=True)


@pytest.mark.skipif(CUDA, reason="the GPU compiles the kernels in the other tests")
def test_every_launch_compiles_for_hopper_within_its_shared_memory(tmp_path):
    """Without a GPU, each launch of a call (forward, δ, dq, dk, dv) in bf16 compiles for sm_90 with Triton's own
    ptxas, within an H100's shared memory per block: the interpreter cannot catch a kernel that does not lower or
    does not fit. (A subprocess: the kernels compile only with the interpreter off.)"""
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), env.get("PYTHONPATH", "")])
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "compile_report.py"), "--configs",
                           "16,16,16,32,8,1", "--out", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["launch"] for row in rows] == ["forward", "delta", "dq", "dk", "dv"]
