"""The SIFA operator as fused Triton kernels, forward and backward (optional: needs `triton`).

Same definition as `ops.sifa_attention_reference` (SIFA_SPEC.md section 1), computed without ever
holding the K*K sampled maps: one program handles a block of pixels of one (n, t) plane and
loops over taps and channel blocks, sampling frame t bilinearly (zero padding) on the fly.

Forward, per program: pass 1 accumulates each tap's correlation with the query frame max(t-1, 0)
over all channel blocks (the K*K weights stay in registers); pass 2 samples again and aggregates
O = sum_k A_k V_k one channel block at a time.

Backward saves only the inputs and A (the reference keeps K*K sampled maps of the size of x). It
samples again: pass 1 gets dL/dA_k = dA_k + <dO, V_k>, pass 2 sends the sampled values' gradient to
the four bilinear corners of frame t with atomic adds, the query's gradient to frame max(t-1, 0), and
the offsets' gradient from the slope of the bilinear weights (the validity test has no gradient).

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
    ly = y - y0f
    lx = x - x0f
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
def _sifa_fwd_kernel(x_ptr, off_ptr, agg_ptr, corr_ptr, C, T, H, W,
                     K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, KK_PAD: tl.constexpr,
                     BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr):
    pid_p = tl.program_id(0)
    t = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    HW = H * W
    THW = T * HW
    KK: tl.constexpr = K * K
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < HW
    ph = p // W
    pw = p % W
    q = tl.maximum(t - 1, 0)
    x_n = x_ptr + n * C * THW
    off_base = off_ptr + n * (2 * KK) * THW + t * HW
    corr_base = corr_ptr + n * KK * THW + t * HW
    cidx = tl.arange(0, BLOCK_C)
    kidx = tl.arange(0, KK_PAD)

    # Pass 1: correlation of every tap with the query, over all channels.
    corr = tl.zeros([KK_PAD, BLOCK_P], ACC)
    for k in range(KK):
        valid, corner, ly, lx, m00, m01, m10, m11 = _tap(off_base, p, pmask, ph, pw, k, THW, H, W, K, DIL, PAD, ACC)
        dot = tl.zeros([BLOCK_P], ACC)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cidx
            cmask = c < C
            chan = x_n + c[:, None] * THW
            f00, f01, f10, f11 = _gather(chan + t * HW, corner, m00, m01, m10, m11, cmask, W, ACC)
            v = ((1 - ly) * (1 - lx))[None, :] * f00 + ((1 - ly) * lx)[None, :] * f01 \
                + (ly * (1 - lx))[None, :] * f10 + (ly * lx)[None, :] * f11
            qv = tl.load(chan + q * HW + p[None, :], mask=cmask[:, None] & pmask[None, :], other=0).to(ACC)
            dot += tl.sum(v * qv, axis=0)
        a = tl.where(valid, dot / C, 0.0)
        tl.store(corr_base + k * THW + p, a, mask=pmask)
        corr = tl.where(kidx[:, None] == k, a[None, :], corr)

    # Pass 2: aggregation, one channel block at a time.
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cidx
        cmask = c < C
        chan = x_n + c[:, None] * THW
        out = tl.zeros([BLOCK_C, BLOCK_P], ACC)
        for k in range(KK):
            valid, corner, ly, lx, m00, m01, m10, m11 = _tap(off_base, p, pmask, ph, pw, k, THW, H, W, K, DIL, PAD, ACC)
            a = tl.sum(tl.where(kidx[:, None] == k, corr, 0.0), axis=0)
            f00, f01, f10, f11 = _gather(chan + t * HW, corner, m00, m01, m10, m11, cmask, W, ACC)
            v = ((1 - ly) * (1 - lx))[None, :] * f00 + ((1 - ly) * lx)[None, :] * f01 \
                + (ly * (1 - lx))[None, :] * f10 + (ly * lx)[None, :] * f11
            out += a[None, :] * v
        tl.store(agg_ptr + n * C * THW + c[:, None] * THW + t * HW + p[None, :], out,
                 mask=cmask[:, None] & pmask[None, :])


@triton.jit
def _sifa_bwd_kernel(x_ptr, off_ptr, corr_ptr, gagg_ptr, gcorr_ptr, gx_ptr, goff_ptr, C, T, H, W,
                     HAS_GCORR: tl.constexpr, K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr,
                     KK_PAD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr):
    pid_p = tl.program_id(0)
    t = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    HW = H * W
    THW = T * HW
    KK: tl.constexpr = K * K
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = p < HW
    ph = p // W
    pw = p % W
    q = tl.maximum(t - 1, 0)
    x_n = x_ptr + n * C * THW
    gx_n = gx_ptr + n * C * THW
    gagg_n = gagg_ptr + n * C * THW
    off_base = off_ptr + n * (2 * KK) * THW + t * HW
    corr_base = corr_ptr + n * KK * THW + t * HW
    cidx = tl.arange(0, BLOCK_C)
    kidx = tl.arange(0, KK_PAD)

    # Pass 1: total gradient of each correlation weight, dL/dA_k = dA_k + <dO, V_k>, times valid/C:
    # the factor that carries it on to the query and the sampled values.
    gcoef = tl.zeros([KK_PAD, BLOCK_P], ACC)
    for k in range(KK):
        valid, corner, ly, lx, m00, m01, m10, m11 = _tap(off_base, p, pmask, ph, pw, k, THW, H, W, K, DIL, PAD, ACC)
        dot = tl.zeros([BLOCK_P], ACC)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cidx
            cmask = c < C
            f00, f01, f10, f11 = _gather(x_n + c[:, None] * THW + t * HW, corner, m00, m01, m10, m11, cmask, W, ACC)
            v = ((1 - ly) * (1 - lx))[None, :] * f00 + ((1 - ly) * lx)[None, :] * f01 \
                + (ly * (1 - lx))[None, :] * f10 + (ly * lx)[None, :] * f11
            g = tl.load(gagg_n + c[:, None] * THW + t * HW + p[None, :],
                        mask=cmask[:, None] & pmask[None, :], other=0).to(ACC)
            dot += tl.sum(v * g, axis=0)
        if HAS_GCORR:
            dot += tl.load(gcorr_ptr + n * KK * THW + t * HW + k * THW + p, mask=pmask, other=0).to(ACC)
        coef = tl.where(valid, dot / C, 0.0)
        gcoef = tl.where(kidx[:, None] == k, coef[None, :], gcoef)

    # Pass 2: gradients of the sampled values (scattered to their corners), the query and the offsets.
    gdy = tl.zeros([KK_PAD, BLOCK_P], ACC)
    gdx = tl.zeros([KK_PAD, BLOCK_P], ACC)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cidx
        cmask = c < C
        tile = cmask[:, None] & pmask[None, :]
        chan = c[:, None] * THW
        g = tl.load(gagg_n + chan + t * HW + p[None, :], mask=tile, other=0).to(ACC)
        qv = tl.load(x_n + chan + q * HW + p[None, :], mask=tile, other=0).to(ACC)
        gq = tl.zeros([BLOCK_C, BLOCK_P], ACC)
        for k in range(KK):
            valid, corner, ly, lx, m00, m01, m10, m11 = _tap(off_base, p, pmask, ph, pw, k, THW, H, W, K, DIL, PAD, ACC)
            a = tl.load(corr_base + k * THW + p, mask=pmask, other=0).to(ACC)
            coef = tl.sum(tl.where(kidx[:, None] == k, gcoef, 0.0), axis=0)
            f00, f01, f10, f11 = _gather(x_n + chan + t * HW, corner, m00, m01, m10, m11, cmask, W, ACC)
            w00 = (1 - ly) * (1 - lx)
            w01 = (1 - ly) * lx
            w10 = ly * (1 - lx)
            w11 = ly * lx
            v = w00[None, :] * f00 + w01[None, :] * f01 + w10[None, :] * f10 + w11[None, :] * f11
            gq += coef[None, :] * v
            gv = a[None, :] * g + coef[None, :] * qv
            # Slopes of the bilinear sample along y and x.
            dvy = (1 - lx)[None, :] * (f10 - f00) + lx[None, :] * (f11 - f01)
            dvx = (1 - ly)[None, :] * (f01 - f00) + ly[None, :] * (f11 - f10)
            gdy = tl.where(kidx[:, None] == k, gdy + tl.sum(gv * dvy, axis=0)[None, :], gdy)
            gdx = tl.where(kidx[:, None] == k, gdx + tl.sum(gv * dvx, axis=0)[None, :], gdx)
            ptr = gx_n + chan + t * HW + corner[None, :]
            cm = cmask[:, None]
            tl.atomic_add(ptr, w00[None, :] * gv, mask=cm & (m00 & (w00 != 0))[None, :])
            tl.atomic_add(ptr + 1, w01[None, :] * gv, mask=cm & (m01 & (w01 != 0))[None, :])
            tl.atomic_add(ptr + W, w10[None, :] * gv, mask=cm & (m10 & (w10 != 0))[None, :])
            tl.atomic_add(ptr + W + 1, w11[None, :] * gv, mask=cm & (m11 & (w11 != 0))[None, :])
        tl.atomic_add(gx_n + chan + q * HW + p[None, :], gq, mask=tile)

    goff = goff_ptr + n * (2 * KK) * THW + t * HW + p[None, :]
    kmask = (kidx < KK)[:, None] & pmask[None, :]
    tl.store(goff + (2 * kidx[:, None]) * THW, gdy, mask=kmask)
    tl.store(goff + (2 * kidx[:, None] + 1) * THW, gdx, mask=kmask)


# True when Triton's interpreter runs these kernels (TRITON_INTERPRET=1 at import): CPU tensors work.
INTERPRETED = type(_sifa_fwd_kernel).__name__ == "InterpretedFunction"

_BLOCK_P = 64
_BLOCK_C = 32


def _config(x: Tensor, kernel_size: int, block_c: int | None, block_p: int | None) -> dict:
    c, hw = x.shape[1], x.shape[3] * x.shape[4]
    block_c = block_c or min(_BLOCK_C, triton.next_power_of_2(c))
    block_p = block_p or min(_BLOCK_P, max(16, triton.next_power_of_2(hw)))
    return dict(
        K=kernel_size,
        KK_PAD=triton.next_power_of_2(kernel_size * kernel_size),
        BLOCK_C=block_c,
        BLOCK_P=block_p,
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
    )


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _grid(x: Tensor, block_p: int) -> tuple[int, int, int]:
    n, _, t, h, w = x.shape
    return (triton.cdiv(h * w, block_p), t, n)


class _SIFAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, offset, kernel_size, dilation, block_c, block_p):
        x, offset = x.contiguous(), offset.contiguous()
        n, c, t, h, w = x.shape
        cfg = _config(x, kernel_size, block_c, block_p)
        pad = (dilation * (kernel_size - 1) + 1) // 2
        agg = torch.empty_like(x)
        # The correlation is kept in the arithmetic dtype: backward reads it.
        corr = torch.empty((n, kernel_size * kernel_size, t, h, w), device=x.device, dtype=_acc_dtype(x))
        _sifa_fwd_kernel[_grid(x, cfg["BLOCK_P"])](x, offset, agg, corr, c, t, h, w, DIL=dilation, PAD=pad, **cfg)
        ctx.save_for_backward(x, offset, corr)
        ctx.setup = (kernel_size, dilation, pad, block_c, block_p)
        return agg, corr.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_agg, grad_corr):
        x, offset, corr = ctx.saved_tensors
        kernel_size, dilation, pad, block_c, block_p = ctx.setup
        n, c, t, h, w = x.shape
        cfg = _config(x, kernel_size, block_c, block_p)
        acc = _acc_dtype(x)
        grad_x = torch.zeros(x.shape, device=x.device, dtype=acc)
        grad_off = torch.empty(offset.shape, device=x.device, dtype=acc)
        if grad_agg is None:
            grad_agg = torch.zeros_like(x)
        grad_agg = grad_agg.contiguous()
        has_gcorr = grad_corr is not None
        grad_corr = grad_corr.contiguous() if has_gcorr else corr  # a placeholder pointer when absent
        _sifa_bwd_kernel[_grid(x, cfg["BLOCK_P"])](
            x, offset, corr, grad_agg, grad_corr, grad_x, grad_off, c, t, h, w,
            HAS_GCORR=has_gcorr, DIL=dilation, PAD=pad, **cfg,
        )
        return grad_x.to(x.dtype), grad_off.to(offset.dtype), None, None, None, None


def sifa_attention_triton(x: Tensor, offset: Tensor, kernel_size: int = 3, dilation: int = 1,
                          block_c: int | None = None, block_p: int | None = None) -> tuple[Tensor, Tensor]:
    """Fused SIFA: returns (aggregation N,C,T,H,W, correlation N,K*K,T,H,W) in x's dtype.

    block_c / block_p (powers of two) override the channel and pixel tile sizes (tests use small ones).
    """
    return _SIFAFunction.apply(x, offset, kernel_size, dilation, block_c, block_p)
