"""The reference op against the spec's formula, and the properties of docs/spec.md §1."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from mta.ops import mta_attention
from mta.ops.reference import mix_as_one_product, mix_in_layout, qk_conv, shifted_sum_conv
from op_cases import make_inputs, make_kernel, make_mixer


def spec_loops(q, k, v, kernel_pre, kernel_post, mix_pre, mix_post):
    """Spec §1 with explicit Python loops, one (head, i, j) at a time. Tiny float64 inputs only."""
    _, n_heads, n, d = q.shape

    def conv(x, kernel):
        c_q, c_k = kernel.shape[1:]
        out = torch.zeros_like(x)
        for h, i, j in itertools.product(range(n_heads), range(n), range(n)):
            for a, b in itertools.product(range(c_q), range(c_k)):
                src_i, src_j = i - (c_q - 1) + a, j - (c_k - 1) // 2 + b
                if 0 <= src_i < n and 0 <= src_j < n:
                    out[h, i, j] += kernel[h, a, b] * x[h, src_i, src_j]
        return out

    def mix(x, w):
        groups, size, _ = w.shape
        out = torch.zeros_like(x)
        for g, i, o in itertools.product(range(groups), range(size), range(size)):
            out[g * size + o] += w[g, i, o] * x[g * size + i]
        return out

    future = torch.tensor([[j > i for j in range(n)] for i in range(n)])
    outs = []
    for b in range(q.shape[0]):
        s = torch.stack([q[b, h] @ k[b, h].T for h in range(n_heads)]) / d**0.5
        s = conv(s.masked_fill(future, 0.0), kernel_pre)
        s = mix(s, mix_pre)
        a = torch.stack([torch.softmax(s[h].masked_fill(future, float("-inf")), -1) for h in range(n_heads)])
        a = conv(a, kernel_post).masked_fill(future, 0.0)
        a = mix(a, mix_post)
        outs.append(torch.stack([a[h] @ v[b, h] for h in range(n_heads)]))
    return torch.stack(outs)


def test_reference_matches_spec_loops():
    q, k, v = (t.detach() for t in make_inputs(batch=1, heads=4, seq_len=6, head_dim=3))
    kernel_pre, kernel_post = make_kernel(4, 3, 3).detach(), make_kernel(4, 2, 5, seed=3).detach()
    mix_pre, mix_post = make_mixer(2, 2).detach(), make_mixer(1, 4, seed=4).detach()
    expected = spec_loops(q, k, v, kernel_pre, kernel_post, mix_pre, mix_post)
    got = mta_attention(q, k, v, kernel_pre=kernel_pre, kernel_post=kernel_post,
                        head_mix_pre=mix_pre, head_mix_post=mix_post, backend="reference")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def assert_same_values_and_grads(first, second, inputs, tol=1e-12):
    """first(*inputs) equals second(*inputs), and so do the gradients of every input for a random cotangent."""
    outputs = [f(*inputs) for f in (first, second)]
    cotangent = torch.randn(outputs[0].shape, dtype=outputs[0].dtype)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=tol, atol=tol)
    for got, expected in zip(*(torch.autograd.grad(out, inputs, cotangent) for out in outputs)):
        torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("c_q, c_k", [(1, 1), (2, 9), (6, 11), (3, 1)])
def test_shifted_sum_conv_equals_depthwise_conv(c_q, c_k):
    """qk_conv's form under torch.compile (a sum of shifted maps) against the eager convolution: values and both
    gradients."""
    generator = torch.Generator().manual_seed(c_q * 100 + c_k)
    scores = torch.randn(2, 3, 7, 10, dtype=torch.float64, generator=generator, requires_grad=True)
    kernel = torch.randn(3, c_q, c_k, dtype=torch.float64, generator=generator, requires_grad=True)

    def shifted(scores, kernel):
        return shifted_sum_conv(F.pad(scores, ((c_k - 1) // 2, (c_k - 1) // 2, c_q - 1, 0)), kernel)

    assert_same_values_and_grads(shifted, qk_conv, (scores, kernel))


def test_shifted_sum_conv_under_vmap():
    """The stacked toy trainer runs the op under vmap: the shifted sum there equals it per replica."""
    scores = torch.randn(4, 2, 3, 6, 8, dtype=torch.float64)
    kernels = torch.randn(4, 3, 2, 5, dtype=torch.float64)
    padded = F.pad(scores, (2, 2, 1, 0))
    got = torch.vmap(shifted_sum_conv)(padded, kernels)
    expected = torch.stack([qk_conv(s, k) for s, k in zip(scores, kernels)])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_qk_conv_under_torch_compile_is_the_shifted_sum():
    """Compiled, qk_conv traces the shifted sum (one graph) and computes what the eager convolution computes."""
    scores = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(3, 2, 9, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(qk_conv, backend="aot_eager", fullgraph=True)
    assert_same_values_and_grads(compiled, qk_conv, (scores, kernel))


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_identity_kernels_and_mixers_equal_sdpa(backend):
    q, k, v = (t.detach() for t in make_inputs(seq_len=23))
    identity = torch.zeros(4, 4, 7, dtype=q.dtype)
    identity[:, 3, 3] = 1.0
    eye = torch.eye(2, dtype=q.dtype).repeat(2, 1, 1)
    got = mta_attention(q, k, v, kernel_pre=identity, kernel_post=identity, head_mix_pre=eye,
                        head_mix_post=eye, backend=backend)
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-12, atol=1e-12)


def test_group_mixing_equals_separate_problems():
    q, k, v = (t.detach() for t in make_inputs(heads=4))
    kernel_pre, kernel_post = make_kernel(4, 2, 3).detach(), make_kernel(4, 3, 1).detach()
    mix_pre, mix_post = make_mixer(2, 2).detach(), make_mixer(2, 2, seed=5).detach()
    whole = mta_attention(q, k, v, kernel_pre=kernel_pre, kernel_post=kernel_post,
                          head_mix_pre=mix_pre, head_mix_post=mix_post, backend="reference")
    for g in range(2):
        heads = slice(2 * g, 2 * g + 2)
        part = mta_attention(q[:, heads], k[:, heads], v[:, heads], kernel_pre=kernel_pre[heads],
                             kernel_post=kernel_post[heads], head_mix_pre=mix_pre[g : g + 1],
                             head_mix_post=mix_post[g : g + 1], backend="reference")
        torch.testing.assert_close(whole[:, heads], part, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_causality(backend):
    q, k, v = (t.detach() for t in make_inputs(seq_len=21))
    options = dict(kernel_pre=make_kernel(4, 3, 5).detach(), kernel_post=make_kernel(4, 4, 3).detach(),
                   head_mix_pre=make_mixer(1, 4).detach(), head_mix_post=make_mixer(2, 2).detach())
    base = mta_attention(q, k, v, **options, backend=backend)
    t = 9
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, :, t:] = torch.randn_like(x[:, :, t:]) * 5
    changed = mta_attention(q2, k2, v2, **options, backend=backend)
    torch.testing.assert_close(changed[:, :, :t], base[:, :, :t], rtol=0, atol=0)
    assert not torch.allclose(changed[:, :, t:], base[:, :, t:])


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_nan_input_is_not_hidden(backend):
    q, k, v = (t.detach().clone() for t in make_inputs(seq_len=12))
    q[0, 1, 5, 0] = float("nan")
    out = mta_attention(q, k, v, kernel_pre=make_kernel(4, 2, 3).detach(), backend=backend)
    # The 2-row query conv carries row 5's NaN logits into rows 5 and 6; other rows never read them.
    assert out[0, 1, 5:7].isnan().all(dim=-1).all(), "a NaN query must reach the outputs that read it"
    assert out[1].isfinite().all() and out[0, 1, :5].isfinite().all() and out[0, 1, 7:].isfinite().all()


def test_head_mix_forms_agree():
    """head_mix's CPU form (one matmul in the maps' layout) equals its GPU form (the einsum), values and gradients."""
    maps = torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    mixer = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert_same_values_and_grads(mix_in_layout, mix_as_one_product, (maps, mixer))
