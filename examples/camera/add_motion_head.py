#!/usr/bin/env python
"""A motion checkpoint with a global-motion head added: the same weights, plus a head (untrained, its
last layer zero, so the model predicts as before) that classifies a similarity-motion fit to every SIFA
block's displacement field (sifa_cli/models/global_motion.py).

    python examples/camera/add_motion_head.py IN.safetensors OUT.safetensors

Why (README, experiment E18): the classifier sees the SIFA blocks' displacements only after an average
over places, which cannot tell a zoom (displacements pointing out from the centre average to zero) from
a still camera, nor a camera move from one large object moving in a fixed shot (both pull the mean).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_variant import read_variant, write_variant  # noqa: E402
from sifa_cli.weights.checkpoint import load_strict  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("out")
    args = parser.parse_args(argv)

    state, meta, arch_kwargs, model = read_variant(args.source, global_motion=True)
    state = {**model.motion_head.state_dict(prefix="motion_head."), **state}
    load_strict(model, state, args.source, meta["arch"])
    write_variant(args.out, model, meta, arch_kwargs, args.source, "with an untrained global-motion head",
                  "add_motion_head.py")
    print(f"wrote {args.out}: {meta['arch']} with a global-motion head over {model.motion_head.blocks} SIFA blocks")


if __name__ == "__main__":
    main()
