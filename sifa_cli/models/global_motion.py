"""A global-motion head for the motion SIFA-Nets: what the SIFA blocks' displacement fields say about
the picture as a whole, fitted and classified.

The motion readout of each SIFA block (`blocks.SIFABottleneck`) adds its displacements to the
features, and the classifier sees them after an average over places. That average answers "which way
do things move on average", but not two questions a camera-move classifier needs:

- is the motion a *zoom*: displacements pointing away from (or toward) the centre average to zero;
  only their correlation with position shows it;
- does the *whole picture* move, or one large object in a fixed shot: a hand swinging a cup across a
  third of the frame pulls the mean as a slow pan would, but not the median, and it leaves a large
  residual around any single global motion.

`motion_statistics` fits, per clip, feature step and block, a similarity motion (translation, scale,
rotation: least squares over the block's places, in units of half the frame) to the displacement field
and measures how well it fits (the residual, the share of places it explains) and the median
translation; `GlobalMotionHead` pools those over time and turns them into class scores that are added
to both of the SIFA-Net's heads. The head reads nothing but the SIFA steps' displacements: with the
SIFA steps switched off it sees zeros and adds a constant.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Per feature step: translation x/y, scale, rotation (the similarity fit), median x/y, the residual's
# root mean square, the root mean square displacement, the share of places the fit explains.
STEP_STATISTICS = ("tx", "ty", "scale", "rotation", "median_x", "median_y", "residual", "magnitude",
                   "explained")
# Pooled over steps: the mean of each, then the mean size of the four fitted parameters (a motion that
# goes back and forth averages to zero, its size does not).
POOLED_SIZES = ("abs_tx", "abs_ty", "abs_scale", "abs_rotation")
STATISTICS_PER_BLOCK = len(STEP_STATISTICS) + len(POOLED_SIZES)


def centred_grid(h: int, w: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Cell centres in units of half the frame: y in (-1, 1) down the rows, x in (-1, 1) across."""
    y = (torch.arange(h, dtype=like.dtype, device=like.device) + 0.5) * (2.0 / h) - 1.0
    x = (torch.arange(w, dtype=like.dtype, device=like.device) + 0.5) * (2.0 / w) - 1.0
    return y.view(h, 1).expand(h, w), x.view(1, w).expand(h, w)


def motion_statistics(moved: Tensor) -> Tensor:
    """Per clip and feature step, the statistics of STEP_STATISTICS: N,len(STEP_STATISTICS),T-1.

    moved N,2,T,H,W (dy, dx in feature cells; step t is the motion from frame t-1 to t, and step 0,
    frame 0 against itself, is left out) as `blocks.attention_displacement` returns it."""
    n, _, t, h, w = moved.shape
    steps = moved[:, :, 1:].float()
    # to units of half the frame, the unit of the centred grid
    dy = steps[:, 0] * (2.0 / h)
    dx = steps[:, 1] * (2.0 / w)
    gy, gx = centred_grid(h, w, dy)
    norm = (gx * gx + gy * gy).mean()
    tx, ty = dx.mean(dim=(2, 3)), dy.mean(dim=(2, 3))
    # least squares for d = t + s * p + r * perp(p) over places; the grid is centred, so the
    # translation is the mean and the scale and rotation are projections
    scale = (dx * gx + dy * gy).mean(dim=(2, 3)) / norm
    rotation = (dy * gx - dx * gy).mean(dim=(2, 3)) / norm
    fit_x = tx[..., None, None] + scale[..., None, None] * gx - rotation[..., None, None] * gy
    fit_y = ty[..., None, None] + scale[..., None, None] * gy + rotation[..., None, None] * gx
    residual_sq = ((dx - fit_x) ** 2 + (dy - fit_y) ** 2).mean(dim=(2, 3))
    magnitude_sq = (dx * dx + dy * dy).mean(dim=(2, 3))
    explained = 1.0 - residual_sq / (magnitude_sq + 1e-4)
    median_x = dx.flatten(2).median(dim=2).values
    median_y = dy.flatten(2).median(dim=2).values
    return torch.stack((tx, ty, scale, rotation, median_x, median_y, residual_sq.sqrt(), magnitude_sq.sqrt(),
                        explained), dim=1)


def pooled_statistics(moved: Tensor) -> Tensor:
    """One block's statistics pooled over the clip's steps: N,STATISTICS_PER_BLOCK."""
    per_step = motion_statistics(moved)
    if per_step.shape[2] == 0:
        return per_step.new_zeros(per_step.shape[0], STATISTICS_PER_BLOCK)
    return torch.cat((per_step.mean(dim=2), per_step[:, :4].abs().mean(dim=2)), dim=1)


class GlobalMotionHead(nn.Module):
    """Class scores from the pooled motion statistics of `blocks` SIFA blocks: normalised, then a small
    two-layer classifier. The last layer starts at zero, so adding the head to a trained model leaves
    its predictions as they were until the head is trained."""

    def __init__(self, blocks: int, num_classes: int, hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        self.blocks = blocks
        features = blocks * STATISTICS_PER_BLOCK
        self.norm = nn.BatchNorm1d(features)
        self.hidden = nn.Linear(features, hidden)
        self.drop = nn.Dropout(dropout)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """A last layer for `num_classes`, at zero: the head adds nothing until it is trained."""
        self.out = nn.Linear(self.hidden.out_features, num_classes)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def statistics(self, displacements: list[Tensor | None], like: Tensor) -> Tensor:
        """The head's input: each block's pooled statistics side by side (zeros for a block whose SIFA
        step is switched off)."""
        n = like.shape[0]
        parts = [pooled_statistics(d) if d is not None else like.new_zeros(n, STATISTICS_PER_BLOCK).float()
                 for d in displacements]
        return torch.cat(parts, dim=1)

    def forward(self, displacements: list[Tensor | None], like: Tensor) -> Tensor:
        x = self.statistics(displacements, like)
        if self.training and x.shape[0] == 1:
            # a batch of one has no spread to normalise by: the running statistics stand in
            x = F.batch_norm(x, self.norm.running_mean, self.norm.running_var, self.norm.weight, self.norm.bias,
                             False, 0.0, self.norm.eps)
        else:
            x = self.norm(x)
        return self.out(self.drop(torch.relu(self.hidden(x))))
