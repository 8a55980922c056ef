"""SIFA-Net: a C2D ResNet with SIFA bottlenecks and a dual temporal path (SIFA_SPEC.md section 4).

Paper: "Stand-Alone Inter-Frame Attention in Video Models", Long et al., CVPR 2022. Reference code:
model/c2d_sifa_resnet.py (c2d_sifa_resnet50 / c2d_sifa_resnet101).

What differs from the reference:
- conv_offset starts at zero as the paper describes; the reference's network-wide kaiming loop
  overwrites that zero init, so an untrained reference block does not sample the regular grid.
- compact members (sifa_resnet_tiny / _small) keep the block design, dual path included, with fewer
  channels and blocks, for CPU work.
- the motion members (sifa_motion_tiny / _small, the shipped default's design) also change two things
  so that motion can only be seen through the SIFA step: a frame-wise stem (1x7x7, `stem_frames=1`,
  every clip frame is a feature frame; the reference's 4x7x7 stem already sees the motion inside each
  group of 4 frames, and a model built on it learned to leave its SIFA steps unused), and the motion
  readout of every SIFA block (blocks.SIFABottleneck). Without its SIFA steps such a model is blind to
  the order of frames: everything else is per frame or pooled symmetrically over time.

Layout: stem (4x7x7 conv, temporal stride 4; 1x7x7 and stride 1 for `stem_frames=1`) -> layer1 (plain bottlenecks;
with `sifa_layer1`, a compact-model option, its odd blocks are SIFA bottlenecks) -> layers 2-4 alternating
global-context and SIFA bottlenecks. layer4 runs on layer3's output; layer4_dual (stride 1) runs on
layer3's output max-pooled 2x in time. Each path has its own head; `forward` returns both logits.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from sifa_cli.data.spec import MAX_CLIP_FRAMES
from sifa_cli.errors import ModelError
from sifa_cli.models.blocks import Bottleneck, GlobalContextBottleneck, SIFABottleneck, SIFAModel, conv1x1x1
from sifa_cli.models.global_motion import GlobalMotionHead
from sifa_cli.models.registry import register_model

STEM_TEMPORAL_STRIDE = 4  # the reference stem's temporal kernel and stride
DUAL_TEMPORAL_POOL = 2


class SIFAResNet(SIFAModel):
    """SIFA-Net. Input N,3,T,H,W with T a multiple of 2 * stem_frames (8 for the reference stem);
    returns (main_logits, dual_logits)."""

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        num_classes: int = 400,
        clip_length: int = 16,
        kernel_size: int = 3,
        dilation: int | Sequence[int] = 1,
        dropout: float = 0.5,
        stem_frames: int = STEM_TEMPORAL_STRIDE,
        motion_readout: bool = False,
        sifa_layer1: bool = False,
        global_motion: bool = False,
    ):
        super().__init__()
        multiple = stem_frames * DUAL_TEMPORAL_POOL
        if stem_frames < 1 or clip_length % multiple or not 0 < clip_length <= MAX_CLIP_FRAMES:
            raise ModelError(f"clip_length must be a multiple of {multiple} between {multiple} and "
                             f"{MAX_CLIP_FRAMES} for this SIFA-Net, got {clip_length}")
        self.num_classes = num_classes
        self.clip_length = clip_length
        self.kernel_size = kernel_size
        self.stem_frames = stem_frames
        expansion = Bottleneck.expansion
        frames = clip_length // stem_frames

        self.conv1 = nn.Conv3d(3, stem_width, kernel_size=(stem_frames, 7, 7), stride=(stem_frames, 2, 2),
                               padding=(0, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

        if sifa_layer1 and layers[0] < 2:
            raise ModelError(f"sifa_layer1 turns layer1's second block into a SIFA block; this SIFA-Net's layer1 "
                             f"has {layers[0]}")
        d2, d3, d4 = stage_dilations(dilation)
        sifa_args = dict(kernel_size=kernel_size, motion_readout=motion_readout)
        # sifa_layer1 (compact models only): layer1's odd blocks run the SIFA step too, on cells of 4
        # input pixels (layer2's are 8), for motion finer than layer2's taps resolve
        self.layer1 = _make_layer(stem_width, widths[0], layers[0], 1, sifa="odd" if sifa_layer1 else False,
                                  frames=frames, dilation=1, **sifa_args)
        self.layer2 = _make_layer(widths[0] * expansion, widths[1], layers[1], 2, sifa=True, frames=frames,
                                  dilation=d2, **sifa_args)
        self.layer3 = _make_layer(widths[1] * expansion, widths[2], layers[2], 2, sifa=True, frames=frames,
                                  dilation=d3, **sifa_args)
        self.layer4 = _make_layer(widths[2] * expansion, widths[3], layers[3], 2, sifa=True, frames=frames,
                                  dilation=d4, **sifa_args)
        self.maxpool_dual = nn.MaxPool3d(kernel_size=(DUAL_TEMPORAL_POOL, 1, 1), stride=(DUAL_TEMPORAL_POOL, 1, 1))
        self.layer4_dual = _make_layer(widths[2] * expansion, widths[3], layers[3], 1, sifa=True,
                                       frames=frames // DUAL_TEMPORAL_POOL, dilation=d4, **sifa_args)

        self.num_features = widths[3] * expansion
        self.drop = nn.Dropout(dropout)
        self.drop_dual = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.fc_dual = nn.Linear(self.num_features, num_classes)
        self._init_weights()
        # global_motion (compact motion models only): class scores from a similarity-motion fit to every
        # SIFA block's displacement field (global_motion.py), added to both heads' logits
        self.motion_head: GlobalMotionHead | None = None
        if global_motion:
            if not motion_readout:
                raise ModelError("global_motion reads the displacements of the SIFA motion readout; "
                                 "it needs motion_readout")
            blocks = self.sifa_blocks()
            for _, block in blocks:
                block.keep_motion = True
            self.motion_head = GlobalMotionHead(len(blocks), num_classes)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)  # each residual branch starts as identity
            if isinstance(m, SIFABottleneck):
                nn.init.zeros_(m.conv_offset.weight)  # an untrained block samples the regular grid

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)
        self.fc_dual = nn.Linear(self.num_features, num_classes)
        if self.motion_head is not None:
            self.motion_head.reset_classifier(num_classes)

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ModelError(f"SIFA-Net expects clips of shape N,3,T,H,W; got {tuple(x.shape)}")
        multiple = self.stem_frames * DUAL_TEMPORAL_POOL
        if x.shape[2] == 0 or x.shape[2] % multiple:
            raise ModelError(f"this SIFA-Net needs a number of frames that is a multiple of {multiple}; got {x.shape[2]}")

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Feature maps of the main and the dual path (N, C, T/s, H/32, W/32) and (N, C, T/2s, ...), s the
        stem's temporal stride."""
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.layer4(x), self.layer4_dual(self.maxpool_dual(x))

    def forward_head(self, features: tuple[Tensor, Tensor], pre_logits: bool = False):
        main, dual = (f.mean(dim=(2, 3, 4)) for f in features)
        if pre_logits:
            return main, dual
        return self.fc(self.drop(main)), self.fc_dual(self.drop_dual(dual))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.motion_head is None:
            return self.forward_head(self.forward_features(x))
        return self.forward_with_motions(x)[0]

    def forward_with_motions(self, x: Tensor) -> tuple[tuple[Tensor, Tensor], list[Tensor | None]]:
        """The logits of `forward` and the displacements the SIFA blocks kept on the way (those with
        `keep_motion` set; None for the others), which a global-motion head reads."""
        main, dual = self.forward_head(self.forward_features(x))
        kept = self.kept_motions()
        if self.motion_head is not None:
            motion = self.motion_head(kept, main)
            main, dual = main + motion.to(main.dtype), dual + motion.to(dual.dtype)
        return (main, dual), kept


def stage_dilations(dilation: int | Sequence[int]) -> tuple[int, int, int]:
    """The SIFA taps' dilation in layer2, layer3 and layer4 (layer4_dual too): one number for all, or
    three (the compact models' finer layer2 maps can use a wider window than layer4's 4x4 cells)."""
    values = (dilation,) * 3 if isinstance(dilation, int) else tuple(dilation)
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise ModelError(f"dilation must be a positive whole number or three of them (layer2, layer3, layer4), "
                         f"got {dilation!r}")
    return values


def _make_layer(inplanes: int, planes: int, blocks: int, stride: int, *, sifa: bool | str, frames: int,
                kernel_size: int, dilation: int, motion_readout: bool) -> nn.Sequential:
    """A stage. With sifa=True blocks alternate global-context (even) and SIFA (odd) bottlenecks; with
    sifa="odd" the even ones stay plain bottlenecks."""
    out_planes = planes * Bottleneck.expansion
    layers: list[nn.Module] = []
    for i in range(blocks):
        block_in = inplanes if i == 0 else out_planes
        block_stride = stride if i == 0 else 1
        downsample = None
        if i == 0 and (stride != 1 or inplanes != out_planes):
            downsample = nn.Sequential(conv1x1x1(inplanes, out_planes, stride), nn.BatchNorm3d(out_planes))
        if not sifa or (sifa == "odd" and i % 2 == 0):
            layers.append(Bottleneck(block_in, planes, block_stride, downsample))
        elif i % 2 == 0:
            layers.append(GlobalContextBottleneck(block_in, planes, block_stride, downsample))
        else:
            layers.append(SIFABottleneck(block_in, planes, block_stride, downsample,
                                         kernel_size=kernel_size, dilation=dilation, frames=frames,
                                         motion_readout=motion_readout))
    return nn.Sequential(*layers)


@register_model
def sifa_resnet50(**kwargs) -> SIFAResNet:
    """SIFA-Net R50 (reference c2d_sifa_resnet50), dual path included."""
    return SIFAResNet(layers=(3, 4, 6, 3), **kwargs)


@register_model
def sifa_resnet101(**kwargs) -> SIFAResNet:
    """SIFA-Net R101 (reference c2d_sifa_resnet101)."""
    return SIFAResNet(layers=(3, 4, 23, 3), **kwargs)


@register_model
def sifa_resnet_small(**kwargs) -> SIFAResNet:
    """Compact SIFA-Net for CPU use: quarter widths, two blocks a stage (sifa_resnet_small_camera, the earlier
    default)."""
    return SIFAResNet(layers=(2, 2, 2, 2), widths=(16, 32, 64, 128), stem_width=16, **kwargs)


@register_model
def sifa_resnet_tiny(**kwargs) -> SIFAResNet:
    """Smallest SIFA-Net, for tests: every block type and the dual path, eighth widths."""
    return SIFAResNet(layers=(1, 2, 2, 2), widths=(8, 16, 32, 64), stem_width=8, **kwargs)


@register_model
def sifa_motion_small(**kwargs) -> SIFAResNet:
    """The shipped default's design: sifa_resnet_small with a frame-wise stem and the SIFA motion readout,
    so that the order of frames reaches the classifier only through the SIFA steps."""
    return SIFAResNet(layers=(2, 2, 2, 2), widths=(16, 32, 64, 128), stem_width=16,
                      **{"stem_frames": 1, "motion_readout": True, **kwargs})


@register_model
def sifa_motion_tiny(**kwargs) -> SIFAResNet:
    """sifa_resnet_tiny built like sifa_motion_small, for tests."""
    return SIFAResNet(layers=(1, 2, 2, 2), widths=(8, 16, 32, 64), stem_width=8,
                      **{"stem_frames": 1, "motion_readout": True, **kwargs})
