"""Where `sifa finetune` starts: the motion-pretrained default unless told otherwise, and the
SIFA-off ablation switch. Real subprocess runs of one short epoch on generated clips."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import write_motion_dataset
from sifa_cli.models import create_model
from sifa_cli.weights.checkpoint import load_checkpoint, load_model, read_checkpoint_meta, save_checkpoint
from sifa_cli.weights.manifest import load_registry

SIFA = [sys.executable, "-m", "sifa_cli.cli.main"]
QUICK = ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu"]


def finetune(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    return subprocess.run([*SIFA, "finetune", *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_default_init_is_the_shipped_model_with_a_new_head(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=4, num_frames=34)
    run = tmp_path / "run"
    result = finetune(data, *QUICK, "--frames", "8", "--size", "64", "--out", run)
    assert result.returncode == 0, result.stderr
    default = load_registry().default_entry()
    assert f"initialised from '{default.name}'" in result.stderr and "classifier starts afresh" in result.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["init"] == default.name and config["model"] == default.arch
    # The input spec follows the checkpoint where not overridden (--frames/--size were).
    meta = read_checkpoint_meta(run / "last.safetensors")
    assert meta["input"]["step"] == default.input["step"] and meta["input"]["frames"] == 8
    # and so do its test-time views (three crops a clip), which training does not use
    assert default.input["views"] == "1x3" and meta["input"]["views"] == "1x3"
    assert meta["categories"] == ["left", "right"]
    # The backbone started from the default's weights: a layer1 convolution is far closer to them
    # than to a fresh initialisation of the same architecture.
    trained, _ = load_checkpoint(run / "last.safetensors")
    shipped, _ = load_checkpoint(default.local_path)
    key = "layer1.0.conv1.weight"
    fresh = create_model(default.arch, num_classes=2, clip_length=8).state_dict()[key]
    assert (trained[key] - shipped[key]).norm() < 0.5 * (fresh - shipped[key]).norm()


@pytest.mark.slow
def test_init_scratch_and_another_architecture_start_from_random_weights(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=4, num_frames=12)
    result = finetune(data, *QUICK, "--init", "scratch", "--model", "sifa_resnet_small", "--frames", "8", "--size",
                      "64", "--out", tmp_path / "scratch")
    assert result.returncode == 0, result.stderr
    assert "initialised from" not in result.stderr
    assert yaml.safe_load((tmp_path / "scratch" / "config.yaml").read_text())["init"] == "scratch"
    other = finetune(data, *QUICK, "--model", "sifa_resnet_tiny", "--frames", "8", "--size", "64",
                     "--out", tmp_path / "tiny")
    assert other.returncode == 0, other.stderr
    assert "training from scratch" in other.stderr
    assert yaml.safe_load((tmp_path / "tiny" / "config.yaml").read_text())["init"] == "scratch"


@pytest.mark.slow
def test_no_sifa_trains_and_loads_with_every_sifa_step_off(tmp_path):
    data = write_motion_dataset(tmp_path / "data", per_class=4, num_frames=12)
    run = tmp_path / "run"
    result = finetune(data, *QUICK, "--init", "scratch", "--model", "sifa_resnet_tiny", "--frames", "8", "--size",
                      "64", "--no-sifa", "--out", run)
    assert result.returncode == 0, result.stderr
    meta = read_checkpoint_meta(run / "best.safetensors")
    assert meta["arch_kwargs"]["sifa"] is False
    model, _ = load_model(run / "best.safetensors", progress=False)
    blocks = model.sifa_blocks()
    assert blocks and not any(block.sifa_enabled for _, block in blocks)
    # Switched off means the SIFA operator never runs: its offset convolution gets no input.
    calls = []
    for _, block in blocks:
        block.sifa.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 8, 64, 64))
    assert calls == []


@pytest.mark.slow
def test_fine_tuning_keeps_the_starting_checkpoints_clip_time_span(tmp_path):
    # A checkpoint may record clips spread over more time than frames x step / 30 (the registry's
    # motion model: 12 frames at step 4 over 3.2 s). Fine-tuned from it, a model samples video the
    # same way unless --frames or --step changes the clip.
    data = write_motion_dataset(tmp_path / "data", per_class=3, num_frames=30)
    start = tmp_path / "start"
    result = finetune(data, *QUICK, "--init", "scratch", "--model", "sifa_resnet_tiny", "--frames", "8", "--step", "1",
                      "--size", "64", "--out", start)
    assert result.returncode == 0, result.stderr
    tensors, meta = load_checkpoint(start / "last.safetensors")
    assert meta["input"]["seconds"] == pytest.approx(8 / 30) and meta["input"]["views"] == "1x1"
    meta = {**meta, "input": {**meta["input"], "seconds": 0.96, "views": "2x3"}}
    save_checkpoint(tmp_path / "wide.safetensors", tensors, meta)
    kept = finetune(data, *QUICK, "--init", tmp_path / "wide.safetensors", "--out", tmp_path / "kept")
    assert kept.returncode == 0, kept.stderr
    kept_input = read_checkpoint_meta(tmp_path / "kept" / "last.safetensors")["input"]
    assert kept_input["seconds"] == pytest.approx(0.96) and kept_input["views"] == "2x3"
    # at 25 fps, 0.96 s puts the 8 frames 3 apart (the start's own 8 / 30 s: every frame)
    assert "at 25 fps every 3 frames" in kept.stderr, kept.stderr
    changed = finetune(data, *QUICK, "--init", tmp_path / "wide.safetensors", "--step", "2", "--out", tmp_path / "step")
    assert changed.returncode == 0, changed.stderr
    assert read_checkpoint_meta(tmp_path / "step" / "last.safetensors")["input"]["seconds"] == pytest.approx(16 / 30)
