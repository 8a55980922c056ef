"""SIFA-Transformer: a Swin Transformer run frame by frame with SIFA between frames
(SIFA_SPEC.md section 5; reference model/c2d_sifa_swin.py, c2d_sifa_swin_vit_{s,b,l}_p4_w7).

A tubelet embedding (Conv3d, temporal kernel and stride `early_stride`) turns each group of
`early_stride` frames into one token map; token frames go through the Swin stages as a batch of
images. In every block, after window attention and its residual:
- unshifted blocks run the SIFA step over token frames, through a zero-initialised LayerNorm
  `tda_norm`, added as a residual;
- shifted blocks add a temporal 1x3 convolution `conv` over token frames.
The head averages the logits of the token frames.

What differs from the reference:
- `learn_offsets=True` (default) predicts offsets with a `conv_offset` from difference-rescaled
  features, as SIFA-Net does; the reference fixed them at zero. `learn_offsets=False` gives the
  reference layout and behaviour.
- Frame sizes that are not a multiple of 32 * window are padded inside window attention (padded keys
  are masked), so any frame size divisible by 32 works; at the built size nothing is padded.
- The clip length is read from the input, so one model accepts any multiple of `early_stride` frames;
  `clip_length` only sizes the constant `def_cor.weight` kept for the reference layout.
- The temporal `conv` starts at zero (the reference zeroes it when transferring ImageNet weights).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sifa_cli.data.spec import MAX_CLIP_FRAMES
from sifa_cli.errors import ModelError
from sifa_cli.models.blocks import SIFAModel, difference_rescaled, shift_to_query_frame
from sifa_cli.models.ops import FrozenCorrelationScale, SIFAAttention
from sifa_cli.models.registry import register_model

MASKED = -100.0  # the reference's additive mask value for keys a query must not see


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: Tensor, ws: int) -> Tensor:
    """B,H,W,C -> (B * windows), ws*ws, C."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: Tensor, ws: int, h: int, w: int) -> Tensor:
    """(B * windows), ws*ws, C -> B,H,W,C."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window_size - 1) + rel[..., 1])
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(b // windows, windows, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(b, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


def attention_mask(height: int, width: int, window: int, shift: int, device=None) -> Tensor | None:
    """Additive mask (windows, ws*ws, ws*ws) for a height x width map padded up to whole windows.

    Keys from another region of the cyclic shift, or from padding, get MASKED. None when nothing is masked.
    """
    hp, wp = -(-height // window) * window, -(-width // window) * window
    if shift == 0 and (hp, wp) == (height, width):
        return None
    region = torch.zeros(hp, wp, device=device)
    if shift > 0:
        bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        for i, hs in enumerate(bands):
            for j, ws in enumerate(bands):
                region[hs, ws] = i * 3 + j
    padding = torch.ones(hp, wp, device=device)
    padding[:height, :width] = 0
    padding = torch.roll(padding, shifts=(-shift, -shift), dims=(0, 1))
    region = window_partition(region[None, :, :, None], window).squeeze(-1)
    padding = window_partition(padding[None, :, :, None], window).squeeze(-1)
    blocked = (region[:, None, :] != region[:, :, None]) | (padding[:, None, :] > 0)
    return torch.zeros(blocked.shape, device=device).masked_fill(blocked, MASKED)


class SIFASwinBlock(nn.Module):
    """A Swin block followed by the SIFA step (unshifted blocks) or a temporal conv (shifted blocks)."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window_size: int = 7,
                 shift_size: int = 0, mlp_ratio: float = 4.0, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, kernel_size: int = 3, dilation: int = 1, frames: int = 4,
                 learn_offsets: bool = True):
        super().__init__()
        self.input_resolution = input_resolution
        if min(input_resolution) <= window_size:
            # The map fits in one window: no shifting, and the window shrinks to the map (as in Swin).
            shift_size, window_size = 0, min(input_resolution)
        self.window_size, self.shift_size = window_size, shift_size
        self.is_sifa_block = shift_size == 0
        self.learn_offsets = learn_offsets

        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.register_buffer("attn_mask", attention_mask(*input_resolution, window_size, shift_size)
                             if shift_size > 0 else None)

        self.def_cor = FrozenCorrelationScale(dim, frames, kernel_size)
        self.conv = nn.Conv2d(dim, dim, kernel_size=(1, 3), padding=(0, 1), bias=False)
        nn.init.zeros_(self.conv.weight)
        self.tda_norm = nn.LayerNorm(dim)
        nn.init.zeros_(self.tda_norm.weight)
        nn.init.zeros_(self.tda_norm.bias)
        if learn_offsets and self.is_sifa_block:
            self.conv_offset = nn.Conv3d(dim, 2 * kernel_size * kernel_size, kernel_size=(1, 3, 3),
                                         padding=(0, 1, 1), bias=False)
            nn.init.zeros_(self.conv_offset.weight)
        self.sifa = SIFAAttention(kernel_size, dilation)
        self.sifa_enabled = True
        self._masks: dict[tuple, Tensor | None] = {}

    def _mask(self, h: int, w: int, device) -> Tensor | None:
        if (h, w) == tuple(self.input_resolution):
            return self.attn_mask
        key = (h, w, str(device))
        if key not in self._masks:
            self._masks[key] = attention_mask(h, w, self.window_size, self.shift_size, device)
        return self._masks[key]

    def window_attention(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        ws, shift = self.window_size, self.shift_size
        x = self.norm1(x).view(b, h, w, c)
        pad_h, pad_w = (-h) % ws, (-w) % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = window_reverse(self.attn(window_partition(x, ws), self._mask(h, w, x.device)), ws, hp, wp)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x[:, :h, :w].reshape(b, h * w, c)

    def sifa_step(self, x: Tensor, frames: int, h: int, w: int) -> Tensor:
        """Tokens (N*T, H*W, C) -> tokens + tda_norm(SIFA aggregation returned to its query frame)."""
        nt, _, c = x.shape
        f = x.view(nt // frames, frames, h, w, c).permute(0, 4, 1, 2, 3)  # N,C,T,H,W
        if self.learn_offsets:
            offsets = self.conv_offset(difference_rescaled(f))
        else:
            offsets = f.new_zeros(f.shape[0], 2 * self.sifa.kernel_size ** 2, frames, h, w)
        aggregated, _ = self.sifa(f, offsets)
        shifted = shift_to_query_frame(aggregated).permute(0, 2, 3, 4, 1).reshape(nt, h * w, c)
        return x + self.tda_norm(shifted)

    def temporal_conv(self, x: Tensor, frames: int) -> Tensor:
        nt, length, c = x.shape
        y = x.view(nt // frames, frames, length, c).transpose(1, 3)  # N,C,L,T
        return x + self.conv(y).transpose(1, 3).reshape(nt, length, c)

    def forward(self, x: Tensor, frames: int, h: int, w: int) -> Tensor:
        x = x + self.drop_path(self.window_attention(x, h, w))
        if self.is_sifa_block:
            if self.sifa_enabled:
                x = self.sifa_step(x, frames, h, w)
        else:
            x = self.temporal_conv(x, frames)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Concatenate 2x2 neighbours and project 4C -> 2C: halves the token map."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SIFABasicLayer(nn.Module):
    """One Swin stage: blocks alternating unshifted (SIFA) and shifted (temporal conv), then merging."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int,
                 window_size: int, drop_path: Sequence[float], downsample: bool, **block_kwargs):
        super().__init__()
        self.blocks = nn.ModuleList(
            SIFASwinBlock(dim, input_resolution, num_heads, window_size,
                          shift_size=0 if i % 2 == 0 else window_size // 2, drop_path=drop_path[i], **block_kwargs)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor, frames: int, h: int, w: int) -> tuple[Tensor, int, int]:
        for block in self.blocks:
            x = block(x, frames, h, w)
        if self.downsample is not None:
            x, h, w = self.downsample(x, h, w), h // 2, w // 2
        return x, h, w


class TubeletEmbed(nn.Module):
    def __init__(self, early_stride: int, patch_size: int, embed_dim: int):
        super().__init__()
        kernel = (early_stride, patch_size, patch_size)
        self.proj = nn.Conv3d(3, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class SIFASwinTransformer(SIFAModel):
    """SIFA-Transformer. Input N,3,T,H,W (T a multiple of early_stride, H and W of 32); returns logits."""

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        img_size: int = 224,
        early_stride: int = 4,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.3,
        dropout: float = 0.0,
        num_classes: int = 400,
        clip_length: int = 16,
        kernel_size: int = 3,
        dilation: int = 1,
        learn_offsets: bool = True,
    ):
        super().__init__()
        if early_stride < 1 or clip_length % early_stride or not 0 < clip_length <= MAX_CLIP_FRAMES:
            raise ModelError(f"clip_length must be a multiple of early_stride={early_stride} between {early_stride} "
                             f"and {MAX_CLIP_FRAMES}, got {clip_length}")
        self.num_classes = num_classes
        self.clip_length = clip_length
        self.early_stride, self.patch_size = early_stride, patch_size
        self.kernel_size = kernel_size
        self.num_layers = len(depths)
        self.num_features = embed_dim * 2 ** (self.num_layers - 1)
        self.patch_embed = TubeletEmbed(early_stride, patch_size, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # stochastic depth grows linearly
        resolution = img_size // patch_size
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(SIFABasicLayer(
                embed_dim * 2 ** i, (resolution // 2 ** i, resolution // 2 ** i), depth, num_heads[i],
                window_size, rates[start:start + depth], downsample=i < self.num_layers - 1,
                mlp_ratio=mlp_ratio, drop=drop_rate, attn_drop=attn_drop_rate, kernel_size=kernel_size,
                dilation=dilation, frames=clip_length // early_stride, learn_offsets=learn_offsets,
            ))
        self.norm = nn.LayerNorm(self.num_features)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # LayerNorms start at weight 1 / bias 0 by default, except tda_norm which SIFASwinBlock zeroes.

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ModelError(f"SIFA-Transformer expects clips of shape N,3,T,H,W; got {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        if t == 0 or t % self.early_stride:
            raise ModelError(f"SIFA-Transformer needs a number of frames that is a multiple of {self.early_stride}; got {t}")
        multiple = self.patch_size * 2 ** (self.num_layers - 1)
        if h % multiple or w % multiple:
            raise ModelError(f"SIFA-Transformer needs frame sizes divisible by {multiple}; got {h}x{w}")

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features of every token frame: (N * T/early_stride, C)."""
        self.check_input(x)
        n, c, t, h, w = x.shape
        frames = t // self.early_stride
        x = x.view(n, c, frames, self.early_stride, h, w).transpose(1, 2)
        x = self.patch_embed(x.reshape(n * frames, c, self.early_stride, h, w))
        h, w = x.shape[-2:]
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        for layer in self.layers:
            x, h, w = layer(x, frames, h, w)
        return self.norm(x).mean(dim=1)

    def forward_head(self, features: Tensor, frames: int) -> Tensor:
        logits = self.fc(self.drop(features))
        return logits.view(-1, frames, logits.shape[-1]).mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x), x.shape[2] // self.early_stride)


@register_model
def sifa_swin_s(**kwargs) -> SIFASwinTransformer:
    """SIFA-Transformer on Swin-S (reference c2d_sifa_swin_vit_s_p4_w7)."""
    kwargs.setdefault("drop_path_rate", 0.3)
    return SIFASwinTransformer(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), **kwargs)


@register_model
def sifa_swin_b(**kwargs) -> SIFASwinTransformer:
    """SIFA-Transformer on Swin-B (reference c2d_sifa_swin_vit_b_p4_w7)."""
    kwargs.setdefault("drop_path_rate", 0.5)
    return SIFASwinTransformer(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), **kwargs)


@register_model
def sifa_swin_l(**kwargs) -> SIFASwinTransformer:
    """SIFA-Transformer on Swin-L (reference c2d_sifa_swin_vit_l_p4_w7)."""
    kwargs.setdefault("drop_path_rate", 0.5)
    return SIFASwinTransformer(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), **kwargs)


@register_model
def sifa_swin_nano(**kwargs) -> SIFASwinTransformer:
    """A two-stage SIFA-Transformer for tests and CPU experiments (not a published configuration)."""
    kwargs.setdefault("drop_path_rate", 0.0)
    kwargs.setdefault("img_size", 64)
    return SIFASwinTransformer(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, **kwargs)
