"""The SIFA operator: deformable inter-frame correlation followed by aggregation.

Definition (SIFA_SPEC.md section 1, reference code cuda_sifa/): for every frame t the query is frame
max(t-1, 0) and the keys/values are K*K points of frame t, sampled bilinearly (zero padding) at the
regular KxK grid around each location moved by a learned offset. The correlation of the query with each
sampled value is scaled by 1/C (there is no softmax) and the values are summed with those weights.

`sifa_attention` is the single entry point. It validates shapes and then dispatches to a kernel:
the plain PyTorch implementation below is the definition; a faster kernel registered with
`register_kernel` is used only where it says it can run, and must match the plain one (tests check it).
Built in: a per-tap variant for inference (no autograd), faster and lighter on memory, and on CUDA
fused Triton kernels for forward and backward (ops_triton.py, used where Triton is installed).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "sifa_attention",
    "sifa_attention_reference",
    "register_kernel",
    "SIFAAttention",
    "FrozenCorrelationScale",
    "sifa_padding",
]

# Sampling coordinates lose whole pixels in 16-bit floats, so low-precision inputs are computed in fp32.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def sifa_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding of the sampling grid, as the reference computes it."""
    return (dilation * (kernel_size - 1) + 1) // 2


def _check_inputs(x: Tensor, offset: Tensor, kernel_size: int, dilation: int) -> None:
    if kernel_size < 1 or dilation < 1:
        raise ValueError(f"kernel_size and dilation must be >= 1, got {kernel_size} and {dilation}")
    if x.dim() != 5:
        raise ValueError(f"SIFA expects features of shape N,C,T,H,W; got {tuple(x.shape)}")
    n, _, t, h, w = x.shape
    expected = (n, 2 * kernel_size * kernel_size, t, h, w)
    if tuple(offset.shape) != expected:
        raise ValueError(
            f"SIFA offsets must have shape N,2*K*K,T,H,W = {expected} for features {tuple(x.shape)} "
            f"and K={kernel_size}; got {tuple(offset.shape)}"
        )
    if not offset.is_floating_point() or not x.is_floating_point():
        raise ValueError("SIFA features and offsets must be floating point tensors")
    if offset.device != x.device:
        raise ValueError(f"SIFA features are on {x.device} but offsets on {offset.device}")


def _query_frames(x: Tensor) -> Tensor:
    """Frame t-1 for every t, frame 0 for t = 0."""
    prev = torch.arange(x.shape[2], device=x.device).sub(1).clamp_(min=0)
    return x.index_select(2, prev)


def _sampling_positions(x: Tensor, offset: Tensor, kernel_size: int, dilation: int) -> tuple[Tensor, Tensor]:
    """Rows and columns where each tap samples: regular grid + offset. Both (N*T, K*K, H, W)."""
    n, _, t, h, w = x.shape
    kk = kernel_size * kernel_size
    pad = sifa_padding(kernel_size, dilation)
    taps = torch.arange(kernel_size, device=x.device, dtype=x.dtype) * dilation - pad
    off = offset.view(n, kk, 2, t, h, w).permute(0, 3, 2, 1, 4, 5).reshape(n * t, 2, kk, h, w)
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    y = rows + taps.repeat_interleave(kernel_size).view(1, kk, 1, 1) + off[:, 0]
    xs = cols + taps.repeat(kernel_size).view(1, kk, 1, 1) + off[:, 1]
    return y, xs


def _bilinear(frames: Tensor, y: Tensor, xs: Tensor) -> Tensor:
    """Sample frames (B, C, H, W) at pixel positions y, xs (B, P, W'): returns (B, C, P, W').

    grid_sample with align_corners=False maps pixel p to (2p + 1) / size - 1; this stays defined for
    size 1, and zero padding gives 0 for every neighbour outside the frame, as the reference does.
    """
    h, w = frames.shape[-2:]
    grid = torch.stack(((2 * xs + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _inside(y: Tensor, xs: Tensor, h: int, w: int) -> Tensor:
    """The reference's validity test: a point whose bilinear footprint misses the frame adds nothing."""
    return (y > -1) & (y < h) & (xs > -1) & (xs < w)


def _prepare(x: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
    if x.dtype in _LOW_PRECISION:
        return x.float(), offset.float()
    return x, offset.to(x.dtype)


def _frames_and_queries(x: Tensor) -> tuple[Tensor, Tensor]:
    n, c, t, h, w = x.shape
    frames = x.transpose(1, 2).reshape(n * t, c, h, w)
    queries = _query_frames(x).transpose(1, 2).reshape(n * t, c, h, w)
    return frames, queries


def _restore(agg: Tensor, corr: Tensor, shape, dtype) -> tuple[Tensor, Tensor]:
    n, c, t, h, w = shape
    agg = agg.view(n, t, c, h, w).transpose(1, 2).to(dtype)
    corr = corr.view(n, t, -1, h, w).transpose(1, 2).to(dtype)
    return agg, corr


def sifa_attention_reference(x: Tensor, offset: Tensor, kernel_size: int = 3, dilation: int = 1) -> tuple[Tensor, Tensor]:
    """Plain PyTorch SIFA, the definition: returns (aggregation N,C,T,H,W, correlation N,K*K,T,H,W)."""
    n, c, t, h, w = x.shape
    kk = kernel_size * kernel_size
    if x.numel() == 0 or offset.numel() == 0:
        # Keep the autograd graph and the shapes without calling grid_sample on empty batches.
        return x * 0, offset[:, :kk] * 0
    shape, dtype = x.shape, x.dtype
    x, offset = _prepare(x, offset)
    y, xs = _sampling_positions(x, offset, kernel_size, dilation)
    frames, queries = _frames_and_queries(x)
    sampled = _bilinear(frames, y.reshape(n * t, kk * h, w), xs.reshape(n * t, kk * h, w)).view(n * t, c, kk, h, w)
    valid = _inside(y, xs, h, w).to(x.dtype)
    corr = torch.einsum("bckhw,bchw->bkhw", sampled, queries) * (valid / c)
    agg = torch.einsum("bckhw,bkhw->bchw", sampled, corr)
    return _restore(agg, corr, shape, dtype)


def sifa_attention_per_tap(x: Tensor, offset: Tensor, kernel_size: int = 3, dilation: int = 1) -> tuple[Tensor, Tensor]:
    """The same computation one tap at a time: never holds all K*K sampled maps at once.

    About 1.5x faster on CPU and K*K times less scratch memory; used for inference, where no
    intermediate needs to be kept for backward.
    """
    n, c, t, h, w = x.shape
    shape, dtype = x.shape, x.dtype
    x, offset = _prepare(x, offset)
    y, xs = _sampling_positions(x, offset, kernel_size, dilation)
    frames, queries = _frames_and_queries(x)
    valid = _inside(y, xs, h, w).to(x.dtype) / c
    corr = torch.empty_like(y)
    agg = torch.zeros_like(frames)
    for k in range(kernel_size * kernel_size):
        sampled = _bilinear(frames, y[:, k], xs[:, k])
        corr[:, k] = (sampled * queries).sum(dim=1) * valid[:, k]
        agg.addcmul_(sampled, corr[:, k : k + 1])
    return _restore(agg, corr, shape, dtype)


def _needs_no_grad(x: Tensor, offset: Tensor, kernel_size: int, dilation: int) -> bool:
    return x.numel() > 0 and not (torch.is_grad_enabled() and (x.requires_grad or offset.requires_grad))


@dataclass(frozen=True)
class _Kernel:
    name: str
    fn: Callable[[Tensor, Tensor, int, int], tuple[Tensor, Tensor]]
    can_run: Callable[[Tensor, Tensor, int, int], bool]


_KERNELS: list[_Kernel] = [_Kernel("per-tap", sifa_attention_per_tap, _needs_no_grad)]


@functools.lru_cache(maxsize=None)
def _triton_module():
    """sifa_cli.models.ops_triton, or None where Triton is not installed (it is optional) or does not load."""
    try:
        from sifa_cli.models import ops_triton
    except Exception:  # a broken Triton install must not break the plain path
        return None
    return ops_triton


def _triton_can_run(x: Tensor, offset: Tensor, kernel_size: int, dilation: int) -> bool:
    """The fused Triton kernel runs on CUDA (compute capability >= 7.0) where Triton is installed.

    SIFA_KERNEL=triton also selects it for CPU tensors, which only Triton's interpreter can run
    (TRITON_INTERPRET=1 set before Triton is imported): that is how the tests check it without a GPU.
    """
    if os.environ.get("SIFA_KERNEL") != "triton":
        if not x.is_cuda or torch.cuda.get_device_capability(x.device) < (7, 0):
            return False
    n, c, t, h, w = x.shape
    if x.numel() == 0 or x.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return False
    if max(c, 2 * kernel_size * kernel_size) * t * h * w >= 2**31:  # the kernels index a sample in int32
        return False
    module = _triton_module()
    return module is not None and (x.is_cuda or module.INTERPRETED)


def _triton_kernel(x: Tensor, offset: Tensor, kernel_size: int, dilation: int) -> tuple[Tensor, Tensor]:
    return _triton_module().sifa_attention_triton(x, offset, kernel_size, dilation)


_KERNELS.append(_Kernel("triton", _triton_kernel, _triton_can_run))


def register_kernel(
    name: str,
    fn: Callable[[Tensor, Tensor, int, int], tuple[Tensor, Tensor]],
    can_run: Callable[[Tensor, Tensor, int, int], bool],
) -> None:
    """Plug in a faster SIFA kernel. It is used where `can_run(x, offset, K, dilation)` is true."""
    _KERNELS.append(_Kernel(name, fn, can_run))


def select_kernel(x: Tensor, offset: Tensor, kernel_size: int, dilation: int) -> str:
    """Name of the kernel `sifa_attention` would use. SIFA_KERNEL=reference forces the plain one."""
    if os.environ.get("SIFA_KERNEL", "auto") != "reference":
        for kernel in reversed(_KERNELS):
            if kernel.can_run(x, offset, kernel_size, dilation):
                return kernel.name
    return "reference"


def sifa_attention(x: Tensor, offset: Tensor, kernel_size: int = 3, dilation: int = 1) -> tuple[Tensor, Tensor]:
    """SIFA correlation + aggregation. x: N,C,T,H,W; offset: N,2K²,T,H,W (channel 2k = dy, 2k+1 = dx).

    Returns (aggregated features N,C,T,H,W, correlation weights N,K²,T,H,W).
    """
    _check_inputs(x, offset, kernel_size, dilation)
    name = select_kernel(x, offset, kernel_size, dilation)
    for kernel in _KERNELS:
        if kernel.name == name:
            return kernel.fn(x, offset, kernel_size, dilation)
    return sifa_attention_reference(x, offset, kernel_size, dilation)


class SIFAAttention(nn.Module):
    """The operator as a module, so forward hooks can capture offsets and correlation weights.

    Called as `agg, corr = sifa(features, offsets)`; it has no parameters.
    """

    def __init__(self, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.dilation = dilation

    def forward(self, x: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
        return sifa_attention(x, offset, self.kernel_size, self.dilation)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, dilation={self.dilation}"


class FrozenCorrelationScale(nn.Module):
    """The reference's `def_cor.weight`: a C,T,K,K tensor filled with 1/C that is never trained.

    It exists so reference state dicts load with strict key matching. Its values are a constant of the
    operator (which uses 1/C directly), so on load any T is accepted and the tensor is regenerated.
    """

    def __init__(self, channels: int, frames: int, kernel_size: int):
        super().__init__()
        self.channels, self.kernel_size = channels, kernel_size
        self.register_buffer("weight", torch.full((channels, frames, kernel_size, kernel_size), 1.0 / channels))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key = prefix + "weight"
        if key not in state_dict:
            if strict:
                missing_keys.append(key)
            return
        loaded = state_dict[key]
        expected = (self.channels, self.kernel_size, self.kernel_size)
        if loaded.dim() != 4 or (loaded.shape[0], loaded.shape[2], loaded.shape[3]) != expected:
            error_msgs.append(
                f"size mismatch for {key}: expected ({self.channels}, T, {self.kernel_size}, "
                f"{self.kernel_size}), got {tuple(loaded.shape)}"
            )
            return
        frames = loaded.shape[1]
        self.weight = torch.full(
            (self.channels, frames, self.kernel_size, self.kernel_size),
            1.0 / self.channels,
            dtype=self.weight.dtype,
            device=self.weight.device,
        )
