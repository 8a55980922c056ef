"""The SIFA operator as fused Triton kernels, forward and backward (optional: needs `triton`).

Same definition as `ops.sifa_attention_reference` (SIFA_SPEC.md section 1), computed without ever
holding the K*K sampled maps: every kernel samples frame t bilinearly (zero padding) on the fly,
for a block of pixels of one (n, t) plane.

Forward: `_tap_dot_kernel` (one program per pixel block and tap) gives the correlation A of each tap
with the query frame max(t-1, 0) over all channels; `_aggregate_kernel` (one program per pixel block
and channel block) samples again and sums O = sum_k A_k V_k.

Backward saves only the inputs and A (the reference keeps K*K sampled maps of the size of x). It
samples again: `_tap_dot_kernel` gives dL/dA_k = dA_k + <dO, V_k>, then `_backward_kernel` sends the
sampled values' gradient to the four bilinear corners of frame t and the query's gradient to frame
max(t-1, 0) with atomic adds, and the offsets' gradient from the slope of the bilinear weights (the
validity test has no gradient).

Arithmetic is in float32 (float64 for float64 inputs); float16/bfloat16 inputs are read and written
in their own dtype, like the reference which computes them in float32.

Import this module only after deciding to use it: with TRITON_INTERPRET=1 set before the import,
Triton's interpreter runs the kernels on CPU tensors (that is how CI tests them).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["sifa_attention_triton"]


@triton.jit
def _tap(off_base, p, pmask, ph, pw, k, THW, H, W,
         K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, ACC: tl.constexpr):
    """Where tap k samples for pixels p: validity, top-left corner, fractions, corner masks."""
    dy = tl.load(off_base + (2 * k) * THW + p, mask=pmask, other=0).to(ACC)
    dx = tl.load(off_base + (2 * k + 1) * THW + p, mask=pmask, other=0).to(ACC)
    y = ph.to(ACC) + ((k // K) * DIL - PAD) + dy
    x = pw.to(ACC) + ((k % K) * DIL - PAD) + dx
    valid = (y > -1) & (y < H) & (x > -1) & (x < W) & pmask
    # Points outside the frame contribute nothing; clamping keeps their integer corners in range.
    y = tl.minimum(tl.maximum(y, -2.0), H + 1.0)
    x = tl.minimum(tl.maximum(x, -2.0), W + 1.0)
    y0f = tl.floor(y)
    x0f = tl.floor(x)
    # A non-finite offset makes the definition's sample, and so its correlation, NaN: (d - d) is 0
    # for a finite d and NaN otherwise, and a NaN fraction carries that into every use of the tap.
    nonfinite = (dy - dy) + (dx - dx)
    ly = y - y0f + nonfinite
    lx = x - x0f + nonfinite
    y0 = y0f.to(tl.int32)
    x0 = x0f.to(tl.int32)
    my0 = valid & (y0 >= 0)
    my1 = valid & (y0 + 1 < H)
    mx0 = x0 >= 0
    mx1 = x0 + 1 < W
    return valid, y0 * W + x0, ly, lx, my0 & mx0, my0 & mx1, my1 & mx0, my1 & mx1


@triton.jit
def _gather(frame, corner, m00, m01, m10, m11, cmask, W, ACC: tl.constexpr):
    """The four corner values (BLOCK_C, BLOCK_P) of frame at the given top-left corners."""
    ptr = frame + corner[None, :]
    cm = cmask[:, None]
    f00 = tl.load(ptr, mask=cm & m00[None, :], other=0).to(ACC)
    f01 = tl.load(ptr + 1, mask=cm & m01[None, :], other=0).to(ACC)
    f10 = tl.load(ptr + W, mask=cm & m10[None, :], other=0).to(ACC)
    f11 = tl.load(ptr + W + 1, mask=cm & m11[None, :], other=0).to(ACC)
    return f00, f01, f10, f11


@triton.jit
def _bilinear(f00, f01, f10, f11, ly, lx):
    return ((1 - ly) * (1 - lx))[None, :] * f00 + ((1 - ly) * lx)[None, :] * f01 \
        + (ly * (1 - lx))[None, :] * f10 + (ly * lx)[None, :] * f11


@triton.jit
def _tap_dot_kernel(x_ptr, off_ptr, other_ptr, add_ptr, out_ptr, C, T, H, W, QUERY: tl.constexpr,
                    HAS_ADD: tl.constexpr, K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr):
    """out[n, k, t, p] = valid_k * (add[n, k, t, p] + sum_c other[n, c, s, p] * V_k[c, p]) / C.

    One program per (pixel block, tap k, n*T + t). With QUERY, `other` is x itself at the query frame
    s = max(t-1, 0) (the forward correlation A); without, it is dL/dO at frame t and `add` is dL/dA
    (the backward's factor that carries dL/dA_k on to the query and the sampled values).
    """
    pid_p = tl.program_id(0)
    k = tl.program_id(1)
    nt = tl.program_id(2)
    n = (nt // T).to(tl.int64)
    t = nt % T
    HW = H * W
    THW = T * HW
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < HW
    ph = p // W
    pw = p % W
    if QUERY:
        s = tl.maximum(t - 1, 0)
    else:
        s = t
    x_nt = x_ptr + n * C * THW + t * HW
    other_ns = other_ptr + n * C * THW + s * HW
    off_base = off_ptr + n * (2 * K * K) * THW + t * HW
    valid, corner, ly, lx, m00, m01, m10, m11 = _tap(off_base, p, pmask, ph, pw, k, THW, H, W, K, DIL, PAD, ACC)
    cidx = tl.arange(0, BLOCK_C)
    dot = tl.zeros([BLOCK_P], ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cidx
        cmask = c < C
        f00, f01, f10, f11 = _gather(x_nt + c[:, None] * THW, corner, m00, m01, m10, m11, cmask, W, ACC)
        v = _bilinear(f00, f01, f10, f11, ly, lx)
        o = tl.load(other_ns + c[:, None] * THW + p[None, :], mask=cmask[:, None] & pmask[None, :], other=0).to(ACC)
        dot += tl.sum(v * o, axis=0)
    small = n * (K * K) * THW + k * THW + t * HW + p
    if HAS_ADD:
        dot += tl.load(add_ptr + small, mask=pmask, other=0).to(ACC)
    tl.store(out_ptr + small, tl.where(valid | (ly != ly), dot / C, 0.0), mask=pmask)


@triton.jit
def _aggregate_kernel(x_ptr, off_ptr, corr_ptr, agg_ptr, C, T, H, W,
                      K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr):
    """agg[n, c, t, p] = sum_k A[n, k, t, p] * V_k[c, p]; one program per (pixel block, channel block, n*T + t)."""
    pid_p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    nt = tl.program_id(2)
    n = (nt // T).to(tl.int64)
    t = nt % T
    HW = H * W
    THW = T * HW
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < HW
    ph = p // W
    pw = p % W
    cmask = c < C
    chan = n * C * THW + c[:, None] * THW + t * HW
    off_base = off_ptr + n * (2 * K * K) * THW + t * HW
    corr_base = corr_ptr + n * (K * K) * THW + t * HW
    out = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    for k in range(K * K):
        valid, corner, ly, lx, m00, m01, m10, m11 = _tap(off_base, p, pmask, ph, pw, k, THW, H, W, K, DIL, PAD, ACC)
        a = tl.load(corr_base + k * THW + p, mask=pmask, other=0).to(ACC)
        f00, f01, f10, f11 = _gather(x_ptr + chan, corner, m00, m01, m10, m11, cmask, W, ACC)
        out += a[None, :] * _bilinear(f00, f01, f10, f11, ly, lx)
    tl.store(agg_ptr + chan + p[None, :], out, mask=cmask[:, None] & pmask[None, :])


@triton.jit
def _backward_kernel(x_ptr, off_ptr, corr_ptr, coef_ptr, gagg_ptr, gx_ptr, goff_ptr, C, T, H, W,
                     K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr):
    """Gradients of x and offsets for one (pixel block, channel block, n*T + t).

    With coef_k = valid_k * dL/dA_k / C: the sampled values get dV_k = A_k dO + coef_k q (scattered to
    their four corners of frame t), the query frame gets sum_k coef_k V_k, and each offset gets
    <dV_k, dV_k/dy> (and x), summed over channel blocks with atomic adds.
    """
    pid_p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    nt = tl.program_id(2)
    n = (nt // T).to(tl.int64)
    t = nt % T
    HW = H * W
    THW = T * HW
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < HW
    ph = p // W
    pw = p % W
    q = tl.maximum(t - 1, 0)
    cmask = c < C
    tile = cmask[:, None] & pmask[None, :]
    chan = n * C * THW + c[:, None] * THW
    off_base = off_ptr + n * (2 * K * K) * THW + t * HW
    goff_base = goff_ptr + n * (2 * K * K) * THW + t * HW
    small = n * (K * K) * THW + t * HW + p
    g = tl.load(gagg_ptr + chan + t * HW + p[None, :], mask=tile, other=0).to(ACC)
    qv = tl.load(x_ptr + chan + q * HW + p[None, :], mask=tile, other=0).to(ACC)
    gq = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    for k in range(K * K):
        valid, corner, ly, lx, m00, m01, m10, m11 = _tap(off_base, p, pmask, ph, pw, k, THW, H, W, K, DIL, PAD, ACC)
        a = tl.load(corr_ptr + small + k * THW, mask=pmask, other=0).to(ACC)
        coef = tl.load(coef_ptr + small + k * THW, mask=pmask, other=0).to(ACC)
        f00, f01, f10, f11 = _gather(x_ptr + chan + t * HW, corner, m00, m01, m10, m11, cmask, W, ACC)
        gq += coef[None, :] * _bilinear(f00, f01, f10, f11, ly, lx)
        gv = a[None, :] * g + coef[None, :] * qv
        # Slopes of the bilinear sample along y and x.
        dvy = (1 - lx)[None, :] * (f10 - f00) + lx[None, :] * (f11 - f01)
        dvx = (1 - ly)[None, :] * (f01 - f00) + ly[None, :] * (f11 - f10)
        tl.atomic_add(goff_base + (2 * k) * THW + p, tl.sum(gv * dvy, axis=0), mask=valid)
        tl.atomic_add(goff_base + (2 * k + 1) * THW + p, tl.sum(gv * dvx, axis=0), mask=valid)
        w00 = (1 - ly) * (1 - lx)
        w01 = (1 - ly) * lx
        w10 = ly * (1 - lx)
        w11 = ly * lx
        ptr = gx_ptr + chan + t * HW + corner[None, :]
        cm = cmask[:, None]
        tl.atomic_add(ptr, w00[None, :] * gv, mask=cm & (m00 & (w00 != 0))[None, :])
        tl.atomic_add(ptr + 1, w01[None, :] * gv, mask=cm & (m01 & (w01 != 0))[None, :])
        tl.atomic_add(ptr + W, w10[None, :] * gv, mask=cm & (m10 & (w10 != 0))[None, :])
        tl.atomic_add(ptr + W + 1, w11[None, :] * gv, mask=cm & (m11 & (w11 != 0))[None, :])
    tl.atomic_add(gx_ptr + chan + q * HW + p[None, :], gq, mask=tile)


# True when Triton's interpreter runs these kernels (TRITON_INTERPRET=1 at import): CPU tensors work.
INTERPRETED = type(_aggregate_kernel).__name__ == "InterpretedFunction"

# Default tiles (channels x pixels) and warps. benchmarks/bench_sifa_kernel.py sweeps them on a GPU.
_BLOCK_C = 16
_BLOCK_P = 64
_WARPS = 8


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class _Launch:
    """Shapes, tile sizes and the grids of the four kernels for one call."""

    def __init__(self, x: Tensor, kernel_size: int, dilation: int, block_c, block_p, num_warps):
        self.n, self.c, self.t, self.h, self.w = x.shape
        hw = self.h * self.w
        self.block_c = block_c or min(_BLOCK_C, triton.next_power_of_2(self.c))
        self.block_p = block_p or min(_BLOCK_P, max(16, triton.next_power_of_2(hw)))
        self.num_warps = num_warps or _WARPS
        pixels = triton.cdiv(hw, self.block_p)
        self.per_tap = (pixels, kernel_size * kernel_size, self.n * self.t)
        self.per_channel = (pixels, triton.cdiv(self.c, self.block_c), self.n * self.t)
        self.meta = dict(K=kernel_size, DIL=dilation, PAD=(dilation * (kernel_size - 1) + 1) // 2,
                         BLOCK_C=self.block_c, BLOCK_P=self.block_p, num_warps=self.num_warps,
                         ACC=tl.float64 if x.dtype == torch.float64 else tl.float32)

    @property
    def dims(self):
        return self.c, self.t, self.h, self.w


class _SIFAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, offset, kernel_size, dilation, block_c, block_p, num_warps):
        x, offset = x.contiguous(), offset.contiguous()
        run = _Launch(x, kernel_size, dilation, block_c, block_p, num_warps)
        # The correlation is kept in the arithmetic dtype: backward reads it.
        corr = torch.empty((run.n, kernel_size * kernel_size, run.t, run.h, run.w), device=x.device, dtype=_acc_dtype(x))
        agg = torch.empty_like(x)
        _tap_dot_kernel[run.per_tap](x, offset, x, corr, corr, *run.dims, QUERY=True, HAS_ADD=False, **run.meta)
        _aggregate_kernel[run.per_channel](x, offset, corr, agg, *run.dims, **run.meta)
        ctx.save_for_backward(x, offset, corr)
        ctx.setup = (kernel_size, dilation, block_c, block_p, num_warps)
        return agg, corr.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_agg, grad_corr):
        x, offset, corr = ctx.saved_tensors
        run = _Launch(x, *ctx.setup)
        acc = _acc_dtype(x)
        grad_agg = torch.zeros_like(x) if grad_agg is None else grad_agg.contiguous()
        has_gcorr = grad_corr is not None
        grad_corr = grad_corr.contiguous() if has_gcorr else corr  # an unread placeholder when absent
        coef = torch.empty_like(corr)
        _tap_dot_kernel[run.per_tap](x, offset, grad_agg, grad_corr, coef, *run.dims, QUERY=False,
                                     HAS_ADD=has_gcorr, **run.meta)
        grad_x = torch.zeros(x.shape, device=x.device, dtype=acc)
        grad_off = torch.zeros(offset.shape, device=x.device, dtype=acc)
        _backward_kernel[run.per_channel](x, offset, corr, coef, grad_agg, grad_x, grad_off, *run.dims, **run.meta)
        return grad_x.to(x.dtype), grad_off.to(offset.dtype), None, None, None, None, None


def sifa_attention_triton(x: Tensor, offset: Tensor, kernel_size: int = 3, dilation: int = 1,
                          block_c: int | None = None, block_p: int | None = None,
                          num_warps: int | None = None) -> tuple[Tensor, Tensor]:
    """Fused SIFA: returns (aggregation N,C,T,H,W, correlation N,K*K,T,H,W) in x's dtype.

    block_c / block_p (powers of two) override the channel and pixel tile sizes (tests use small
    ones), num_warps the warps of every kernel (benchmarks).
    """
    return _SIFAFunction.apply(x, offset, kernel_size, dilation, block_c, block_p, num_warps)
