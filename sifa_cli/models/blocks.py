"""Residual blocks of SIFA-Net (SIFA_SPEC.md sections 2 and 3) and the SIFA step they share with
SIFA-Transformer.

Names of attributes follow the reference code so its state dicts load with strict key matching:
conv1/bn1/conv2/bn2/conv3/bn3/downsample, fc1/fc2 (global context), conv_offset and def_cor (SIFA).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sifa_cli.models.motion_targets import displacement_target_loss
from sifa_cli.models.ops import FrozenCorrelationScale, SIFAAttention, sifa_padding


def conv1x1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=1, stride=(1, stride, stride), bias=False)


def conv1x3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                     padding=(0, 1, 1), bias=False)


def previous_frame(f: Tensor) -> Tensor:
    """f[t-1] at every t, with frame 0 standing in for its own predecessor."""
    return torch.cat((f[:, :, :1], f[:, :, :-1]), dim=2)


def difference_rescaled(f: Tensor) -> Tensor:
    """sigmoid(f_t - f_{t-1}) * f_t + f_t: features that stress what moved, fed to the offset conv."""
    return torch.sigmoid(f - previous_frame(f)) * f + f


def shift_to_query_frame(o: Tensor) -> Tensor:
    """Return O[t+1] to frame t (it was computed with query frame t); the last frame gets zeros."""
    return torch.cat((o[:, :, 1:], torch.zeros_like(o[:, :, :1])), dim=2)


class Bottleneck(nn.Module):
    """A ResNet bottleneck with 1x3x3 spatial convolutions (frames are processed independently)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.width = planes
        self.conv1 = conv1x1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv1x3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = conv1x1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def residual_branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.between_conv2_and_conv3(out)
        return self.bn3(self.conv3(out))

    def between_conv2_and_conv3(self, out: Tensor) -> Tensor:
        return out

    def identity(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual_branch(x) + self.identity(x))


class GlobalContextBottleneck(Bottleneck):
    """Reference GBottleneck: the residual sum also adds a squeeze-style global context vector."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__(inplanes, planes, stride, downsample)
        channels = planes * self.expansion
        self.fc1 = nn.Linear(channels, channels // 16)
        self.fc2 = nn.Linear(channels // 16, channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.residual_branch(x)
        context = self.fc2(torch.relu(self.fc1(out.mean(dim=(2, 3, 4)))))
        return self.relu(out + self.identity(x) + context[:, :, None, None, None])


def tap_grid(kernel_size: int, dilation: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """(dy, dx) of the K*K taps of the regular grid around a location, tap k = kh*K + kw: (K*K,) each."""
    taps = torch.arange(kernel_size, dtype=like.dtype, device=like.device) * dilation - sifa_padding(kernel_size, dilation)
    return taps.repeat_interleave(kernel_size), taps.repeat(kernel_size)


def attention_displacement(correlation: Tensor, offsets: Tensor, kernel_size: int, dilation: int,
                           temperature: Tensor | float = 1.0) -> Tensor:
    """Where each query finds its match in the next frame, relative to itself, in feature cells:
    sum over taps of softmax(temperature * correlation) * (regular tap + learned offset).

    correlation N,K*K,T,H,W and offsets N,2K*K,T,H,W as the SIFA operator takes and returns them;
    returns N,2,T,H,W with channel 0 = dy, 1 = dx (frame t's value is the step from frame t-1 to t).
    """
    n, kk, t, h, w = correlation.shape
    weights = torch.softmax(correlation * temperature, dim=1)
    tap_y, tap_x = tap_grid(kernel_size, dilation, correlation)
    off = offsets.view(n, kk, 2, t, h, w)
    dy = (weights * (off[:, :, 0] + tap_y.view(1, kk, 1, 1, 1))).sum(dim=1)
    dx = (weights * (off[:, :, 1] + tap_x.view(1, kk, 1, 1, 1))).sum(dim=1)
    return torch.stack((dy, dx), dim=1)


def alignment_loss(features: Tensor, moved: Tensor) -> Tensor:
    """How far each query is from what frame t holds at the place it says it matched: one minus the
    cosine similarity of the channel vectors of f[t-1] at (h, w) and f[t] at (h, w) + displacement,
    averaged over steps and places. Only the displacement gets gradients (the features are detached):
    the loss teaches the offsets and the attention to find where things went, without making the
    features easier to match. features N,C,T,H,W; moved N,2,T,H,W as `attention_displacement` returns."""
    n, c, t, h, w = features.shape
    if t < 2:
        return features.new_zeros(())
    f = features.detach()
    queries = f[:, :, :-1].transpose(1, 2).reshape(-1, c, h, w)
    keys = f[:, :, 1:].transpose(1, 2).reshape(-1, c, h, w)
    step = moved[:, :, 1:].transpose(1, 2).reshape(-1, 2, h, w)
    rows = torch.arange(h, dtype=moved.dtype, device=moved.device).view(1, h, 1)
    cols = torch.arange(w, dtype=moved.dtype, device=moved.device).view(1, 1, w)
    y, x = rows + step[:, 0], cols + step[:, 1]
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    found = torch.nn.functional.grid_sample(keys, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return 1 - torch.nn.functional.cosine_similarity(found, queries, dim=1, eps=1e-6).mean()


class SIFABottleneck(Bottleneck):
    """Reference DEFLocalTransBottleneck: a bottleneck with the SIFA step between conv2 and conv3.

    `frames` is the temporal length inside this block (clip_length // 4 in layers 2-4); it only sizes
    the constant `def_cor.weight` kept for the reference layout.

    `motion_readout` (compact SIFA-Nets of this project only, off in the reference models): the block
    also adds to its features a 1x1x1 projection of what the SIFA step found out about motion: the K*K
    correlations of each query (one per tap, in tap order) and its attention-weighted displacement
    (`attention_displacement`, with a learned softmax temperature). The SIFA step itself returns matched
    content, which looks the same whichever way the scene moved; the readout passes on *where* the match
    was found (see README, "SIFA that carries the motion"). In training such a
    block also keeps `alignment_loss` (see that function) for `SIFAModel.auxiliary_loss`, so that the
    displacement it passes on is where things really went.
    """

    is_sifa_block = True

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 kernel_size: int = 3, dilation: int = 1, frames: int = 4, motion_readout: bool = False):
        super().__init__(inplanes, planes, stride, downsample)
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.conv_offset = nn.Conv3d(planes, 2 * kernel_size * kernel_size, kernel_size=(1, 3, 3),
                                     padding=(0, 1, 1), bias=False)
        nn.init.zeros_(self.conv_offset.weight)
        self.def_cor = FrozenCorrelationScale(planes, frames, kernel_size)
        self.sifa = SIFAAttention(kernel_size, dilation)
        self.motion_readout = motion_readout
        if motion_readout:
            # Correlations of post-ReLU features differ by a fraction of one between taps; a softmax
            # at temperature 1 would be almost uniform, so the temperature starts at 10 and is learned.
            self.log_temperature = nn.Parameter(torch.tensor(math.log(10.0)))
            self.motion = nn.Conv3d(kernel_size * kernel_size + 2, planes, kernel_size=1, bias=False)
        self.alignment: Tensor | None = None  # kept by a training forward pass with the motion readout
        self.displacement: Tensor | None = None  # its displacements, for a loss against measured motion
        # Set by a model with a global-motion head: every forward pass keeps its displacements in
        # `kept_motion` for the head (global_motion.py) to read.
        self.keep_motion = False
        self.kept_motion: Tensor | None = None
        # Benchmarks switch this off to measure what the SIFA step costs; the block is then a bottleneck.
        self.sifa_enabled = True

    def readout_temperature(self) -> float:
        """The softmax temperature that turns correlations into attention weights for displacements."""
        return float(self.log_temperature.exp()) if self.motion_readout else 1.0

    def between_conv2_and_conv3(self, out: Tensor) -> Tensor:
        if not self.sifa_enabled:
            return out
        features = out
        offsets = self.conv_offset(difference_rescaled(features))
        aggregated, correlation = self.sifa(features, offsets)
        out = features + shift_to_query_frame(aggregated)
        if self.motion_readout:
            moved = attention_displacement(correlation, offsets, self.kernel_size, self.dilation,
                                           self.log_temperature.exp())
            out = out + self.motion(shift_to_query_frame(torch.cat((correlation, moved), dim=1)))
            if self.keep_motion:
                self.kept_motion = moved
            if self.training and torch.is_grad_enabled():
                self.alignment = alignment_loss(features, moved)
                self.displacement = moved
        return out


class SIFAModel(nn.Module):
    """What SIFA-Net and SIFA-Transformer share: finding and switching their SIFA blocks."""

    def sifa_blocks(self) -> list[tuple[str, nn.Module]]:
        """(name, block) of every block that runs the SIFA step, in forward order."""
        return [(name, m) for name, m in self.named_modules() if getattr(m, "is_sifa_block", False)]

    def auxiliary_loss(self, shifts: Tensor | None = None, translating: Tensor | None = None,
                       weight: float = 0.0, input_size: tuple[int, int, int] | None = None) -> Tensor | None:
        """The alignment losses the motion-readout blocks kept in the last training forward pass (summed,
        then forgotten), or None when no block kept one. With `weight` > 0 it adds, per block, `weight`
        times the displacement loss against `shifts` (`motion_targets.global_shifts` of the input clips,
        whose size T,H,W is `input_size`) over the clips where `translating` is true."""
        losses = []
        for _, block in self.sifa_blocks():
            if getattr(block, "alignment", None) is not None:
                losses.append(block.alignment)
                if weight > 0 and shifts is not None and block.displacement is not None:
                    losses.append(weight * displacement_target_loss(block.displacement, shifts, translating,
                                                                    input_size))
                block.alignment = None
                block.displacement = None
        return torch.stack(losses).sum() if losses else None

    def kept_motions(self) -> list[Tensor | None]:
        """The displacements each SIFA block kept in the last forward pass (None for a block whose SIFA
        step is off), in forward order, then forgotten."""
        kept = []
        for _, block in self.sifa_blocks():
            kept.append(block.kept_motion if block.sifa_enabled else None)
            block.kept_motion = None
        return kept

    def set_sifa_enabled(self, enabled: bool) -> None:
        """Switch the SIFA step of every block on or off (benchmarks measure its cost this way)."""
        for _, block in self.sifa_blocks():
            block.sifa_enabled = enabled
