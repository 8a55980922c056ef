"""The SIFA operator against the shared fixture and against a naive per-element loop."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sifa_cli.models import ops
from sifa_cli.models.ops import sifa_attention, sifa_attention_per_tap, sifa_attention_reference
from sifa_cli.models.ops_gather import sifa_attention_gather

# Every implementation is held to the same definition; `sifa_attention` is the dispatching entry point.
IMPLEMENTATIONS = {
    "reference": sifa_attention_reference,
    "per-tap": sifa_attention_per_tap,
    "gather": sifa_attention_gather,
    "dispatch": sifa_attention,
}

FIXTURE = Path(__file__).parent / "fixtures" / "sifa_ops_fixture.pt"  # copied from shared/fixtures


def naive_sifa(x: torch.Tensor, offset: torch.Tensor, k: int = 3, dilation: int = 1):
    """SIFA_SPEC.md section 1 written as loops over every element, in float64."""
    n, c, t, h, w = x.shape
    pad = (dilation * (k - 1) + 1) // 2
    corr = torch.zeros(n, k * k, t, h, w, dtype=torch.float64)
    agg = torch.zeros(n, c, t, h, w, dtype=torch.float64)

    def pixel(b, frame, yy, xx):
        if 0 <= yy < h and 0 <= xx < w:
            return x[b, :, frame, yy, xx].double()
        return torch.zeros(c, dtype=torch.float64)

    for b in range(n):
        for ti in range(t):
            q = max(ti - 1, 0)
            for i in range(h):
                for j in range(w):
                    values = []
                    for kh in range(k):
                        for kw in range(k):
                            kk = kh * k + kw
                            y = i - pad + kh * dilation + offset[b, 2 * kk, ti, i, j].item()
                            xx = j - pad + kw * dilation + offset[b, 2 * kk + 1, ti, i, j].item()
                            y0, x0 = math.floor(y), math.floor(xx)
                            ly, lx = y - y0, xx - x0
                            v = ((1 - ly) * (1 - lx) * pixel(b, ti, y0, x0) + (1 - ly) * lx * pixel(b, ti, y0, x0 + 1)
                                 + ly * (1 - lx) * pixel(b, ti, y0 + 1, x0) + ly * lx * pixel(b, ti, y0 + 1, x0 + 1))
                            valid = -1 < y < h and -1 < xx < w
                            a = (x[b, :, q, i, j].double() * v).sum() / c if valid else torch.tensor(0.0, dtype=torch.float64)
                            corr[b, kk, ti, i, j] = a
                            values.append((a, v))
                    agg[b, :, ti, i, j] = sum(a * v for a, v in values)
    return agg, corr


def random_case(shape, k=3, scale=2.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    n, c, t, h, w = shape
    x = torch.randn(shape, generator=g, dtype=dtype)
    off = (torch.rand(n, 2 * k * k, t, h, w, generator=g, dtype=dtype) - 0.5) * 2 * scale
    return x, off


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_matches_shared_fixture_float64(impl):
    data = torch.load(FIXTURE, weights_only=True)
    agg, corr = IMPLEMENTATIONS[impl](data["x"], data["offset"])
    assert (agg - data["aggregation"]).abs().max().item() < 1e-10
    assert (corr - data["correlation"]).abs().max().item() < 1e-10


@pytest.mark.parametrize(
    "shape,k,dilation",
    [
        ((1, 3, 1, 4, 5), 3, 1),  # T = 1: each frame queries itself
        ((2, 2, 3, 1, 6), 3, 1),  # H = 1
        ((1, 2, 2, 5, 1), 3, 1),  # W = 1
        ((1, 4, 3, 4, 4), 5, 1),  # larger K
        ((1, 3, 2, 5, 6), 3, 2),  # dilation 2
        ((2, 1, 2, 3, 3), 1, 1),  # K = 1
    ],
)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_matches_naive_loop_on_odd_shapes(shape, k, dilation, impl):
    x, off = random_case(shape, k=k)
    agg, corr = IMPLEMENTATIONS[impl](x, off, k, dilation)
    ref_agg, ref_corr = naive_sifa(x, off, k, dilation)
    torch.testing.assert_close(corr, ref_corr, atol=1e-12, rtol=0)
    torch.testing.assert_close(agg, ref_agg, atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_integer_border_and_far_offsets(impl):
    x, off = random_case((1, 3, 3, 4, 5), scale=1.0, seed=1)
    off = off.round()  # integer offsets: bilinear weights are exactly 0/1
    off[:, 0] = -1.0  # tap 0 lands exactly on y = -2 or y = -1 rows (border / outside)
    off[:, 3, :, :, 0] = -0.0
    off[:, 4] = 4.0  # tap 2 pushed down to y = h - 1 + ... edges
    off[:, 5, :, 1] = 1000.0  # far outside to the right
    off[:, 6, :, 2] = -1e6  # far outside at the top
    agg, corr = IMPLEMENTATIONS[impl](x, off)
    ref_agg, ref_corr = naive_sifa(x, off)
    torch.testing.assert_close(corr, ref_corr, atol=1e-12, rtol=0)
    torch.testing.assert_close(agg, ref_agg, atol=1e-12, rtol=0)
    assert corr[0, 2, :, 1].abs().max() == 0 and corr[0, 3, :, 2].abs().max() == 0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_non_finite_offsets_give_nan_where_the_definition_does(impl):
    # Damaged weights can make an offset NaN or infinite: the tap's correlation and the pixel's
    # aggregation are then NaN in the definition, and a fast kernel must not hide that as 0.
    x, off = random_case((1, 4, 3, 5, 6), seed=3)
    off[0, 3, 1, 2, 2] = float("nan")
    off[0, 8, 2, 0, 5] = float("inf")
    off[0, 13, 0, 4, 1] = -float("inf")
    agg, corr = IMPLEMENTATIONS[impl](x, off)
    ref_agg, ref_corr = sifa_attention_reference(x, off)
    assert ref_corr.isnan().sum() == 3 and ref_agg.isnan().sum() == 3 * 4
    torch.testing.assert_close(corr, ref_corr, atol=1e-12, rtol=0, equal_nan=True)
    torch.testing.assert_close(agg, ref_agg, atol=1e-12, rtol=0, equal_nan=True)


def test_zero_offsets_equal_plain_neighbourhood_correlation():
    # With no offsets, tap (1,1) of frame t is the same location: correlation is <f_{t-1}, f_t> / C.
    x, _ = random_case((1, 4, 3, 5, 5))
    off = torch.zeros(1, 18, 3, 5, 5, dtype=torch.float64)
    _, corr = sifa_attention(x, off)
    expected = (x[:, :, [0, 0, 1]] * x).sum(1) / 4
    torch.testing.assert_close(corr[:, 4], expected)


def test_gradcheck_input_and_offsets():
    x, off = random_case((1, 2, 2, 3, 4), scale=1.5, seed=3)
    # Keep samples away from integer coordinates, where bilinear interpolation has a kink.
    off = off.round() + 0.37
    x.requires_grad_(True)
    off.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: sifa_attention(a, b), (x, off), eps=1e-6, atol=1e-5)


def test_batch_size_zero():
    x = torch.randn(0, 3, 2, 4, 4, requires_grad=True)
    off = torch.zeros(0, 18, 2, 4, 4, requires_grad=True)
    agg, corr = sifa_attention(x, off)
    assert agg.shape == (0, 3, 2, 4, 4) and corr.shape == (0, 9, 2, 4, 4)
    (agg.sum() + corr.sum()).backward()
    assert x.grad.shape == x.shape


def test_non_contiguous_inputs():
    x, off = random_case((2, 3, 3, 5, 4), seed=4)
    x_nc = x.permute(0, 1, 2, 4, 3).contiguous().permute(0, 1, 2, 4, 3)
    off_nc = off.transpose(3, 4).contiguous().transpose(3, 4)
    assert not x_nc.is_contiguous() and not off_nc.is_contiguous()
    agg, corr = sifa_attention(x_nc, off_nc)
    ref_agg, ref_corr = sifa_attention(x, off)
    torch.testing.assert_close(agg, ref_agg)
    torch.testing.assert_close(corr, ref_corr)


@pytest.mark.parametrize(
    "offset_shape,message",
    [
        ((1, 9, 2, 4, 4), "2\\*K\\*K"),
        ((1, 18, 3, 4, 4), "N,2\\*K\\*K,T,H,W"),
        ((1, 18, 2, 4), "N,2\\*K\\*K,T,H,W"),
    ],
)
def test_wrong_offset_shapes_raise_clear_errors(offset_shape, message):
    x = torch.randn(1, 3, 2, 4, 4)
    with pytest.raises(ValueError, match=message):
        sifa_attention(x, torch.zeros(offset_shape))


def test_wrong_feature_rank_raises():
    with pytest.raises(ValueError, match="N,C,T,H,W"):
        sifa_attention(torch.randn(3, 2, 4, 4), torch.zeros(1, 18, 2, 4, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lower_precision_close_to_float64(dtype):
    x, off = random_case((1, 8, 3, 6, 6), seed=5)
    agg64, corr64 = sifa_attention(x, off)
    agg, corr = sifa_attention(x.to(dtype), off.to(dtype))
    assert agg.dtype == dtype and corr.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    # bf16 inputs round x and offsets themselves; compare against float64 on the rounded inputs.
    agg_ref, corr_ref = sifa_attention(x.to(dtype).double(), off.to(dtype).double())
    torch.testing.assert_close(agg.double(), agg_ref, atol=tol * agg_ref.abs().max().item(), rtol=0)
    torch.testing.assert_close(corr.double(), corr_ref, atol=tol * corr_ref.abs().max().item(), rtol=0)
    if dtype == torch.float32:
        torch.testing.assert_close(agg.double(), agg64, atol=1e-5, rtol=1e-5)


def test_inference_on_cpu_uses_the_gather_kernel_and_training_the_reference():
    x, off = random_case((1, 2, 2, 3, 3))
    assert ops.select_kernel(x, off, 3, 1) == "gather"
    assert ops.select_kernel(x.requires_grad_(True), off, 3, 1) == "reference"
    with torch.no_grad():
        assert ops.select_kernel(x, off, 3, 1) == "gather"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_tap_matches_reference_in_low_precision(dtype):
    x, off = random_case((2, 16, 4, 9, 7), seed=7, dtype=dtype)
    for a, b in zip(sifa_attention_per_tap(x, off), sifa_attention_reference(x, off)):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, atol=1e-5 if dtype == torch.float32 else 2e-2, rtol=1e-2)


def test_dispatch_uses_registered_kernel_only_where_it_can_run(monkeypatch):
    calls = []

    def fake_fast(x, off, k, d):
        calls.append(x.dtype)
        return sifa_attention_reference(x, off, k, d)

    monkeypatch.setattr(ops, "_KERNELS", [])
    ops.register_kernel("only-float32", fake_fast, lambda x, off, k, d: x.dtype == torch.float32)
    x, off = random_case((1, 2, 2, 3, 3))
    sifa_attention(x, off)
    assert ops.select_kernel(x, off, 3, 1) == "reference" and calls == []
    sifa_attention(x.float(), off.float())
    assert calls == [torch.float32]
    monkeypatch.setenv("SIFA_KERNEL", "reference")
    assert ops.select_kernel(x.float(), off.float(), 3, 1) == "reference"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    x, off = random_case((2, 16, 4, 14, 14), seed=6, dtype=torch.float32)
    x.requires_grad_(True)
    off.requires_grad_(True)
    agg, corr = sifa_attention(x, off)
    (agg.square().sum() + corr.sum()).backward()
    xg, og = x.detach().cuda().requires_grad_(True), off.detach().cuda().requires_grad_(True)
    agg_c, corr_c = sifa_attention(xg, og)
    (agg_c.square().sum() + corr_c.sum()).backward()
    torch.testing.assert_close(agg_c.cpu(), agg, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(corr_c.cpu(), corr, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(xg.grad.cpu(), x.grad, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(og.grad.cpu(), off.grad, atol=1e-3, rtol=1e-3)


def test_points_exactly_on_the_outer_border_get_no_gradient():
    # y = -1 is outside (-1 < y fails): bilinear interpolation alone would still pass a gradient
    # from row 0, the reference's validity test stops it.
    x = torch.randn(1, 3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    off = torch.zeros(1, 18, 2, 4, 4, dtype=torch.float64)
    off[:, 8] = -1.0  # tap (1,1) moved one row up: at row 0 it lands exactly on y = -1
    off.requires_grad_(True)
    agg, corr = sifa_attention(x, off)
    (agg.sum() + corr.sum()).backward()
    assert corr[0, 4, :, 0].abs().max() == 0
    assert off.grad[0, 8, :, 0].abs().max() == 0
    assert off.grad[0, 8, :, 1:].abs().max() > 0
