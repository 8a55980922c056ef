"""Frame transforms shared by prediction and training; and the checkpoint input spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sifa_cli.data.spec import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from sifa_cli.data.transforms import (
    resize_short_side,
    scaled_size,
    spatial_crops,
    evaluation_views,
    to_model_input,
)
from sifa_cli.errors import InputError, WeightsError


def test_scaled_size_keeps_aspect():
    assert scaled_size(1280, 720, 256) == (455, 256)
    assert scaled_size(720, 1280, 256) == (256, 455)
    assert scaled_size(340, 256, 256) == (340, 256)
    assert scaled_size(100, 100, 32) == (32, 32)


def test_resize_short_side():
    frames = np.random.default_rng(0).integers(0, 256, (3, 90, 160, 3), np.uint8)
    out = resize_short_side(frames, 45)
    assert out.shape == (3, 45, 80, 3) and out.dtype == np.uint8
    assert resize_short_side(frames, 90) is frames  # already the right size: no copy
    assert resize_short_side(frames, 180).shape == (3, 180, 320, 3)
    flat = np.full((2, 90, 160, 3), 77, np.uint8)
    assert (resize_short_side(flat, 45) == 77).all()


def test_three_crops_cover_the_long_side():
    frames = np.zeros((2, 32, 96, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(96, dtype=np.uint8)[None, None, :]  # column number in red
    left, centre, right = spatial_crops(frames, 32, 3)
    assert left[0, 0, 0, 0] == 0 and centre[0, 0, 0, 0] == 32 and right[0, 0, -1, 0] == 95
    tall = np.zeros((2, 96, 32, 3), np.uint8)
    tall[:, :, :, 1] = np.arange(96, dtype=np.uint8)[None, :, None]
    top, middle, bottom = spatial_crops(tall, 32, 3)
    assert top[0, 0, 0, 1] == 0 and middle[0, 0, 0, 1] == 32 and bottom[0, -1, 0, 1] == 95
    (only,) = spatial_crops(frames, 32, 1)
    assert only.shape == (2, 32, 32, 3) and only[0, 0, 0, 0] == 32
    with pytest.raises(InputError):
        spatial_crops(frames, 32, 2)


def test_to_model_input_layout_and_values():
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 0, 128
    tensor = to_model_input(frames, IMAGENET_MEAN, IMAGENET_STD)
    assert tensor.shape == (3, 4, 8, 8) and tensor.dtype == torch.float32
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    for channel, value in enumerate(expected):
        assert torch.allclose(tensor[channel], torch.tensor(value), atol=1e-5)


def test_test_views_one_and_three_crops():
    frames = np.random.default_rng(0).integers(0, 256, (8, 48, 80, 3), np.uint8)
    one = evaluation_views(frames, size=32, resize=40, crops=1, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    three = evaluation_views(frames, size=32, resize=40, crops=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert [v.shape for v in one] == [(3, 8, 32, 32)]
    assert [v.shape for v in three] == [(3, 8, 32, 32)] * 3
    assert not torch.equal(three[0], three[2])


def test_input_spec_from_checkpoint_meta():
    spec = InputSpec.from_meta({"frames": "8", "step": 2, "sampling": "uniform", "size": 32, "resize": 40,
                                "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "unknown": 1})
    assert (spec.frames, spec.step, spec.sampling, spec.size, spec.resize) == (8, 2, "uniform", 32, 40)
    assert InputSpec.from_meta(spec.to_meta()) == spec
    assert InputSpec.from_meta(None) == InputSpec()
    for bad in ({"frames": 0}, {"sampling": "random"}, {"size": 64, "resize": 32}, {"std": [1, 0, 1]},
                {"frames": "many"}, "not a dict"):
        with pytest.raises(WeightsError, match="invalid input spec"):
            InputSpec.from_meta(bad)
