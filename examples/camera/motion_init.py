#!/usr/bin/env python
"""The starting checkpoint of the shipped default (sifa_motion_small): the earlier default's weights,
sifa_resnet_small_camera, carried over to the motion design.

    python examples/camera/motion_init.py OUT.safetensors [--frames 8 --step 4]

The two designs share every tensor but the stem and the motion readout (sifa_resnet.py's docstring):
- the stem: the earlier model's 4x7x7 kernel summed over its 4 frames, a 1x7x7 kernel that gives the
  same response on a still scene and none of the motion it saw inside each group of 4 frames;
- the offset convolutions: zero, as built (the earlier model learned fixed probe shifts of several
  cells that have nothing to do with the motion; carried over, they sent every tap far from its query);
- the motion readout of each SIFA block (a projection and a softmax temperature): fresh, as built.
Trained from random weights on a 2-core CPU the motion design learned nothing in 6 epochs (README,
"Why the default model changed"); from here, fine-tuning only has to learn to read motion.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sifa_cli.models import create_model  # noqa: E402
from sifa_cli.weights.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from sifa_cli.weights.download import fetch  # noqa: E402
from sifa_cli.weights.manifest import load_registry  # noqa: E402

SOURCE = "sifa_resnet_small_camera"
ARCH = "sifa_motion_small"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--step", type=int, default=4)
    args = parser.parse_args(argv)

    state, meta = load_checkpoint(fetch(load_registry().get(SOURCE), progress=False))
    categories = meta["categories"]
    model = create_model(ARCH, num_classes=len(categories), clip_length=args.frames)
    target = model.state_dict()
    carried = {}
    for key, tensor in state.items():
        if key == "conv1.weight":
            tensor = tensor.sum(dim=2, keepdim=True)
        if key.endswith("def_cor.weight"):
            continue  # a constant of the operator, sized by the number of frames: keep the new one
        if key.endswith("conv_offset.weight"):
            continue  # the earlier model's offsets are fixed probe shifts (README): start from zero instead
        if key in target and target[key].shape == tensor.shape:
            carried[key] = tensor
    fresh = sorted(set(target) - set(carried))
    model.load_state_dict(carried, strict=False)
    spec = dict(meta["input"], frames=args.frames, step=args.step)
    out_meta = {
        "arch": ARCH,
        "arch_kwargs": {"clip_length": args.frames},
        "categories": categories,
        "input": spec,
        "source": f"{SOURCE} carried over to {ARCH} by examples/camera/motion_init.py (stem summed over time)",
    }
    save_checkpoint(args.out, model, out_meta)
    print(f"wrote {args.out}: {len(carried)} tensors from {SOURCE}, fresh: {', '.join(k for k in fresh if 'def_cor' not in k)}")


if __name__ == "__main__":
    main()
