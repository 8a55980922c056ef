"""SIFA-Net and SIFA-Transformer: reference layout, shapes, the SIFA step's behaviour, inflation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sifa_cli.errors import ModelError, WeightsError
from sifa_cli.models import create_model, list_models, predict_proba
from sifa_cli.models.blocks import SIFABottleneck, alignment_loss
from sifa_cli.models.inflate import load_imagenet_weights
from sifa_cli.models.sifa_swin import attention_mask

FIXTURES = Path(__file__).parent / "fixtures"


def _reference_keys(file: str, arch: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / file).read_text())[arch]


@pytest.mark.parametrize(
    "file,reference,ours,kwargs",
    [
        ("official_keys_sifa_resnet.json", "c2d_sifa_resnet50", "sifa_resnet50", dict(clip_length=16)),
        ("official_keys_sifa_resnet.json", "c2d_sifa_resnet101", "sifa_resnet101", dict(clip_length=16)),
        ("official_keys_sifa_swin.json", "c2d_sifa_swin_vit_s_p4_w7", "sifa_swin_s", dict(clip_length=64, learn_offsets=False)),
        ("official_keys_sifa_swin.json", "c2d_sifa_swin_vit_b_p4_w7", "sifa_swin_b", dict(clip_length=64, learn_offsets=False)),
    ],
)
def test_reference_state_dict_loads_strictly(file, reference, ours, kwargs):
    keys = _reference_keys(file, reference)
    model = create_model(ours, num_classes=400, **kwargs)
    ours_shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours_shapes == keys
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=generator) if shape else torch.tensor(3) for k, shape in keys.items()}
    model.load_state_dict(state, strict=True)
    probe = next(k for k in keys if k.endswith("conv1.weight") or k.endswith("qkv.weight"))
    assert torch.equal(model.state_dict()[probe], state[probe])


def test_def_cor_is_regenerated_for_any_clip_length():
    keys = _reference_keys("official_keys_sifa_resnet.json", "c2d_sifa_resnet50")
    state = {k: torch.zeros(shape) for k, shape in keys.items()}  # def_cor sized for 16 frames, values 0
    model = create_model("sifa_resnet50", num_classes=400, clip_length=32)
    model.load_state_dict(state, strict=True)
    weight = model.layer2[1].def_cor.weight
    assert weight.shape == (128, 4, 3, 3) and torch.allclose(weight, torch.full_like(weight, 1 / 128))


def test_registry_names_and_errors():
    names = list_models()
    for name in ["sifa_resnet50", "sifa_resnet101", "sifa_swin_s", "sifa_swin_b", "sifa_swin_l"]:
        assert name in names
    compact = list_models("sifa_resnet*")
    assert {"sifa_resnet_tiny", "sifa_resnet_small"} <= set(compact)
    with pytest.raises(ModelError, match="unknown model"):
        create_model("resnet9000")


def test_compact_default_model_size():
    model = create_model("sifa_resnet_small", num_classes=400)
    params = sum(p.numel() for p in model.parameters())
    assert 1e6 < params < 5e6  # "a few million"; fp32 checkpoint well under 20 MB
    assert len(model.sifa_blocks()) == 4 and hasattr(model, "layer4_dual")


@pytest.mark.parametrize("frames,size", [(8, 64), (16, 96), (24, 64)])
def test_sifa_net_any_clip_length_and_size(frames, size):
    model = create_model("sifa_resnet_tiny", num_classes=7, clip_length=16).eval()
    main, dual = model(torch.randn(2, 3, frames, size, size))
    assert main.shape == dual.shape == (2, 7)
    probs = predict_proba(model, torch.randn(1, 3, frames, size, size))
    torch.testing.assert_close(probs.sum(-1), torch.ones(1))


def test_sifa_net_rejects_bad_clip_lengths():
    model = create_model("sifa_resnet_tiny", num_classes=3)
    with pytest.raises(ModelError, match="multiple of 8"):
        model(torch.randn(1, 3, 12, 64, 64))
    with pytest.raises(ModelError, match="multiple of 8"):
        create_model("sifa_resnet_tiny", clip_length=12)


@pytest.mark.parametrize("size", [64, 96, 32])
def test_sifa_transformer_any_size_divisible_by_32(size):
    model = create_model("sifa_swin_nano", num_classes=5).eval()
    assert model(torch.randn(1, 3, 8, size, size)).shape == (1, 5)
    with pytest.raises(ModelError, match="divisible"):
        model(torch.randn(1, 3, 8, 60, 64))


def test_swin_mask_at_built_size_matches_buffer_and_padding_is_masked():
    model = create_model("sifa_swin_s", num_classes=10, clip_length=8)
    block = model.layers[0].blocks[1]
    assert torch.equal(attention_mask(56, 56, 7, 3), block.attn_mask)
    padded = attention_mask(5, 5, 4, 0)  # 5x5 map padded to 8x8 windows of 4
    assert padded.shape == (4, 16, 16)
    assert (padded[0, :, :] == 0).sum() == 16 * 16 and (padded[3, :, 1:] == -100).all()


def test_swin_learned_offsets_start_as_the_reference():
    torch.manual_seed(0)
    learned = create_model("sifa_swin_nano", num_classes=4, learn_offsets=True).eval()
    fixed = create_model("sifa_swin_nano", num_classes=4, learn_offsets=False).eval()
    for name, p in learned.named_parameters():  # make tda_norm non-zero so SIFA really contributes
        if "tda_norm.weight" in name:
            p.data.fill_(0.5)
    fixed.load_state_dict({k: v for k, v in learned.state_dict().items() if "conv_offset" not in k}, strict=True)
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(learned(x), fixed(x))
        learned.set_sifa_enabled(False)
        assert not torch.allclose(learned(x), fixed(x))


def _block_with_offset_field(dx: float) -> SIFABottleneck:
    """A SIFA block whose conv_offset outputs dx for every tap, given a constant channel 0 of 1.

    Channel 0 is 1 in every frame, so the difference-rescaled input there is sigmoid(0) * 1 + 1 = 1.5.
    """
    block = SIFABottleneck(inplanes=8, planes=2, kernel_size=3, frames=2)
    with torch.no_grad():
        block.conv_offset.weight.zero_()
        block.conv_offset.weight[1::2, 0, 0, 1, 1] = dx / 1.5  # horizontal channels, centre tap, channel 0
    return block


def test_known_offset_field_moves_features_the_expected_way():
    # An object (channel 1) at column 2 in frame 0 moves to column 3 in frame 1.
    f = torch.zeros(1, 2, 2, 5, 6)
    f[:, 0] = 1.0
    f[0, 1, 0, 2, 2] = 4.0
    f[0, 1, 1, 2, 3] = 4.0
    seen = {}
    for dx in (1.0, 0.0, -1.0):
        block = _block_with_offset_field(dx)
        block.sifa.register_forward_hook(lambda m, inp, out, dx=dx: seen.__setitem__(dx, (inp[1], out[1])))
        out = block.between_conv2_and_conv3(f)
        offsets, corr = seen[dx]
        torch.testing.assert_close(offsets[:, 1::2], torch.full_like(offsets[:, 1::2], dx))
        assert offsets[:, 0::2].abs().max() == 0
        # Frame 0 receives what SIFA found in frame 1 for its query at the object's position.
        moved = out[0, 1, 0, 2, 2] - f[0, 1, 0, 2, 2]
        if dx == 1.0:
            # Centre tap now samples frame 1 at column 3: the object; correlation (1 + 16) / 2.
            assert corr[0, 4, 1, 2, 2].item() == pytest.approx(8.5)
            assert moved.item() > 30
        else:
            assert corr[0, 4, 1, 2, 2].item() == pytest.approx(0.5)
    # With dx = 0 the object is found only by the right-hand tap (k = 5) of the regular grid.
    block = _block_with_offset_field(0.0)
    block.sifa.register_forward_hook(lambda m, inp, out: seen.__setitem__("corr0", out[1]))
    block.between_conv2_and_conv3(f)
    assert seen["corr0"][0, 5, 1, 2, 2].item() == pytest.approx(8.5)


def test_disabling_sifa_turns_blocks_into_plain_bottlenecks():
    torch.manual_seed(0)
    model = create_model("sifa_resnet_tiny", num_classes=3).eval()
    for m in model.modules():  # give every residual branch a voice (bn3 starts at zero)
        if hasattr(m, "bn3"):
            m.bn3.weight.data.fill_(1.0)
        if isinstance(m, SIFABottleneck):
            m.conv_offset.weight.data.normal_(0, 0.1)
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        with_sifa = model(x)[0]
        model.set_sifa_enabled(False)
        without = model(x)[0]
    assert not torch.allclose(with_sifa, without)


def _torchvision_style_resnet(model) -> dict[str, torch.Tensor]:
    """The 2-D ImageNet layout (torchvision names) of a SIFA-Net: what transfer starts from."""
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith(("layer4_dual", "fc_dual")) or k.endswith(("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")):
            continue
        if "conv_offset" in k or "def_cor" in k:
            continue
        state[k] = torch.randn(v.shape[:2] + v.shape[3:]) if v.dim() == 5 else torch.randn_like(v.float()).to(v.dtype)
    state["fc.weight"] = torch.randn(1000, state["fc.weight"].shape[1])
    state["fc.bias"] = torch.randn(1000)
    return state


def test_imagenet_inflation_resnet():
    model = create_model("sifa_resnet_tiny", num_classes=5).eval()
    image = _torchvision_style_resnet(model)
    left = load_imagenet_weights(model, {"state_dict": {"module." + k: v for k, v in image.items()}})
    assert all(k.startswith(("fc.", "fc_dual.")) or "fc1" in k or "fc2" in k or "conv_offset" in k or "def_cor" in k for k in left)
    stem = model.conv1.weight
    torch.testing.assert_close(stem[:, :, 2], image["conv1.weight"])
    assert stem[:, :, [0, 1, 3]].abs().max() == 0
    torch.testing.assert_close(model.layer4_dual[0].conv2.weight, model.layer4[0].conv2.weight)
    # A static clip through the inflated stem equals the 2-D convolution of the frame.
    frame = torch.randn(1, 3, 32, 32)
    clip = frame[:, :, None].expand(1, 3, 4, 32, 32)
    torch.testing.assert_close(model.conv1(clip)[:, :, 0], F.conv2d(frame, image["conv1.weight"], stride=2, padding=3))


def test_imagenet_inflation_swin_and_wrong_architecture():
    model = create_model("sifa_swin_nano", num_classes=5)
    image = {}
    for k, v in model.state_dict().items():
        if any(s in k for s in ("def_cor", "tda_norm", "conv_offset", ".conv.weight", "fc.")):
            continue
        image[k] = v[:, :, 0].clone() + 1 if k == "patch_embed.proj.weight" else v.clone()
    image["patch_embed.norm.weight"] = torch.ones(16)
    image["head.weight"] = torch.randn(21841, model.num_features)
    load_imagenet_weights(model, {"model": image})
    assert model.patch_embed.proj.weight[:, :, 2].sum() == image["patch_embed.proj.weight"].sum()
    with pytest.raises(WeightsError, match="another architecture"):
        load_imagenet_weights(create_model("sifa_resnet_tiny", num_classes=5), image)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["sifa_resnet_tiny", "sifa_swin_nano"])
def test_models_agree_on_cuda_and_cpu(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=6).eval()
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        cpu = predict_proba(model, x)
        gpu = predict_proba(model.cuda(), x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# The motion design (sifa_motion_*): frame-wise stem, motion readout, alignment loss


def _lively(model):
    """Give every residual branch and offset conv a voice (bn3 and conv_offset start at zero)."""
    torch.manual_seed(0)
    for m in model.modules():
        if hasattr(m, "bn3"):
            m.bn3.weight.data.fill_(1.0)
        if isinstance(m, SIFABottleneck):
            m.conv_offset.weight.data.normal_(0, 0.1)
    return model.eval()


def test_motion_design_sees_the_order_of_frames_only_through_sifa():
    """Frame-wise stem, per-frame convolutions, pooling symmetric in time: without its SIFA steps the
    model scores a clip and the clip played backwards alike; with them it does not."""
    model = _lively(create_model("sifa_motion_tiny", num_classes=3, clip_length=8))
    x = torch.randn(2, 3, 8, 64, 64)
    backwards = x.flip(2)
    with torch.no_grad():
        on = [model(x)[0], model(backwards)[0]]
        model.set_sifa_enabled(False)
        off = [model(x)[0], model(backwards)[0]]
    torch.testing.assert_close(off[0], off[1], rtol=1e-5, atol=1e-5)
    assert (on[0] - on[1]).abs().max() > 1e-3
    # The reference stem (4 frames a feature frame) sees the order by itself.
    reference = _lively(create_model("sifa_resnet_tiny", num_classes=3, clip_length=8))
    reference.set_sifa_enabled(False)
    with torch.no_grad():
        assert (reference(x)[0] - reference(backwards)[0]).abs().max() > 1e-3


def test_motion_design_clip_lengths_and_stem():
    model = create_model("sifa_motion_tiny", num_classes=3, clip_length=8)
    assert model.conv1.kernel_size == (1, 7, 7) and model.conv1.stride == (1, 2, 2)
    captures = []
    block = dict(model.sifa_blocks())["layer2.1"]
    handle = block.sifa.register_forward_hook(lambda m, i, o: captures.append(i[0].shape))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 8, 64, 64))
    handle.remove()
    assert captures[0][2] == 8  # every clip frame is a feature frame
    with pytest.raises(ModelError, match="multiple of 2"):
        create_model("sifa_motion_tiny", num_classes=3, clip_length=7)


def test_alignment_loss_is_lowest_at_the_true_displacement_and_trains_only_the_displacement():
    # Smooth features (one period of a sine across the 12 cells, a random phase per channel), so that a match
    # one cell off is closer than two cells off; with independent random values per cell any wrong match
    # looks alike and the order of the two wrong ones is a coin toss (it failed in half of 50 seeds).
    phases = torch.rand(4, 2, generator=torch.Generator().manual_seed(0)) * 2 * math.pi
    cells = torch.arange(12.0) * 2 * math.pi / 12
    features = torch.zeros(1, 4, 2, 12, 12)
    for c in range(4):
        features[0, c, 0] = torch.sin(cells[None, :] + phases[c, 0]) + torch.sin(cells[:, None] + phases[c, 1])
    features[:, :, 1] = torch.roll(features[:, :, 0], shifts=1, dims=-1)  # everything moved 1 cell right
    features.requires_grad_(True)
    losses = {}
    for dx in (-1.0, 0.0, 1.0):
        moved = torch.zeros(1, 2, 2, 12, 12)
        moved[:, 1] = dx
        moved.requires_grad_(True)
        loss = alignment_loss(features, moved)
        loss.backward()
        losses[dx] = loss.item()
        assert moved.grad is not None and features.grad is None
    assert losses[1.0] < 0.05 < losses[0.0] and losses[0.0] < losses[-1.0] + 1e-6


def test_auxiliary_loss_is_kept_in_training_only_and_read_once():
    model = create_model("sifa_motion_tiny", num_classes=3, clip_length=8).train()
    x = torch.randn(2, 3, 8, 64, 64)
    model(x)
    loss = model.auxiliary_loss()
    assert loss is not None and loss.requires_grad and 0 < loss.item() < 2 * len(model.sifa_blocks())
    assert model.auxiliary_loss() is None  # read once
    with torch.no_grad():
        model.eval()(x)
    assert model.auxiliary_loss() is None
    plain = create_model("sifa_resnet_tiny", num_classes=3, clip_length=8).train()
    plain(x)
    assert plain.auxiliary_loss() is None  # the reference blocks keep none


def _panning_clip(dy: float, dx: float, frames: int = 6, size: int = 64) -> torch.Tensor:
    """A clip of a real photograph whose content moves (dy, dx) input pixels a frame: 1,3,T,H,W."""
    import cv2
    import numpy as np

    photo = cv2.imread(str(Path(__file__).parent / "fixtures" / "coffee.jpg")).astype(np.float32) / 255
    out = []
    for t in range(frames):
        shift = np.float32([[1, 0, dx * t - 60], [0, 1, dy * t - 50]])
        out.append(cv2.warpAffine(photo, shift, (photo.shape[1], photo.shape[0]))[:size, :size])
    return torch.from_numpy(np.stack(out)).permute(3, 0, 1, 2)[None]


def test_global_shifts_measure_the_motion_of_a_real_picture_to_a_fraction_of_a_pixel():
    from sifa_cli.models.motion_targets import global_shifts

    for dy, dx in ((0.0, 3.0), (-2.0, 1.5), (2.5, -4.0), (0.0, 0.0)):
        shifts = global_shifts(_panning_clip(dy, dx))
        assert shifts.shape == (1, 2, 5)
        assert torch.allclose(shifts[0, 0], torch.full((5,), dy), atol=0.5), (dy, shifts[0, 0])
        assert torch.allclose(shifts[0, 1], torch.full((5,), dx), atol=0.5), (dx, shifts[0, 1])


def test_block_targets_follow_the_block_grid_in_space_and_time():
    from sifa_cli.models.motion_targets import block_targets

    shifts = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [8.0] * 7]])  # 8 input frames, 64x64
    same_time = block_targets(shifts, (8, 64, 64), (8, 8, 16))  # 8x8 cells across, 4x4 ... of input pixels
    assert torch.allclose(same_time[0, 0], shifts[0, 0] / 8) and torch.allclose(same_time[0, 1], shifts[0, 1] / 4)
    halved = block_targets(shifts, (8, 64, 64), (4, 16, 16))  # feature frame k holds input frames 2k, 2k+1
    assert torch.allclose(halved[0, 0], torch.tensor([3.0, 7.0, 11.0]) / 4)


def test_the_displacement_loss_teaches_the_offsets_only_on_translating_clips():
    from sifa_cli.models.motion_targets import global_shifts

    model = create_model("sifa_motion_tiny", num_classes=3, clip_length=8).train()
    clips = torch.cat((_panning_clip(0.0, 3.0, frames=8), _panning_clip(0.0, -3.0, frames=8)))
    shifts = global_shifts(clips)
    model(clips)
    base = model.auxiliary_loss()
    model(clips)
    with_target = model.auxiliary_loss(shifts, torch.tensor([True, True]), 1.0, tuple(clips.shape[2:]))
    assert with_target.item() > base.item() + 1e-4  # untrained displacements are far from 3 px a frame
    model.zero_grad()
    with_target.backward()
    offsets = [block.conv_offset.weight.grad for _, block in model.sifa_blocks()]
    assert all(g is not None and g.abs().sum() > 0 for g in offsets)
    model(clips)
    none_translating = model.auxiliary_loss(shifts, torch.tensor([False, False]), 1.0, tuple(clips.shape[2:]))
    model(clips)
    assert torch.allclose(none_translating, model.auxiliary_loss(), atol=1e-6)
