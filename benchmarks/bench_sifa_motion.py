#!/usr/bin/env python
"""Does a model's SIFA step carry the motion? Per SIFA block, over labelled camera clips.

    PYTHONPATH=. python benchmarks/bench_sifa_motion.py data/camera/test [--weights W] [--per-class 20] [--json out.json]

DATA holds one folder per class (`static`, `pan left`, ...), as `sifa evaluate` reads it. When DATA's
parent has the corpus's `sources.json` (examples/camera/make_dataset.py writes it), each pan and tilt
clip's true speed is known and the size of the readings is compared with it.

Prints, per block: how often the clip's mean window shift (offsets) and mean displacement (the
attention-weighted sampling position) point with the scene's motion, within 45 degrees, after the
static clips' mean is taken off; the median of (reading along the motion) / (true motion), both in
frame pixels per frame; and the accuracy with the SIFA steps on and switched off at inference.
See sifa_cli/visualize/motion.py for the definitions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sifa_cli.data.decode import VIDEO_EXTENSIONS
from sifa_cli.visualize.motion import LabelledClip, measure_motion
from sifa_cli.weights.checkpoint import load_model


def camera_clips(data: Path, per_class: int | None) -> list[LabelledClip]:
    """The clips of DATA/<label>/, with true speeds from the corpus's sources.json when it is there."""
    speeds = {}
    manifest = data.parent / "sources.json"
    if manifest.exists():
        for record in json.loads(manifest.read_text()):
            speeds[(data.parent / record["path"]).resolve()] = record["speed"] * record["size"][0]
    clips = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
        for video in videos[:per_class]:
            clips.append(LabelledClip(str(video), folder.name, speeds.get(video.resolve())))
    return clips


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--weights", default=None, help="registry name or checkpoint file (default: the shipped model)")
    parser.add_argument("--per-class", type=int, default=None, help="at most this many clips of each class")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, meta = load_model(args.weights, progress=False)
    clips = camera_clips(args.data, args.per_class)
    if not clips:
        sys.exit(f"{args.data}: no videos in class folders")
    started = time.perf_counter()
    report = measure_motion(model, meta, clips)
    seconds = time.perf_counter() - started
    print(f"{args.weights or 'shipped default'} on {report.clips} clips of {args.data} ({seconds:.0f} s)")
    print(f"accuracy: SIFA on {report.accuracy_sifa_on:.1%}, SIFA switched off {report.accuracy_sifa_off:.1%}")
    print(f"{'block':<16}{'pan/tilt':>9}{'offset agrees':>15}{'displ. agrees':>15}{'offset size':>13}{'displ. size':>13}{'within 2x':>11}")

    def ratio(value):
        return "-" if value is None else f"{value:.2f}"

    for b in report.blocks:
        within = "-" if b.displacement_within_2x is None else f"{b.displacement_within_2x:.0%}"
        print(f"{b.block:<16}{b.clips:>9}{b.offset_agreement:>15.0%}{b.displacement_agreement:>15.0%}"
              f"{ratio(b.offset_size_ratio):>13}{ratio(b.displacement_size_ratio):>13}{within:>11}")
    problems = report.failures()
    print("SIFA carries the motion" if not problems else "SIFA does not carry the motion: " + "; ".join(problems))
    if args.json:
        args.json.write_text(json.dumps({"weights": args.weights, "data": str(args.data), **report.as_dict()}, indent=1))


if __name__ == "__main__":
    main()
