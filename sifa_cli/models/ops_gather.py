"""A channels-last SIFA kernel for CPU inference: bilinear taps as weighted row gathers.

With features laid out channels-last, one frame is a table of H*W rows of C values, and the
bilinear sample of a tap is a weighted sum of four rows of that table. The four row indices and
weights of every tap are computed once from the offsets (they are the same for all channels); then,
one tap at a time, `embedding_bag` with per-sample weights gathers and blends the four rows of
every location in one pass, the correlation with the query row is a row-wise dot product, and the
aggregation accumulates in place. Nothing of size K*K x C is ever held, and no channel is visited
more than a few times per tap.

Corners outside the frame get weight 0 (zero padding); a tap whose offset is not finite gets NaN
weights, so it gives NaN as the definition does. A point outside (-1, H) x (-1, W) has all
four corners outside, so its value, and with it its correlation, is 0: the reference's validity
test holds without a separate mask.

`sifa_attention_gather` has the signature of a `register_kernel` kernel (N,C,T,H,W in, the
definition's outputs out) and is registered for CPU inference; `sifa_step_channels_last` is what
the inference blocks call: the SIFA step of a block (operator, then the shift back one frame) for
features already in channels-last frames, skipping frame 0, whose result the shift throws away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sifa_cli.models.ops import register_kernel, sifa_padding

__all__ = ["sifa_attention_gather", "sifa_step_channels_last", "sampling_rows"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def sampling_rows(offsets: Tensor, frame_rows: Tensor, height: int, width: int, kernel_size: int,
                  dilation: int) -> tuple[Tensor, Tensor]:
    """Row indices and weights of the four bilinear corners of every tap.

    offsets: (B, H, W, K*K, 2) with [..., 0] = dy and [..., 1] = dx; frame_rows: (B,) the table row
    where the frame each output frame samples starts. Returns (index, weight), both (K*K, B*H*W, 4),
    corners ordered (y0,x0), (y0,x1), (y1,x0), (y1,x1); corners outside the frame have weight 0 and
    a clamped (valid) index.
    """
    dtype, device = offsets.dtype, offsets.device
    kk = kernel_size * kernel_size
    taps = torch.arange(kernel_size, device=device, dtype=dtype) * dilation - sifa_padding(kernel_size, dilation)
    rows = torch.arange(height, device=device, dtype=dtype).view(1, 1, height, 1)
    cols = torch.arange(width, device=device, dtype=dtype).view(1, 1, 1, width)
    # Tap-major from the start, so each tap's slice is contiguous for embedding_bag.
    off = offsets.permute(3, 4, 0, 1, 2).contiguous()  # K*K, 2, B, H, W
    y = off[:, 0] + (rows + taps.repeat_interleave(kernel_size).view(kk, 1, 1, 1))
    x = off[:, 1] + (cols + taps.repeat(kernel_size).view(kk, 1, 1, 1))
    # Points beyond one pixel outside sample nothing; clamping keeps the integer conversion in range.
    y = y.clamp(-2.0, height + 1.0)
    x = x.clamp(-2.0, width + 1.0)
    y0f, x0f = y.floor(), x.floor()
    ly, lx = y - y0f, x - x0f
    hy, hx = 1 - ly, 1 - lx
    y0, x0 = y0f.long(), x0f.long()
    in_y0 = ((y0 >= 0) & (y0 < height)).to(dtype)
    in_y1 = ((y0 >= -1) & (y0 < height - 1)).to(dtype)
    in_x0 = ((x0 >= 0) & (x0 < width)).to(dtype)
    in_x1 = ((x0 >= -1) & (x0 < width - 1)).to(dtype)
    weight = torch.stack((hy * hx * in_y0 * in_x0, hy * lx * in_y0 * in_x1,
                          ly * hx * in_y1 * in_x0, ly * lx * in_y1 * in_x1), dim=-1)
    # A non-finite offset makes the definition's sample (and correlation) NaN; (d - d) is 0 for a
    # finite d and NaN otherwise, so such a tap gets NaN weights and its value NaN, as there.
    weight += ((off[:, 0] - off[:, 0]) + (off[:, 1] - off[:, 1])).unsqueeze(-1)
    base = frame_rows.view(1, -1, 1, 1)
    r0 = base + y0.clamp(0, height - 1) * width
    r1 = base + (y0 + 1).clamp(0, height - 1) * width
    c0, c1 = x0.clamp(0, width - 1), (x0 + 1).clamp(0, width - 1)
    index = torch.stack((r0 + c0, r0 + c1, r1 + c0, r1 + c1), dim=-1)
    return index.view(kk, -1, 4), weight.view(kk, -1, 4)


def attend_rows(table: Tensor, queries: Tensor, index: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Correlation and aggregation for P locations. table: (R, C) key/value rows; queries: (P, C);
    index, weight: (K*K, P, 4) from `sampling_rows`. Returns (aggregation (P, C), correlation (K*K, P))."""
    channels = table.shape[1]
    kk, positions = index.shape[:2]
    queries = queries / channels  # the 1/C correlation scale, applied once (exact for C a power of 2)
    corr = torch.empty(kk, positions, dtype=table.dtype, device=table.device)
    agg = torch.zeros(positions, channels, dtype=table.dtype, device=table.device)
    for k in range(kk):
        value = F.embedding_bag(index[k], table, per_sample_weights=weight[k], mode="sum")
        torch.linalg.vecdot(value, queries, out=corr[k])
        agg.addcmul_(value, corr[k].unsqueeze(1))
    return agg, corr


def _compute_dtype(x: Tensor) -> torch.dtype:
    # Sampling coordinates lose whole pixels in 16-bit floats (as in ops.py).
    return torch.float32 if x.dtype in _LOW_PRECISION else x.dtype


def sifa_attention_gather(x: Tensor, offset: Tensor, kernel_size: int = 3, dilation: int = 1) -> tuple[Tensor, Tensor]:
    """The SIFA operator (same inputs and outputs as `sifa_attention_reference`), no autograd.

    Outputs are channels-last views: aggregation N,C,T,H,W with memory order N,T,H,W,C.
    """
    n, c, t, h, w = x.shape
    kk = kernel_size * kernel_size
    dtype = _compute_dtype(x)
    frames = x.permute(0, 2, 3, 4, 1).to(dtype).contiguous()  # N,T,H,W,C: free when x is channels-last
    previous = torch.arange(t, device=x.device).sub(1).clamp_(min=0)
    queries = frames.index_select(1, previous).view(-1, c)
    offsets = offset.permute(0, 2, 3, 4, 1).to(dtype).reshape(n * t, h, w, kk, 2)
    frame_rows = torch.arange(n * t, device=x.device) * (h * w)
    index, weight = sampling_rows(offsets, frame_rows, h, w, kernel_size, dilation)
    agg, corr = attend_rows(frames.view(-1, c), queries, index, weight)
    agg = agg.view(n, t, h, w, c).permute(0, 4, 1, 2, 3).to(x.dtype)
    corr = corr.view(kk, n, t, h, w).transpose(0, 1).to(x.dtype)
    return agg, corr


def sifa_step_channels_last(features: Tensor, offsets: Tensor, frames: int, kernel_size: int = 3,
                            dilation: int = 1) -> Tensor:
    """`f + shift_to_query_frame(SIFA(f, D))` for channels-last frames, as a new tensor.

    features: (N*T, C, H, W) and offsets (N*T, 2K², H, W), frames of a clip consecutive. Only frames
    1..T-1 are sampled: the result of frame t goes to frame t-1 and frame 0's is shifted out.
    """
    bt, c, h, w = features.shape
    n, t = bt // frames, frames
    out = features.clone(memory_format=torch.channels_last)
    if t < 2 or features.numel() == 0:
        return out
    dtype = _compute_dtype(features)
    kk = kernel_size * kernel_size
    f = features.permute(0, 2, 3, 1).to(dtype).contiguous().view(n, t, h, w, c)
    queries = f[:, :-1].reshape(-1, c)
    off = offsets.permute(0, 2, 3, 1).to(dtype).reshape(n, t, h, w, kk, 2)[:, 1:].reshape(-1, h, w, kk, 2)
    frame_rows = (torch.arange(n, device=f.device).view(n, 1) * t
                  + torch.arange(1, t, device=f.device).view(1, t - 1)).view(-1) * (h * w)
    index, weight = sampling_rows(off, frame_rows, h, w, kernel_size, dilation)
    agg, _ = attend_rows(f.view(-1, c), queries, index, weight)
    out_frames = out.permute(0, 2, 3, 1).view(n, t, h, w, c)  # a view of out's memory
    out_frames[:, :-1] += agg.view(n, t - 1, h, w, c).to(out.dtype)
    return out


def _cpu_inference(x: Tensor, offset: Tensor, kernel_size: int, dilation: int) -> bool:
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or offset.requires_grad)
    return x.device.type == "cpu" and x.numel() > 0 and not needs_grad


register_kernel("gather", sifa_attention_gather, _cpu_inference)
