"""Start a video model from ImageNet image weights (SIFA_SPEC.md section 6, reference transfer_weights).

- every 2-D conv kernel O,I,kh,kw becomes O,I,1,kh,kw;
- the stem / tubelet embedding (temporal kernel k) holds the 2-D kernel at temporal index k // 2 and
  zeros elsewhere, so a static clip gives the image network's response;
- SIFA-Net: layer4 is copied into layer4_dual as well;
- classifier heads are dropped; what the image model lacks (global-context fc1/fc2, conv_offset,
  temporal conv, tda_norm) keeps its fresh initialisation.
"""

from __future__ import annotations

from torch import Tensor, nn

from sifa_cli.errors import WeightsError
from sifa_cli.models.registry import clean_reference_state_dict

_HEAD_PREFIXES = ("fc.", "head.", "fc_dual.")
# Buffers that our Swin rebuilds from its own geometry rather than trusting a file.
_REGENERATED = ("relative_position_index", "attn_mask")


def inflate_kernel(weight: Tensor, frames: int) -> Tensor:
    """O,I,kh,kw -> O,I,frames,kh,kw with the image kernel at the middle index (frames // 2)."""
    out = weight.new_zeros(weight.shape[:2] + (frames,) + weight.shape[2:])
    out[:, :, frames // 2] = weight
    return out


def inflate_state_dict(image_state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Map an ImageNet ResNet-50 (torchvision layout) or Swin (official layout) state dict onto `model`."""
    image_state = clean_reference_state_dict(image_state)
    target = model.state_dict()
    is_resnet = hasattr(model, "layer4_dual")
    result: dict[str, Tensor] = {}
    usable = {k: v for k, v in image_state.items()
              if not (k.startswith(_HEAD_PREFIXES) or k.endswith(_REGENERATED) or k.startswith("patch_embed.norm."))}
    unknown = [k for k in usable if k not in target]
    if len(unknown) > 0.1 * max(len(usable), 1):
        raise WeightsError(
            f"{len(unknown)} of {len(usable)} ImageNet tensors have no place in {type(model).__name__} "
            f"(first: {unknown[0]}): these weights are for another architecture"
        )
    for key, value in usable.items():
        if key not in target:
            continue
        expected = target[key].shape
        if value.dim() == 4 and len(expected) == 5:
            value = inflate_kernel(value, expected[2])
        if value.shape != expected:
            raise WeightsError(f"ImageNet weight {key} has shape {tuple(value.shape)}, model expects {tuple(expected)}")
        result[key] = value.to(target[key].dtype)
        if is_resnet and key.startswith("layer4."):
            result["layer4_dual." + key[len("layer4."):]] = result[key]
    return result


def load_imagenet_weights(model: nn.Module, image_state: dict[str, Tensor]) -> list[str]:
    """Load inflated ImageNet weights into `model`; returns the keys left at their fresh init.

    Raises WeightsError when the weights do not belong to this architecture.
    """
    inflated = inflate_state_dict(image_state, model)
    missing, _ = model.load_state_dict(inflated, strict=False)
    return [k for k in missing if not k.endswith("num_batches_tracked")]

