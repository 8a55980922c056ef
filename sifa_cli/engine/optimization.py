"""The optimisation pieces of `sifa finetune`'s loop: the learning-rate schedule, the optimizer and
its parameter groups, the loss, a frozen backbone, the divergence check, and the random-number
state saved for an exact resume.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sifa_cli.engine.train_config import TrainConfig
from sifa_cli.errors import ModelError

# Parameters of these modules form the classifier; --freeze-backbone trains only them.
HEAD_MODULES = ("fc", "fc_dual", "motion_head")


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule


def get_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup from base_lr/warmup_steps
    to base_lr over `warmup_steps` steps, then a cosine decay that reaches min_lr at total_steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# Parameters, optimizer, loss, divergence


def head_parameter(name: str) -> bool:
    return name.split(".", 1)[0] in HEAD_MODULES


def freeze_backbone(model: nn.Module) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(head_parameter(name))


def set_train_mode(model: nn.Module, backbone_frozen: bool) -> None:
    """Training mode, except that a frozen backbone keeps its normalisation statistics fixed."""
    model.train()
    if backbone_frozen:
        for name, module in model.named_modules():
            if name and not head_parameter(name) and isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def check_finite(model: nn.Module, train_loss: float, val_loss: float, epoch: int, lr: float,
                 best_checkpoint: Optional[Path], best_epoch: Optional[int]) -> None:
    """Stop a run whose loss or weights stopped being finite numbers, before anything of that epoch
    is saved: the checkpoints and training state of the last good epoch stay as they were."""
    if not math.isfinite(train_loss):
        bad = f"the training loss is {train_loss}"
    elif not math.isfinite(val_loss):
        bad = f"the validation loss is {val_loss}"
    else:
        broken = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        if not broken:
            return
        bad = f"{len(broken)} parameter tensors hold NaN or infinite values (first: {broken[0]})"
    kept = (f"the last good checkpoint, from epoch {best_epoch}, is {best_checkpoint}" if best_checkpoint
            else "no epoch finished before, so there is no checkpoint")
    raise ModelError(f"training diverged in epoch {epoch}: {bad}; nothing of this epoch was saved and {kept}. "
                     f"Try a lower --lr (this run uses {lr:g})")


def make_optimizer(model: nn.Module, config: TrainConfig, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW; biases and normalisation weights get no weight decay. The SIFA
    offset convolutions learn at `config.offset_lr_scale` times the rate (the group's `lr_scale`)."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            offset = config.offset_lr_scale != 1.0 and ".conv_offset." in f".{name}"
            groups.setdefault((parameter.dim() > 1, offset), []).append(parameter)
    param_groups = [{"params": params, "weight_decay": weight_decay if decays else 0.0,
                     "lr_scale": config.offset_lr_scale if offset else 1.0}
                    for (decays, offset), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))]
    for group in param_groups:
        group["lr"] = lr * group["lr_scale"]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr)
    return torch.optim.SGD(param_groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)


def classification_loss(outputs, labels: Tensor, label_smoothing: float) -> Tensor:
    """Cross-entropy of every head, summed (SIFA-Net trains its main and dual heads together)."""
    heads = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return sum(F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing) for logits in heads)


# ---------------------------------------------------------------------------------------------
# RNG state, for an exact resume


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": random.getstate(),
    }


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(_as_tuples(state["python"]))


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
