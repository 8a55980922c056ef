"""The global-motion head (sifa_cli/models/global_motion.py): its similarity fit on known displacement
fields, the model that carries it (eager, prepared for inference, SIFA switched off), training it with
a frozen backbone, and the script that adds it to a checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import write_motion_dataset
from sifa_cli.engine.train import Trainer
from sifa_cli.engine.train_config import build_config
from sifa_cli.errors import ModelError
from sifa_cli.models import create_model, prepare_for_inference
from sifa_cli.models.global_motion import STEP_STATISTICS, STATISTICS_PER_BLOCK, centred_grid, motion_statistics
from sifa_cli.weights.checkpoint import load_checkpoint, load_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
H, W, T = 8, 12, 4


def field(dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """A displacement field N=1,2,T,H,W (feature cells) with the same step at every t."""
    return torch.stack((dy, dx)).view(1, 2, 1, H, W).expand(1, 2, T, H, W).clone()


def stats(moved: torch.Tensor) -> dict[str, torch.Tensor]:
    values = motion_statistics(moved)
    assert values.shape == (1, len(STEP_STATISTICS), T - 1)  # step 0 (frame 0 against itself) left out
    return {name: values[0, i] for i, name in enumerate(STEP_STATISTICS)}


def test_a_translation_is_fitted_exactly_in_units_of_half_the_frame():
    # 1.5 cells right on a 12-cell-wide grid = 0.25 of half the width; 2 cells up on 8 rows = -0.5
    s = stats(field(torch.full((H, W), -2.0), torch.full((H, W), 1.5)))
    for name, expected in (("tx", 0.25), ("ty", -0.5), ("scale", 0.0), ("rotation", 0.0), ("median_x", 0.25),
                           ("median_y", -0.5), ("residual", 0.0)):
        assert torch.allclose(s[name], torch.full((T - 1,), expected), atol=1e-5), name
    assert torch.all(s["explained"] > 0.99)


def test_a_zoom_and_a_rotation_are_told_apart_and_measured():
    gy, gx = centred_grid(H, W, torch.zeros(()))
    # zoom in by 10 %: each place moves away from the centre by 0.1 of its position (back in cells)
    zoom = stats(field(0.1 * gy * H / 2, 0.1 * gx * W / 2))
    assert torch.allclose(zoom["scale"], torch.full((T - 1,), 0.1), atol=1e-5)
    assert torch.allclose(zoom["tx"], torch.zeros(T - 1), atol=1e-6)  # the mean is blind to a zoom
    assert torch.allclose(zoom["rotation"], torch.zeros(T - 1), atol=1e-6)
    turn = stats(field(0.05 * gx * H / 2, -0.05 * gy * W / 2))
    assert torch.allclose(turn["rotation"], torch.full((T - 1,), 0.05), atol=1e-5)
    assert torch.allclose(turn["scale"], torch.zeros(T - 1), atol=1e-6)


def test_one_object_moving_in_a_still_picture_leaves_the_median_at_zero_and_fits_badly():
    dx = torch.zeros(H, W)
    dx[2:6, 1:5] = 3.0  # a sixth of the places move 3 cells right
    s = stats(field(torch.zeros(H, W), dx))
    assert torch.all(s["tx"] > 0.05)  # the mean is pulled along, as a slow pan would be
    assert torch.all(s["median_x"] == 0)
    assert torch.all(s["explained"] < 0.5)  # no single similarity motion explains it
    pan = stats(field(torch.zeros(H, W), torch.full((H, W), 0.5)))
    assert torch.all(pan["explained"] > 0.99)


def test_the_head_changes_nothing_until_trained_and_matches_the_prepared_model():
    torch.manual_seed(0)
    plain = create_model("sifa_motion_tiny", num_classes=3, clip_length=8).eval()
    headed = create_model("sifa_motion_tiny", num_classes=3, clip_length=8, global_motion=True).eval()
    missing = headed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("motion_head.") for k in missing)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain(x), headed(x)):
            assert torch.equal(a, b)  # the head's last layer starts at zero
        torch.nn.init.normal_(headed.motion_head.out.weight)
        trained = headed(x)
        assert not torch.allclose(trained[0], plain(x)[0])
        for a, b in zip(trained, prepare_for_inference(headed)(x)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_with_sifa_off_the_head_sees_zeros_whatever_the_clip():
    torch.manual_seed(1)
    model = create_model("sifa_motion_tiny", num_classes=3, clip_length=8, global_motion=True).eval()
    torch.nn.init.normal_(model.motion_head.out.weight)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        model(x)
        assert all(m is None for m in model.kept_motions())  # forgotten once read
        model.set_sifa_enabled(False)
        plain = create_model("sifa_motion_tiny", num_classes=3, clip_length=8, sifa=False).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("motion_head.")})
        zeros = torch.zeros(2, model.motion_head.blocks * STATISTICS_PER_BLOCK)
        constant = model.motion_head.out(torch.relu(model.motion_head.hidden(model.motion_head.norm(zeros))))
        torch.testing.assert_close(model(x)[0], plain(x)[0] + constant)


def test_global_motion_needs_the_motion_readout():
    with pytest.raises(ModelError, match="needs motion_readout"):
        create_model("sifa_resnet_tiny", num_classes=3, clip_length=8, global_motion=True)


def test_a_frozen_backbone_run_trains_the_head_and_keeps_it_in_the_checkpoint(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=10, size=64)
    torch.manual_seed(0)
    start = create_model("sifa_motion_tiny", num_classes=2, clip_length=8, global_motion=True)
    meta = {"arch": "sifa_motion_tiny", "categories": ["left", "right"],
            "arch_kwargs": {"clip_length": 8, "global_motion": True},
            "input": {"frames": 8, "step": 1, "size": 64, "resize": 64}}
    init = save_checkpoint(tmp_path / "start.safetensors", start, meta)
    config = build_config(dict(data=str(data), out=str(tmp_path / "run"), init=str(init), frames=8, size=64,
                               workers=0, epochs=1, batch_size=3, seed=2, lr=0.01, freeze_backbone=True))
    Trainer(config, log=lambda message: None).fit()
    after, saved = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert saved["arch_kwargs"]["global_motion"] is True
    before = start.state_dict()
    assert not torch.equal(after["motion_head.out.weight"], before["motion_head.out.weight"])
    assert torch.equal(after["layer3.1.conv_offset.weight"], before["layer3.1.conv_offset.weight"])
    model, _ = load_model(tmp_path / "run" / "last.safetensors")
    assert model.motion_head is not None


def test_add_motion_head_script_keeps_the_predictions(tmp_path):
    torch.manual_seed(3)
    model = create_model("sifa_motion_tiny", num_classes=2, clip_length=8).eval()
    meta = {"arch": "sifa_motion_tiny", "categories": ["a", "b"], "arch_kwargs": {"clip_length": 8},
            "input": {"frames": 8, "step": 1, "size": 64, "resize": 64}}
    source = save_checkpoint(tmp_path / "in.safetensors", model, meta)
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "camera" / "add_motion_head.py"), str(source),
                             str(tmp_path / "out.safetensors")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "global-motion head over 4 SIFA blocks" in result.stdout
    headed, _ = load_model(tmp_path / "out.safetensors")
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(headed.eval()(x)[0], model(x)[0])
