#!/usr/bin/env python
"""A motion checkpoint with a SIFA step in layer1 too: every trained tensor carried over, layer1's odd
blocks turned into SIFA bottlenecks (the `sifa_layer1` model option).

    python examples/camera/add_layer1_sifa.py IN.safetensors OUT.safetensors

Why (README, experiment E15): layer2's cells are 8 input pixels; a slow pan moves about 1.5 input
pixels a feature step (0.2 of a cell), which falls between layer2's taps, and `static` is the motion
model's weakest class, with slow pans and zooms read as still. layer1's cells are 4 pixels. The new
block keeps the weights of the plain bottleneck it replaces (same convolutions and normalisations);
its offset convolution starts at zero (the regular grid), and its motion readout's projection starts at
zero, so at first it adds only what its SIFA step aggregates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_variant import read_variant, write_variant  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("out")
    args = parser.parse_args(argv)

    state, meta, arch_kwargs, model = read_variant(args.source, sifa_layer1=True)
    loaded = model.load_state_dict(state, strict=False)  # the new block's own tensors stay as built
    if loaded.unexpected_keys:
        raise SystemExit(f"{args.source}: tensors the new model does not have: {', '.join(loaded.unexpected_keys[:5])}")
    fresh = sorted(loaded.missing_keys)
    with torch.no_grad():
        for name, block in model.sifa_blocks():
            if name.startswith("layer1.") and getattr(block, "motion_readout", False):
                block.motion.weight.zero_()
    write_variant(args.out, model, meta, arch_kwargs, args.source, f"with SIFA in layer1 (new: {', '.join(fresh)})",
                  "add_layer1_sifa.py")
    print(f"wrote {args.out}: layer1 SIFA blocks {[n for n, _ in model.sifa_blocks() if n.startswith('layer1.')]}, "
          f"new tensors: {', '.join(fresh)}")


if __name__ == "__main__":
    main()
