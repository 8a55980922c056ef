"""SIFA models: the operator, SIFA-Net (ResNet) and SIFA-Transformer (Swin), and their registry.

    from sifa_cli.models import create_model, list_models, predict_proba
    model = create_model("sifa_resnet50", num_classes=400, clip_length=16)
    fast = prepare_for_inference(model.eval())   # same outputs, faster (inference only)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sifa_cli.models.inference import prepare_for_inference
from sifa_cli.models.ops import SIFAAttention, sifa_attention
from sifa_cli.models.registry import clean_reference_state_dict, create_model, list_models, register_model

__all__ = [
    "SIFAAttention",
    "clean_reference_state_dict",
    "create_model",
    "head_probabilities",
    "list_models",
    "predict_proba",
    "prepare_for_inference",
    "register_model",
    "sifa_attention",
]


def head_probabilities(outputs) -> Tensor:
    """Class probabilities from a model's output: the mean softmax of SIFA-Net's two heads, or the
    softmax of SIFA-Transformer's single logits."""
    heads = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return torch.stack([logits.float().softmax(dim=-1) for logits in heads]).mean(dim=0)


def predict_proba(model: nn.Module, x: Tensor) -> Tensor:
    """Class probabilities for clips x (see `head_probabilities`)."""
    return head_probabilities(model(x))
