"""Capture: what the SIFA blocks compute for one clip, recorded by forward hooks on their `sifa` modules
(the model's math is untouched, and the same forward pass gives the predicted label)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from sifa_cli.data.spec import InputSpec
from sifa_cli.errors import InputError, ModelError
from sifa_cli.models import predict_proba
from sifa_cli.models.ops import sifa_padding


@dataclass(frozen=True)
class BlockCapture:
    """What one SIFA block computed for one clip, on its feature grid.

    offsets: (F, K*K, 2, h, w) float32, [.., 0] = dy and [.., 1] = dx in feature pixels.
    correlation: (F, K*K, h, w) float32, the weight of each tap (no softmax; may be negative).
    temperature: the softmax temperature that turns correlations into attention weights for the block's
    displacements (its learned one for a block with a motion readout, else 1).
    """

    name: str
    offsets: np.ndarray
    correlation: np.ndarray
    kernel_size: int
    dilation: int
    channels: int
    temperature: float = 1.0

    @property
    def frames(self) -> int:
        return self.correlation.shape[0]

    @property
    def height(self) -> int:
        return self.correlation.shape[2]

    @property
    def width(self) -> int:
        return self.correlation.shape[3]

    def regular_taps(self) -> tuple[np.ndarray, np.ndarray]:
        """(dy, dx) of the K*K taps of the regular grid around a location, tap k = kh*K + kw."""
        taps = np.arange(self.kernel_size) * self.dilation - sifa_padding(self.kernel_size, self.dilation)
        return np.repeat(taps, self.kernel_size).astype(np.float32), np.tile(taps, self.kernel_size).astype(np.float32)

    def sample_positions(self, t: int) -> np.ndarray:
        """(K*K, 2, h, w): feature-grid y, x where each tap of each query samples frame t."""
        tap_y, tap_x = self.regular_taps()
        rows = np.arange(self.height, dtype=np.float32)[None, :, None]
        cols = np.arange(self.width, dtype=np.float32)[None, None, :]
        y = rows + tap_y[:, None, None] + self.offsets[t, :, 0]
        x = cols + tap_x[:, None, None] + self.offsets[t, :, 1]
        return np.stack((y, x), axis=1)


def sifa_block_names(model: nn.Module) -> list[str]:
    if not hasattr(model, "sifa_blocks"):
        raise ModelError(f"{type(model).__name__} is not a SIFA model: it has no SIFA blocks to show")
    return [name for name, _ in model.sifa_blocks()]


def select_blocks(model: nn.Module, block: str | None, default: str | None = None) -> list[str]:
    """Block names for --block: None = `default` (the checkpoint's `motion_block`, the block that carries
    the motion) when the model has it, else the first SIFA block (finest grid); 'all', or names joined by ','."""
    names = sifa_block_names(model)
    if not names:
        raise ModelError("this model has no SIFA blocks")
    if block is None or not block.strip():
        return [default] if default in names else names[:1]
    if block.strip() == "all":
        return names
    wanted = [part.strip() for part in block.split(",") if part.strip()]
    if not wanted:
        raise InputError(f"--block {block!r} names no block; give names separated by commas, or 'all'")
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise InputError(f"--block: no SIFA block named {unknown[0]!r}; this model has {', '.join(names)} (or 'all')")
    return list(dict.fromkeys(wanted))


def block_temperature(block: nn.Module) -> float:
    """The softmax temperature of a block's displacement readout (1 for blocks without one)."""
    return block.readout_temperature() if hasattr(block, "readout_temperature") else 1.0


def capture_sifa(model: nn.Module, clip: Tensor, names: Sequence[str] | None = None) -> tuple[dict[str, BlockCapture], Tensor]:
    """Run `model` on `clip` (1,3,T,H,W) in eval mode; return the captures of the named SIFA blocks
    (all when None) and the class probabilities (num_classes,)."""
    blocks = dict(model.sifa_blocks())
    names = list(blocks) if names is None else list(names)
    captured: dict[str, BlockCapture] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: tuple, outputs: tuple) -> None:
            features, offsets = inputs[0], inputs[1]
            correlation = outputs[1]
            n, channels, frames, height, width = features.shape
            kk = correlation.shape[1]
            captured[name] = BlockCapture(
                name=name,
                offsets=offsets[0].detach().float().cpu().numpy().reshape(kk, 2, frames, height, width).transpose(2, 0, 1, 3, 4).copy(),
                correlation=correlation[0].detach().float().cpu().numpy().transpose(1, 0, 2, 3).copy(),
                kernel_size=module.kernel_size,
                dilation=module.dilation,
                channels=channels,
                temperature=block_temperature(blocks[name]),
            )

        return hook

    handles = [blocks[name].sifa.register_forward_hook(hook_for(name)) for name in names]
    try:
        model.eval()
        with torch.inference_mode():
            probabilities = predict_proba(model, clip)[0].float().cpu()
    finally:
        for handle in handles:
            handle.remove()
    silent = [name for name in names if name not in captured]
    if silent:
        raise ModelError(f"SIFA block {silent[0]} did not run (its SIFA step is switched off)")
    if not bool(torch.isfinite(probabilities).all()):
        raise ModelError("the model's scores are not finite numbers (NaN or infinity); its weights may be damaged")
    return captured, probabilities


@dataclass(frozen=True)
class BlockInfo:
    name: str
    channels: int
    frames: int
    height: int
    width: int
    stride: float  # model input pixels per feature pixel
    kernel_size: int
    dilation: int


def describe_blocks(model: nn.Module, spec: InputSpec) -> list[BlockInfo]:
    """The SIFA blocks and their feature sizes for the model's own input size (one zero clip is run)."""
    device = next(model.parameters()).device
    clip = torch.zeros(1, 3, spec.frames, spec.size, spec.size, device=device)
    captures, _ = capture_sifa(model, clip)
    return [
        BlockInfo(name, c.channels, c.frames, c.height, c.width, spec.size / c.height, c.kernel_size, c.dilation)
        for name, c in captures.items()
    ]
