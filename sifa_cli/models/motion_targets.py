"""A displacement loss against the scene's measured motion, for the motion-readout SIFA blocks.

The alignment loss (`blocks.alignment_loss`) lets each SIFA block find on its own where things went;
on layer2's coarse cells its displacements come out at about a third of the true motion (README,
"SIFA that carries the motion"). Where a training clip is known to be one global translation of the
scene (a pan or a tilt: the config key `translation_classes`), its motion can be measured from the clip
itself and the displacements taught to match it:

- `global_shifts` measures, between consecutive frames of the model's input (after cropping and
  resizing, so the crop's scale and the clip's time step are accounted for), the translation of the
  whole picture by phase correlation, with a sub-pixel peak;
- `displacement_target_loss` compares each block's per-place displacement (feature cells, per feature
  step) with that translation brought to the block's grid: divided by the block's spatial stride and
  summed over the input frames one feature step spans. A Huber loss per place keeps a small moving
  object from pulling hard.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def _peak_offset(below: Tensor, at: Tensor, above: Tensor) -> Tensor:
    """Sub-sample position of a peak from the values around it (a parabola through three points)."""
    curvature = below - 2 * at + above
    return torch.where(curvature < -1e-12, 0.5 * (below - above) / curvature.clamp(max=-1e-12),
                       torch.zeros_like(at))


def global_shifts(clips: Tensor) -> Tensor:
    """The translation of the picture from each frame to the next, in input pixels: N,2,T-1 (dy, dx),
    positive when the content moves down / right. clips N,C,T,H,W (any normalisation)."""
    n, _, t, h, w = clips.shape
    if t < 2:
        return clips.new_zeros(n, 2, 0)
    gray = clips.detach().float().mean(dim=1)  # N,T,H,W
    gray = gray - gray.mean(dim=(2, 3), keepdim=True)
    window = torch.outer(torch.hann_window(h, periodic=False, device=clips.device),
                         torch.hann_window(w, periodic=False, device=clips.device))
    spectra = torch.fft.rfft2(gray * window)
    cross = spectra[:, 1:] * spectra[:, :-1].conj()
    surface = torch.fft.irfft2(cross / cross.abs().clamp_min(1e-9), s=(h, w))  # N,T-1,H,W
    flat = surface.flatten(2).argmax(dim=2)
    py, px = flat // w, flat % w
    rows = torch.arange(n * (t - 1), device=clips.device)
    s = surface.reshape(n * (t - 1), h, w)
    py, px = py.reshape(-1), px.reshape(-1)
    at = s[rows, py, px]
    dy = _peak_offset(s[rows, (py - 1) % h, px], at, s[rows, (py + 1) % h, px])
    dx = _peak_offset(s[rows, py, (px - 1) % w], at, s[rows, py, (px + 1) % w])
    # the surface wraps around: a peak past the middle is a negative shift
    y = torch.where(py > h // 2, py - h, py).to(surface.dtype) + dy
    x = torch.where(px > w // 2, px - w, px).to(surface.dtype) + dx
    return torch.stack((y, x), dim=1).reshape(n, t - 1, 2).transpose(1, 2).to(clips.dtype)


def block_targets(shifts: Tensor, input_size: tuple[int, int, int], grid: tuple[int, int, int]) -> Tensor:
    """`global_shifts` (N,2,T_in-1, input pixels) brought to a block's grid (T,H,W): feature cells per
    feature step, N,2,T-1 (step t is from feature frame t-1 to t)."""
    t_in, h_in, w_in = input_size
    t, h, w = grid
    stride_t = max(1, round(t_in / t))
    n = shifts.shape[0]
    # feature frame k holds input frames k*s .. k*s+s-1: its step from frame k-1 sums s input steps
    steps = shifts[:, :, : stride_t * (t - 1)].reshape(n, 2, t - 1, stride_t).sum(dim=3)
    scale = shifts.new_tensor([h / h_in, w / w_in]).view(1, 2, 1)
    return steps * scale


def displacement_target_loss(moved: Tensor, shifts: Tensor, mask: Tensor, input_size: tuple[int, int, int],
                             beta: float = 1.0) -> Tensor:
    """Huber loss (in feature cells) between a block's displacements `moved` (N,2,T,H,W, as
    `blocks.attention_displacement` returns) and the clip's measured translation, averaged over the
    places and steps of the clips where `mask` (N, bool) is true. Zero when no clip is masked in."""
    n, _, t, h, w = moved.shape
    if t < 2 or not bool(mask.any()):
        return moved.new_zeros(())
    target = block_targets(shifts, input_size, (t, h, w)).to(moved.dtype)  # N,2,T-1
    per_place = F.smooth_l1_loss(moved[:, :, 1:], target[..., None, None].expand(n, 2, t - 1, h, w),
                                 beta=beta, reduction="none")
    return per_place[mask].mean()
