"""prepare_for_inference: the prepared SIFA-Net computes what the plain model computes.

The plain side runs with SIFA_KERNEL=reference, the grid_sample definition of the operator, so these
tests compare the whole fast path (folded 2D convolutions, channels-last layout, the gather kernel,
the skipped frame 0) against the definition. Weights are randomised beyond their init (BatchNorm
statistics, zero-init residual scales, offset convolutions) so that every folded term and every SIFA
sample matters.
"""

from __future__ import annotations

import copy

import pytest
import torch

from sifa_cli.models import create_model, prepare_for_inference
from sifa_cli.models.blocks import Bottleneck, GlobalContextBottleneck, SIFABottleneck, conv1x1x1
from sifa_cli.models.inference import (
    InferenceGlobalContextBottleneck,
    InferenceSIFABottleneck,
    InferenceSIFAResNet,
    sifa_step_grid_sample,
)
from sifa_cli.models.ops_gather import sifa_step_channels_last
from sifa_cli.visualize import capture_sifa


def randomise(module: torch.nn.Module, seed: int = 0, offset_scale: float = 0.05) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.4 + 0.2)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, SIFABottleneck):
                # Offsets of a few pixels: samples land between pixels and some outside the frame.
                m.conv_offset.weight.copy_(torch.randn(m.conv_offset.weight.shape, generator=g) * offset_scale)
    return module.eval()


def plain_outputs(model, x, monkeypatch):
    with monkeypatch.context() as m:
        m.setenv("SIFA_KERNEL", "reference")
        with torch.inference_mode():
            return model(x)


def assert_outputs_close(fast, plain, rel):
    fast = fast if isinstance(fast, tuple) else (fast,)
    plain = plain if isinstance(plain, tuple) else (plain,)
    for a, b in zip(fast, plain):
        assert a.shape == b.shape and a.dtype == b.dtype
        scale = b.abs().max().item()
        assert scale > 0
        assert (a - b).abs().max().item() <= rel * scale, (a - b).abs().max().item() / scale


@pytest.mark.parametrize("name", ["sifa_resnet_tiny", "sifa_resnet_small", "sifa_motion_tiny"])
@pytest.mark.parametrize("dtype,rel", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_prepared_sifa_net_matches_plain(name, dtype, rel, monkeypatch):
    model = randomise(create_model(name, num_classes=7, clip_length=16)).to(dtype)
    x = torch.randn(2, 3, 16, 48, 40, generator=torch.Generator().manual_seed(1), dtype=dtype)
    fast = prepare_for_inference(model)
    assert isinstance(fast, InferenceSIFAResNet)
    with torch.inference_mode():
        got = fast(x)
        features = fast.forward_features(x)
    assert_outputs_close(got, plain_outputs(model, x, monkeypatch), rel)
    with monkeypatch.context() as m, torch.inference_mode():
        m.setenv("SIFA_KERNEL", "reference")
        for a, b in zip(features, model.forward_features(x)):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, atol=rel * b.abs().max().item(), rtol=0)


@pytest.mark.parametrize("frames", [8, 32])
def test_prepared_any_clip_length_and_batch_of_one(frames, monkeypatch):
    model = randomise(create_model("sifa_resnet_tiny", num_classes=5, clip_length=frames), seed=2).double()
    x = torch.randn(1, 3, frames, 32, 32, dtype=torch.float64)
    with torch.inference_mode():
        got = prepare_for_inference(model)(x)
    assert_outputs_close(got, plain_outputs(model, x, monkeypatch), 1e-12)


@pytest.mark.parametrize("dtype,rel", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_r50_blocks_match_plain(dtype, rel, monkeypatch):
    """Blocks of SIFA-R50's layer3 at their real widths (1024 -> 256 -> 1024), on a small grid."""
    torch.manual_seed(3)
    downsample = torch.nn.Sequential(conv1x1x1(512, 1024, 2), torch.nn.BatchNorm3d(1024))
    blocks = torch.nn.Sequential(GlobalContextBottleneck(512, 256, 2, downsample),
                                 SIFABottleneck(1024, 256, frames=4))
    blocks = randomise(blocks, offset_scale=1.0).to(dtype)
    x = torch.randn(2, 512, 4, 14, 12, dtype=dtype)
    fast = torch.nn.Sequential(InferenceGlobalContextBottleneck(blocks[0]), InferenceSIFABottleneck(blocks[1]))
    with torch.inference_mode():
        offsets = blocks[1].conv_offset(blocks[1].relu(blocks[1].bn2(blocks[1].conv2(
            blocks[1].relu(blocks[1].bn1(blocks[1].conv1(blocks[0](x))))))))
        assert 1 < offsets.abs().max() < 20  # samples move by pixels, some beyond the frame
        got = fast(x.contiguous(memory_format=torch.channels_last_3d))
    assert_outputs_close(got, plain_outputs(blocks, x, monkeypatch), rel)


def test_sifa_step_forms_agree_with_the_block_definition():
    from sifa_cli.models.blocks import shift_to_query_frame
    from sifa_cli.models.ops import sifa_attention_reference

    g = torch.Generator().manual_seed(4)
    n, c, t, h, w = 2, 6, 3, 5, 7
    f = torch.randn(n, c, t, h, w, generator=g, dtype=torch.float64)
    off = torch.randn(n, 18, t, h, w, generator=g, dtype=torch.float64) * 2
    expected = f + shift_to_query_frame(sifa_attention_reference(f, off)[0])
    frames = f.transpose(1, 2).reshape(n * t, c, h, w).contiguous(memory_format=torch.channels_last)
    offsets = off.transpose(1, 2).reshape(n * t, 18, h, w)
    expected = expected.transpose(1, 2).reshape(n * t, c, h, w)
    torch.testing.assert_close(sifa_step_channels_last(frames, offsets, t), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(sifa_step_grid_sample(frames, offsets, t, 3, 1), expected, atol=1e-12, rtol=0)


def test_hooks_on_sifa_modules_see_what_the_plain_model_computes():
    model = randomise(create_model("sifa_resnet_tiny", num_classes=4, clip_length=16), seed=5)
    fast = prepare_for_inference(model)
    assert [name for name, _ in fast.sifa_blocks()] == [name for name, _ in model.sifa_blocks()]
    clip = torch.randn(1, 3, 16, 64, 64, generator=torch.Generator().manual_seed(6))
    got, got_probs = capture_sifa(fast, clip)
    want, want_probs = capture_sifa(model, clip)
    torch.testing.assert_close(got_probs, want_probs, atol=1e-6, rtol=0)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].offsets.shape == want[name].offsets.shape
        assert abs(got[name].offsets).max() > 0.01
        torch.testing.assert_close(torch.from_numpy(got[name].offsets), torch.from_numpy(want[name].offsets),
                                   atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(torch.from_numpy(got[name].correlation),
                                   torch.from_numpy(want[name].correlation), atol=1e-5, rtol=1e-4)
    # The hooks are gone again: the block is back on its fast path and still right.
    with torch.inference_mode():
        torch.testing.assert_close(fast(clip)[0], model(clip)[0], atol=1e-5, rtol=1e-5)


def test_plain_model_is_left_untouched_and_sifa_switch_still_works(monkeypatch):
    model = randomise(create_model("sifa_resnet_tiny", num_classes=4, clip_length=16), seed=7)
    before = copy.deepcopy(model.state_dict())
    fast = prepare_for_inference(model)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in fast.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    x = torch.randn(1, 3, 16, 32, 32)
    fast.set_sifa_enabled(False)
    model.set_sifa_enabled(False)
    with torch.inference_mode():
        got = fast(x)
    assert_outputs_close(got, plain_outputs(model, x, monkeypatch), 2e-5)


def test_prepare_refuses_training_mode_and_leaves_other_models_alone():
    model = create_model("sifa_resnet_tiny", num_classes=4, clip_length=16)
    with pytest.raises(ValueError, match="eval mode"):
        prepare_for_inference(model.train())
    plain = Bottleneck(8, 2).eval()
    assert prepare_for_inference(plain) is plain
    fast = prepare_for_inference(model.eval())
    assert prepare_for_inference(fast) is fast


def test_prepared_model_in_bf16_autocast_is_close_to_fp32():
    model = randomise(create_model("sifa_resnet_tiny", num_classes=4, clip_length=16), seed=8)
    fast = prepare_for_inference(model)
    x = torch.randn(1, 3, 16, 32, 32)
    with torch.inference_mode():
        reference = fast(x)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fast(x)[0]
    assert torch.isfinite(low).all()
    assert (low.float() - reference).abs().max() <= 0.1 * reference.abs().max()


def test_per_stage_dilation_is_built_prepared_and_saved(tmp_path, monkeypatch):
    """`dilation` of three numbers widens layer2's SIFA window only; the fast path and a saved checkpoint
    follow it; anything but one or three positive whole numbers is refused in one line."""
    from sifa_cli.errors import ModelError
    from sifa_cli.weights.checkpoint import load_model, save_checkpoint

    model = randomise(create_model("sifa_motion_tiny", num_classes=3, clip_length=8, dilation=[2, 1, 1]))
    blocks = dict(model.sifa_blocks())
    assert {name: b.dilation for name, b in blocks.items()} == {
        "layer2.1": 2, "layer3.1": 1, "layer4.1": 1, "layer4_dual.1": 1}
    x = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model = model.to(torch.float64)
    # A wider window samples elsewhere: the same weights at dilation 1 give other outputs.
    narrow = create_model("sifa_motion_tiny", num_classes=3, clip_length=8).to(torch.float64)
    narrow.load_state_dict(model.state_dict())
    with torch.inference_mode():
        assert (narrow.eval()(x)[0] - model.eval()(x)[0]).abs().max() > 1e-6
    fast = prepare_for_inference(model)
    with torch.inference_mode():
        got = fast(x)
    assert_outputs_close(got, plain_outputs(model, x, monkeypatch), 1e-12)
    path = save_checkpoint(tmp_path / "wide.safetensors", model.float(), {
        "arch": "sifa_motion_tiny", "arch_kwargs": {"clip_length": 8, "dilation": [2, 1, 1]},
        "categories": ["a", "b", "c"], "input": {"frames": 8, "step": 4, "size": 64}})
    loaded, _ = load_model(path, progress=False)
    assert dict(loaded.sifa_blocks())["layer2.1"].dilation == 2
    for bad in ([2, 1], [0, 1, 1], 0, [1.5, 1, 1]):
        with pytest.raises(ModelError, match="dilation must be"):
            create_model("sifa_motion_tiny", num_classes=3, clip_length=8, dilation=bad)


def test_a_sifa_step_in_layer1_is_built_prepared_and_saved(tmp_path, monkeypatch):
    """`sifa_layer1` (compact models): layer1's second block runs the SIFA step on layer1's finer cells;
    the fast path and a saved checkpoint follow it; a layer1 of one block refuses it in one line."""
    from sifa_cli.errors import ModelError
    from sifa_cli.weights.checkpoint import load_model, save_checkpoint

    model = randomise(create_model("sifa_motion_small", num_classes=3, clip_length=8, sifa_layer1=True))
    blocks = dict(model.sifa_blocks())
    assert list(blocks)[:2] == ["layer1.1", "layer2.1"] and type(model.layer1[0]).__name__ == "Bottleneck"
    x = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    model = model.to(torch.float64)
    with torch.inference_mode():
        on = model.eval()(x)[0]
        blocks["layer1.1"].sifa_enabled = False
        off = model(x)[0]
        blocks["layer1.1"].sifa_enabled = True
    assert (on - off).abs().max() > 1e-6  # the new step changes the output
    fast = prepare_for_inference(model)
    with torch.inference_mode():
        got = fast(x)
    assert_outputs_close(got, plain_outputs(model, x, monkeypatch), 1e-12)
    path = save_checkpoint(tmp_path / "fine.safetensors", model.float(), {
        "arch": "sifa_motion_small", "arch_kwargs": {"clip_length": 8, "sifa_layer1": True},
        "categories": ["a", "b", "c"], "input": {"frames": 8, "step": 4, "size": 64}})
    loaded, _ = load_model(path, progress=False)
    assert "layer1.1" in dict(loaded.sifa_blocks())
    with pytest.raises(ModelError, match="sifa_layer1 turns layer1's second block into a SIFA block"):
        create_model("sifa_motion_tiny", num_classes=3, clip_length=8, sifa_layer1=True)
