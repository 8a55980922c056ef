"""Test helpers for prediction: colour videos and a tiny SIFA-Net trained to name their colour.

The model is trained for real (a dozen optimizer steps of sifa_resnet_tiny, a few seconds on a
CPU) once per test session; its checkpoint bytes are cached here for every test that needs it.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from conftest import write_video

COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
CATEGORIES = list(COLOURS)
INPUT_SPEC = {"frames": 8, "step": 1, "sampling": "dense", "size": 32, "resize": 36,
              "mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225]}


def colour_frames(colours: Sequence[str], width: int = 48, height: int = 40, seed: int = 0) -> np.ndarray:
    """One noisy frame of the named colour per entry, with a white bar moving across."""
    rng = np.random.default_rng(seed)
    frames = np.empty((len(colours), height, width, 3), np.uint8)
    for t, name in enumerate(colours):
        noise = rng.integers(-30, 30, (height, width, 3))
        frames[t] = np.clip(np.array(COLOURS[name]) + noise, 0, 255)
        x = (t * 3) % (width - 4)
        frames[t, :, x : x + 4] = 255
    return frames


def write_colour_video(path: Path, colours: Sequence[str], fps: float = 10.0, **size) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, colour_frames(colours, **size), fps=fps)


@functools.lru_cache(maxsize=1)
def colour_checkpoint_bytes() -> bytes:
    from sifa_cli.data.transforms import to_model_input
    from sifa_cli.models import create_model
    from sifa_cli.weights.checkpoint import save_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast and does not stall on a busy machine
    try:
        return _train_colour_checkpoint(create_model, save_checkpoint, to_model_input)
    finally:
        torch.set_num_threads(threads)


def _train_colour_checkpoint(create_model, save_checkpoint, to_model_input) -> bytes:
    torch.manual_seed(0)
    model = create_model("sifa_resnet_tiny", num_classes=len(CATEGORIES), clip_length=INPUT_SPEC["frames"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    labels = torch.arange(6) % len(CATEGORIES)
    model.train()
    for step in range(14):
        clips = [colour_frames([CATEGORIES[int(c)]] * 8, 32, 32, seed=step * 10 + i) for i, c in enumerate(labels)]
        x = torch.stack([to_model_input(clip, INPUT_SPEC["mean"], INPUT_SPEC["std"]) for clip in clips])
        main, dual = model(x)
        loss = torch.nn.functional.cross_entropy(main, labels) + torch.nn.functional.cross_entropy(dual, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    meta = {"arch": "sifa_resnet_tiny", "arch_kwargs": {"clip_length": INPUT_SPEC["frames"]},
            "categories": CATEGORIES, "input": INPUT_SPEC, "source": "sifa tests", "license": "CC0"}
    with tempfile.TemporaryDirectory() as folder:
        path = save_checkpoint(Path(folder) / "colours.safetensors", model.eval(), meta)
        return path.read_bytes()


def colour_checkpoint(folder: Path) -> Path:
    path = Path(folder) / "colours.safetensors"
    path.write_bytes(colour_checkpoint_bytes())
    return path
