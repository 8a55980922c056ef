"""`prepare_for_inference(model)`: the same function as an eval-mode model, computed faster.

SIFA-Net is a C2D network: after the stem every convolution is 1 x k x k, so each frame goes through
the backbone on its own and only the SIFA step, the global context and the dual path's pooling look
across frames. The prepared SIFA-Net therefore runs a clip as a batch of N*T frames through 2D
convolutions, channels-last (the layout oneDNN's CPU kernels are fastest in), with every BatchNorm
folded into the convolution before it, and its SIFA step is the channels-last gather kernel
(ops_gather.py) run only for the frames whose result is kept. The 4 x 7 x 7 stem with temporal
stride 4 becomes a 7 x 7 convolution over 12 channels (4 frames x RGB).

Between blocks activations stay N,C,T,H,W tensors (channels-last views of the N*T frames), so the
blocks keep their names and interfaces: `sifa_blocks()`, `set_sifa_enabled()`, `forward_features`
and forward hooks on a block's `sifa` module all work as on the plain model. While such a hook is
registered (and on devices other than the CPU), the block calls its `sifa` module with the operator's
own N,C,T,H,W inputs and outputs (so `sifa visualize` sees exactly what the plain model computes), at
the cost of the frame-0 saving. Under ONNX export the SIFA step is written with grid_sample
(`sifa_step_grid_sample`), which exports as a standard operator.

The prepared model is for inference only: its parameters are folded copies (no gradients, not the
reference state-dict layout). Save and load checkpoints with the plain model. Models other than
SIFA-Net (SIFA-Transformer) are returned unchanged: they already get the gather kernel through the
operator's dispatch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sifa_cli.models.blocks import (Bottleneck, GlobalContextBottleneck, SIFABottleneck, SIFAModel, attention_displacement,
                                    difference_rescaled)
from sifa_cli.models.ops import SIFAAttention, sifa_padding
from sifa_cli.models.ops_gather import sifa_step_channels_last
from sifa_cli.models.sifa_resnet import DUAL_TEMPORAL_POOL, SIFAResNet

__all__ = ["prepare_for_inference", "InferenceSIFAResNet"]

CHANNELS_LAST = torch.channels_last


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """The fastest equivalent of an eval-mode `model` for inference; `model` itself is not changed.

    SIFA-Net becomes an `InferenceSIFAResNet` (2D channels-last convolutions with folded BatchNorm,
    the channels-last SIFA step); any other model is returned as it is.
    """
    if model.training:
        raise ValueError("prepare_for_inference expects a model in eval mode (call model.eval() first)")
    if isinstance(model, SIFAResNet) and not isinstance(model, InferenceSIFAResNet):
        return InferenceSIFAResNet(model)
    return model


# ---------------------------------------------------------------------------------------------
# Layout helpers: N,C,T,H,W views  <->  N*T channels-last frames


def frames_of(x: Tensor) -> Tensor:
    """N,C,T,H,W -> (N*T, C, H, W) channels-last; a view when x is already channels-last-3d."""
    n, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(n * t, c, h, w).contiguous(memory_format=CHANNELS_LAST)


def clip_of(frames: Tensor, t: int) -> Tensor:
    """(N*T, C, H, W) -> N,C,T,H,W view of the same memory."""
    bt, c, h, w = frames.shape
    return frames.view(bt // t, t, c, h, w).transpose(1, 2)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv3d, bn: nn.BatchNorm3d | None) -> nn.Conv2d:
    """A Conv2d computing bn(conv(x)) on frames, for a 1 x k x k Conv3d (computed in float64)."""
    if conv.kernel_size[0] != 1 or conv.stride[0] != 1 or conv.padding[0] != 0 or conv.dilation[0] != 1:
        raise ValueError(f"only 1 x k x k convolutions run on frames, got {conv}")
    weight = conv.weight[:, :, 0].double()
    bias = conv.bias.double() if conv.bias is not None else None
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size[1:], stride=conv.stride[1:],
                       padding=conv.padding[1:], dilation=conv.dilation[1:], groups=conv.groups,
                       bias=bn is not None or bias is not None)
    if bn is not None:
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = bn.bias.double() + ((bias if bias is not None else 0) - bn.running_mean.double()) * scale
    folded.weight.data = weight.to(conv.weight).contiguous(memory_format=CHANNELS_LAST)
    if bias is not None:
        folded.bias.data = bias.to(conv.weight)
    return folded.requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Blocks


class InferenceBottleneck(nn.Module):
    """A folded bottleneck; takes and returns N,C,T,H,W channels-last clips."""

    def __init__(self, block: Bottleneck):
        super().__init__()
        self.conv1 = fold_conv_bn(block.conv1, block.bn1)
        self.conv2 = fold_conv_bn(block.conv2, block.bn2)
        self.conv3 = fold_conv_bn(block.conv3, block.bn3)
        self.downsample = None
        if block.downsample is not None:
            conv, bn = block.downsample
            self.downsample = fold_conv_bn(conv, bn)

    def residual(self, x: Tensor, t: int) -> Tensor:
        out = torch.relu_(self.conv1(x))
        out = torch.relu_(self.conv2(out))
        return self.conv3(self.between_conv2_and_conv3(out, t))

    def between_conv2_and_conv3(self, out: Tensor, t: int) -> Tensor:
        return out

    def identity(self, x: Tensor) -> Tensor:
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[2]
        frames = frames_of(x)
        out = self.residual(frames, t)
        out += self.identity(frames)
        return clip_of(torch.relu_(out), t)


class InferenceGlobalContextBottleneck(InferenceBottleneck):
    def __init__(self, block: GlobalContextBottleneck):
        super().__init__(block)
        self.fc1 = copy.deepcopy(block.fc1)
        self.fc2 = copy.deepcopy(block.fc2)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[2]
        frames = frames_of(x)
        out = self.residual(frames, t)
        clip = clip_of(out, t)
        context = self.fc2(torch.relu(self.fc1(clip.mean(dim=(2, 3, 4)))))
        out += self.identity(frames)
        clip += context[:, :, None, None, None]
        return clip_of(torch.relu_(out), t)


class InferenceSIFABottleneck(InferenceBottleneck):
    is_sifa_block = True

    def __init__(self, block: SIFABottleneck):
        super().__init__(block)
        self.kernel_size = block.kernel_size
        self.conv_offset = fold_conv_bn(block.conv_offset, None)
        self.sifa = SIFAAttention(block.sifa.kernel_size, block.sifa.dilation)
        self.sifa_enabled = block.sifa_enabled
        self.motion_readout = block.motion_readout
        if self.motion_readout:
            self.log_temperature = nn.Parameter(block.log_temperature.detach().clone(), requires_grad=False)
            self.motion = fold_conv_bn(block.motion, None)
        self.keep_motion = block.keep_motion
        self.kept_motion = None

    def readout_temperature(self) -> float:
        return float(self.log_temperature.exp()) if self.motion_readout else 1.0

    def between_conv2_and_conv3(self, out: Tensor, t: int) -> Tensor:
        if not self.sifa_enabled:
            return out
        if self.motion_readout:
            return self.step_with_readout(out, t)
        exporting = torch.onnx.is_in_onnx_export()
        if exporting:  # standard operators only: no writes into slices
            offsets = self.conv_offset(frames_of(difference_rescaled(clip_of(out, t))))
            return sifa_step_grid_sample(out, offsets, t, self.sifa.kernel_size, self.sifa.dilation)
        offsets = self.conv_offset(difference_rescaled_frames(out, t))
        if _has_hooks(self.sifa) or out.device.type != "cpu":
            # The operator module itself: hooks see its usual N,C,T,H,W inputs and outputs, and on a
            # GPU it dispatches to the kernels registered for that device.
            aggregated, _ = self.sifa(clip_of(out, t), clip_of(offsets, t))
            shifted = out.clone(memory_format=CHANNELS_LAST)
            if t > 1:
                clip_of(shifted, t)[:, :, :-1] += aggregated[:, :, 1:]
            return shifted
        return sifa_step_channels_last(out, offsets, t, self.sifa.kernel_size, self.sifa.dilation)


    def step_with_readout(self, out: Tensor, t: int) -> Tensor:
        """The SIFA step and the motion readout (blocks.SIFABottleneck), through the operator module."""
        clip = clip_of(out, t)
        offsets = self.conv_offset(frames_of(difference_rescaled(clip)))
        aggregated, correlation = self.sifa(clip, clip_of(offsets, t))
        moved = attention_displacement(correlation, clip_of(offsets, t), self.sifa.kernel_size, self.sifa.dilation,
                                       self.log_temperature.exp())
        if self.keep_motion:
            self.kept_motion = moved
        result = out.clone(memory_format=CHANNELS_LAST)
        if t > 1:
            clip_of(result, t)[:, :, :-1] += aggregated[:, :, 1:]
            readout = torch.cat((correlation, moved), dim=1)[:, :, 1:]
            clip_of(result, t)[:, :, :-1] += clip_of(self.motion(frames_of(readout)), t - 1)
        return result


def sifa_step_grid_sample(features: Tensor, offsets: Tensor, t: int, kernel_size: int, dilation: int) -> Tensor:
    """`sifa_step_channels_last` in standard ONNX operators (GridSample, opset 16), for export.

    All K*K taps are sampled by one grid_sample. As in the gather kernel, the reference's validity
    test needs no mask here: a point outside (-1, H) x (-1, W) samples only zero padding.
    """
    bt, c, h, w = features.shape
    if t < 2:  # a single frame has no next frame to take a result from
        return features
    kk = kernel_size * kernel_size
    f = features.view(bt // t, t, c, h, w)
    keys = f[:, 1:].reshape(-1, c, h, w)
    queries = f[:, :-1].reshape(-1, c, 1, h, w)
    off = offsets.view(bt // t, t, kk, 2, h, w)[:, 1:].reshape(-1, kk, 2, h, w)
    taps = torch.arange(kernel_size, dtype=features.dtype, device=features.device) * dilation - sifa_padding(kernel_size, dilation)
    rows = torch.arange(h, dtype=features.dtype, device=features.device).view(1, 1, h, 1)
    cols = torch.arange(w, dtype=features.dtype, device=features.device).view(1, 1, 1, w)
    y = off[:, :, 0] + rows + taps.repeat_interleave(kernel_size).view(1, kk, 1, 1)
    x = off[:, :, 1] + cols + taps.repeat(kernel_size).view(1, kk, 1, 1)
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1).view(-1, kk * h, w, 2)
    sampled = F.grid_sample(keys, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(-1, c, kk, h, w)
    corr = (sampled * queries).sum(dim=1, keepdim=True) / c
    agg = (sampled * corr).sum(dim=2).view(bt // t, t - 1, c, h, w)
    shifted = torch.cat((agg, torch.zeros_like(agg[:, :1])), dim=1).view(bt, c, h, w)
    return features + shifted


def difference_rescaled_frames(f: Tensor, t: int) -> Tensor:
    """`blocks.difference_rescaled` on channels-last frames: sigmoid(f_t - f_{t-1}) * f_t + f_t."""
    bt, c, h, w = f.shape
    d = torch.empty_like(f, memory_format=CHANNELS_LAST)
    f_clip, d_clip = f.view(bt // t, t, c, h, w), d.view(bt // t, t, c, h, w)
    torch.sub(f_clip[:, 1:], f_clip[:, :-1], out=d_clip[:, 1:])
    d_clip[:, 0] = 0  # frame 0 is its own predecessor
    return torch.addcmul(f, d.sigmoid_(), f)


def _has_hooks(module: nn.Module) -> bool:
    from torch.nn.modules import module as module_globals

    return bool(module._forward_hooks or module._forward_pre_hooks
                or module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks)


_CONVERT = {
    SIFABottleneck: InferenceSIFABottleneck,
    GlobalContextBottleneck: InferenceGlobalContextBottleneck,
    Bottleneck: InferenceBottleneck,
}


def _convert_layer(layer: nn.Sequential) -> nn.Sequential:
    return nn.Sequential(*(_CONVERT[type(block)](block) for block in layer))


# ---------------------------------------------------------------------------------------------
# The model


class InferenceSIFAResNet(SIFAResNet):
    """SIFA-Net for inference: same outputs as the plain model it was made from (see module doc)."""

    def __init__(self, model: SIFAResNet):
        SIFAModel.__init__(self)
        self.num_classes, self.clip_length, self.kernel_size = model.num_classes, model.clip_length, model.kernel_size
        self.num_features = model.num_features
        self.stem_frames = model.stem_frames
        stem = model.conv1
        if stem.kernel_size[0] != self.stem_frames or stem.stride[0] != self.stem_frames or stem.padding[0]:
            raise ValueError(f"unexpected SIFA-Net stem {stem}")
        # A 4 x 7 x 7 convolution with temporal stride 4 sees each group of 4 frames once: a 2D
        # convolution over 3 * 4 input channels (channel c * 4 + dt).
        stem2d = nn.Conv3d(stem.in_channels * self.stem_frames, stem.out_channels, (1, *stem.kernel_size[1:]),
                           stride=(1, *stem.stride[1:]), padding=(0, *stem.padding[1:]), bias=False)
        stem2d = stem2d.to(stem.weight)
        with torch.no_grad():
            stem2d.weight.copy_(stem.weight.reshape(stem.out_channels, -1, 1, *stem.kernel_size[1:]))
        self.conv1 = fold_conv_bn(stem2d, model.bn1)
        self.maxpool = nn.MaxPool2d(kernel_size=model.maxpool.kernel_size[1:], stride=model.maxpool.stride[1:],
                                    padding=model.maxpool.padding[1:])
        self.layer1 = _convert_layer(model.layer1)
        self.layer2 = _convert_layer(model.layer2)
        self.layer3 = _convert_layer(model.layer3)
        self.layer4 = _convert_layer(model.layer4)
        self.layer4_dual = _convert_layer(model.layer4_dual)
        self.fc = copy.deepcopy(model.fc)
        self.fc_dual = copy.deepcopy(model.fc_dual)
        self.motion_head = copy.deepcopy(model.motion_head) if model.motion_head is not None else None
        self.drop = nn.Identity()
        self.drop_dual = nn.Identity()
        self.requires_grad_(False)
        self.eval()

    def stem(self, x: Tensor) -> Tensor:
        n, c, t, h, w = x.shape
        groups = t // self.stem_frames
        frames = (x.reshape(n, c, groups, self.stem_frames, h, w).permute(0, 2, 1, 3, 4, 5)
                  .reshape(n * groups, c * self.stem_frames, h, w).contiguous(memory_format=CHANNELS_LAST))
        return clip_of(self.maxpool(torch.relu_(self.conv1(frames))), groups)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.check_input(x)
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        # MaxPool3d(2x1x1) over time, as the elementwise max of even and odd frames (layout kept).
        pooled = torch.maximum(x[:, :, 0::DUAL_TEMPORAL_POOL], x[:, :, 1::DUAL_TEMPORAL_POOL])
        return self.layer4(x), self.layer4_dual(pooled)

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError("change the classifier of the plain model, then prepare it again")
