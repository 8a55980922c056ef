#!/usr/bin/env python
"""A motion checkpoint with a wider SIFA window in layer2: the same weights, the layer2 taps dilated.

    python examples/camera/widen_window.py IN.safetensors OUT.safetensors [--dilation 2 1 1]

Why (README, experiment E12): in the trained motion model the learned offsets of layer2.1 pull all nine
taps to within about one feature cell of the query, while the scene moves 0.9 cells per feature step at
the median and 3.2 at the 90th percentile; the displacement the block reports is then about a quarter of
the true motion whatever the softmax temperature (benchmarks/diag_sifa_taps.py). Dilating the taps
widens the window the offsets start from. The offset convolutions of the widened stages start again at
zero, so the window starts as the regular dilated grid; every other tensor is carried over unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_variant import read_variant, write_variant  # noqa: E402
from sifa_cli.models.sifa_resnet import stage_dilations  # noqa: E402
from sifa_cli.weights.checkpoint import load_strict  # noqa: E402

STAGES = ("layer2", "layer3", "layer4")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--dilation", type=int, nargs=3, default=[2, 1, 1], metavar=("LAYER2", "LAYER3", "LAYER4"))
    args = parser.parse_args(argv)

    state, meta, arch_kwargs, model = read_variant(args.source, dilation=list(args.dilation))
    old = list(stage_dilations(meta.get("arch_kwargs", {}).get("dilation", 1)))
    widened = [stage for stage, before, after in zip(STAGES, old, args.dilation) if before != after]
    for key in state:
        if key.endswith("conv_offset.weight") and key.split(".")[0].removesuffix("_dual") in widened:
            state[key] = state[key].new_zeros(state[key].shape)
    load_strict(model, state, args.source, meta["arch"])
    write_variant(args.out, model, meta, arch_kwargs, args.source,
                  f"with SIFA dilation {args.dilation} (layer2/3/4; offsets of {', '.join(widened) or 'no stage'} "
                  f"reset to zero)", "widen_window.py")
    print(f"wrote {args.out}: dilation {old} -> {args.dilation}, offsets reset in {', '.join(widened) or 'none'}")


if __name__ == "__main__":
    main()
