"""SIFA models: the operator, SIFA-Net (ResNet) and SIFA-Transformer (Swin), and their registry.

    from sifa_cli.models import create_model, list_models, predict_proba
    model = create_model("sifa_resnet50", num_classes=400, clip_length=16)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sifa_cli.models.ops import SIFAAttention, sifa_attention
from sifa_cli.models.registry import clean_reference_state_dict, create_model, list_models, register_model

__all__ = [
    "SIFAAttention",
    "clean_reference_state_dict",
    "create_model",
    "list_models",
    "predict_proba",
    "register_model",
    "sifa_attention",
]


def predict_proba(model: nn.Module, x: Tensor) -> Tensor:
    """Class probabilities for clips x: SIFA-Net averages the softmaxes of its two heads."""
    logits = model(x)
    if isinstance(logits, (tuple, list)):
        return torch.stack([l.float().softmax(dim=-1) for l in logits]).mean(dim=0)
    return logits.float().softmax(dim=-1)
