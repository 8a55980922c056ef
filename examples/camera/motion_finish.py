#!/usr/bin/env python
"""Make a trained motion model's checkpoint the registry's: name its motion block and where it came from.

    python examples/camera/motion_finish.py RUN/best.safetensors weights/sifa_motion_small_camera.safetensors \
        --block layer2.1 --source "..." [--views 1x3] [--seconds 3.2]

`motion_block` is the SIFA block whose displacements follow the scene best, as
benchmarks/bench_sifa_motion.py measures it on the validation split; `sifa visualize` shows it by
default. `--seconds` spreads the model's clips over more time than frames x step / 30 (chosen on the
validation split: see reproduce_motion.sh). The tensors are copied unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sifa_cli.weights.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--block", required=True, help="the SIFA block that carries the motion")
    parser.add_argument("--source", required=True, help="how the weights were made, for `sifa weights info`")
    parser.add_argument("--views", help="the model's default multi-view testing (CLIPSxCROPS), e.g. 1x3")
    parser.add_argument("--seconds", type=float, help="the time one clip covers, e.g. 3.2")
    args = parser.parse_args(argv)
    state, meta = load_checkpoint(args.checkpoint)
    blocks = sorted({key.rsplit(".conv_offset.", 1)[0] for key in state if ".conv_offset." in key})
    if args.block not in blocks:
        sys.exit(f"{args.checkpoint} has no SIFA block {args.block!r}; it has {', '.join(blocks)}")
    meta = {key: value for key, value in meta.items() if key not in ("format", "tensors_sha256")}
    if args.views:
        meta["input"] = {**meta["input"], "views": args.views}
    if args.seconds:
        meta["input"] = {**meta["input"], "seconds": args.seconds}
    save_checkpoint(args.out, state, {**meta, "motion_block": args.block, "source": args.source})
    print(f"wrote {args.out} (motion block {args.block})")


if __name__ == "__main__":
    main()
