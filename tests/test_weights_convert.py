"""Importing reference-layout SIFA checkpoints ("module." prefix, state_dict / model wrappers)."""

from __future__ import annotations

import pytest
import torch

from sifa_cli.errors import InputError, WeightsError
from sifa_cli.models import create_model
from sifa_cli.weights.checkpoint import load_model, read_checkpoint_meta
from sifa_cli.weights.convert import (
    fitting_arch_kwargs,
    guess_arch,
    import_reference_checkpoint,
    read_labels,
    reference_clip_length,
)


def randomised(model):
    with torch.no_grad():  # values everywhere, so a tensor landing in the wrong place shows
        for param in model.parameters():
            param.normal_(0, 0.05)
        for name, buffer in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.uniform_(0.5, 1.5)
    return model.eval()


def save_reference(model, path, wrapper):
    """Save as the reference code's DataParallel training would: module. prefix, wrapped, extras."""
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    torch.save({wrapper: state, "epoch": 12, "best_acc": 0.5}, path)
    return path


@pytest.fixture(scope="module")
def reference_resnet(tmp_path_factory):
    torch.manual_seed(1)
    model = randomised(create_model("sifa_resnet_tiny", num_classes=6, clip_length=16))
    path = save_reference(model, tmp_path_factory.mktemp("ref") / "sifa_r_tiny_k6.pth", "state_dict")
    return model, path


def test_import_then_load_gives_identical_outputs(reference_resnet, tmp_path):
    reference, src = reference_resnet
    out = tmp_path / "imported.safetensors"
    meta = import_reference_checkpoint(src, "sifa_resnet_tiny", out)
    assert meta == read_checkpoint_meta(out)
    assert meta["arch"] == "sifa_resnet_tiny" and meta["categories"] == [f"class_{i}" for i in range(6)]
    assert meta["input"]["frames"] == 16 and meta["training"]["imported_from"] == src.name
    model, _ = load_model(out)
    clip = torch.randn(2, 3, 16, 64, 64)
    with torch.no_grad():
        expected, got = reference(clip), model(clip)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))


def test_reference_pth_loads_directly_with_its_architecture_recognised(reference_resnet):
    reference, src = reference_resnet
    model, meta = load_model(src)
    assert meta["arch"] == "sifa_resnet_tiny" and len(meta["categories"]) == 6
    clip = torch.randn(1, 3, 16, 64, 64)
    with torch.no_grad():
        assert torch.equal(reference(clip)[0], model(clip)[0])


def test_labels_file_names_the_classes(reference_resnet, tmp_path):
    _, src = reference_resnet
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["a", "b", "c", "d", "e", "f"]) + "\n\n")
    meta = import_reference_checkpoint(src, "sifa_resnet_tiny", tmp_path / "o.safetensors", labels=labels,
                                       frames=32, license="CC-BY-4.0")
    assert meta["categories"] == ["a", "b", "c", "d", "e", "f"]
    assert meta["input"]["frames"] == 32 and meta["arch_kwargs"]["clip_length"] == 32
    assert meta["license"] == "CC-BY-4.0"
    model, _ = load_model(tmp_path / "o.safetensors")  # def_cor regenerated for 32 frames
    with torch.no_grad():
        main, dual = model(torch.randn(1, 3, 32, 64, 64))
    assert main.shape == dual.shape == (1, 6)


def test_labels_count_must_match_the_classifier(reference_resnet, tmp_path):
    _, src = reference_resnet
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    with pytest.raises(InputError, match="the labels file has 2 labels but .* has 6 classes"):
        import_reference_checkpoint(src, "sifa_resnet_tiny", tmp_path / "o.safetensors", labels=labels)
    assert not (tmp_path / "o.safetensors").exists()


def test_repeated_labels_are_refused(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\na\n")
    with pytest.raises(InputError, match="lists 'a' twice"):
        read_labels(labels)


def test_another_architecture_is_refused_in_one_line(reference_resnet, tmp_path):
    _, src = reference_resnet
    with pytest.raises(WeightsError) as info:
        import_reference_checkpoint(src, "sifa_resnet_small", tmp_path / "o.safetensors")
    message = str(info.value)
    assert "\n" not in message
    assert "does not fit sifa_resnet_small" in message and "looks like a sifa_resnet_tiny checkpoint" in message


def test_swin_reference_layout_with_model_wrapper(tmp_path):
    # The reference SIFA-Transformer keeps offsets at zero and so has no conv_offset tensors.
    torch.manual_seed(2)
    reference = randomised(create_model("sifa_swin_nano", num_classes=4, clip_length=8, learn_offsets=False))
    src = save_reference(reference, tmp_path / "swin_ref.pth", "model")
    raw = torch.load(src, weights_only=True)
    assert set(raw) == {"model", "epoch", "best_acc"} and all(key.startswith("module.") for key in raw["model"])
    meta = import_reference_checkpoint(src, "sifa_swin_nano", tmp_path / "swin.safetensors")
    assert meta["arch_kwargs"] == {"clip_length": 8, "learn_offsets": False}
    model, _ = load_model(tmp_path / "swin.safetensors")
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(reference(clip), model(clip))


@pytest.mark.parametrize(
    "fixture, reference, arch, frames",
    [
        ("official_keys_sifa_resnet.json", "c2d_sifa_resnet50", "sifa_resnet50", 16),
        ("official_keys_sifa_resnet.json", "c2d_sifa_resnet101", "sifa_resnet101", 16),
        ("official_keys_sifa_swin.json", "c2d_sifa_swin_vit_s_p4_w7", "sifa_swin_s", 64),
        ("official_keys_sifa_swin.json", "c2d_sifa_swin_vit_b_p4_w7", "sifa_swin_b", 64),
    ],
)
def test_published_reference_layouts_are_recognised(fixture, reference, arch, frames):
    # Key names and shapes of the reference checkpoints (400 classes), as tensors on the meta device.
    import json
    from pathlib import Path

    shapes = json.loads((Path(__file__).parent / "fixtures" / fixture).read_text())[reference]
    state = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    assert guess_arch(state) == [arch]
    assert reference_clip_length(state) == frames
    expected_kwargs = {"learn_offsets": False} if arch.startswith("sifa_swin") else {}
    assert fitting_arch_kwargs(arch, state) == expected_kwargs
