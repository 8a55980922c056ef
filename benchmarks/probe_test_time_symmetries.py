"""Does averaging over the camera classes' symmetries help? A probe of test-time augmentation.

    PYTHONPATH=. python benchmarks/probe_test_time_symmetries.py data/camera2/val data/shortclips/train \\
        data/hardval/val --weights sifa_motion_small_camera --json symmetries.json

Each camera move has mirror images among the classes: a clip mirrored left-right turns `pan left`
into `pan right`; turned upside down, `tilt up` into `tilt down`; played backwards, every move into
its opposite (and `static` stays `static` under all three). So a clip can be scored as it is and
as its mirror, flip or reversal, with the classes of the transformed clip's scores swapped back,
and the scores averaged: the model's reading then no longer depends on which way round it meets
a scene. The probe scores every labelled clip of each folder under the 8 combinations (`sifa
evaluate`'s `Predictor`, the model's own views, all classes kept) and reports, per folder, the
clips right for each single transform and for the averages of `identity` with the others.

It needs a model whose classes include the camera moves it swaps (the default camera model). The
figures of 2026-12-05 are in README's experiment table (E34).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sifa_cli.data.augment import swap_index
from sifa_cli.engine.evaluate import evaluate, load_labelled, split_known
from sifa_cli.engine.predict import Predictor
from sifa_cli.errors import InputError
from sifa_cli.models.inference import prepare_for_inference
from sifa_cli.weights.checkpoint import load_model

# Classes each transform swaps; a transform is a string of these letters (h: mirror, v: upside
# down, t: played backwards).
SWAPS = {
    "h": (("pan left", "pan right"),),
    "v": (("tilt up", "tilt down"),),
    "t": (("pan left", "pan right"), ("tilt up", "tilt down"), ("zoom in", "zoom out")),
}
TRANSFORMS = ("", "h", "v", "hv", "t", "th", "tv", "thv")
AVERAGES = {"h": ("", "h"), "v": ("", "v"), "hv": ("", "h", "v", "hv"), "t": ("", "t"),
            "th": ("", "h", "t", "th"), "all": TRANSFORMS}


def class_order(categories: list[str], transform: str) -> list[int]:
    """Index j such that the original clip's class k scores as class order[k] of the transformed clip
    (the swaps of each letter in turn, as `sifa finetune` swaps a mirrored or reversed clip's class)."""
    order = list(range(len(categories)))
    for letter in transform:
        try:
            swapped = swap_index(SWAPS[letter], categories, f"transform {letter!r}")
        except InputError as exc:  # not a camera model
            raise SystemExit(f"error: {exc}") from None
        order = [swapped[k] for k in order]
    return order


class Transformed(nn.Module):
    """`model` scoring the transformed clip, its classes put back in the original clip's order."""

    def __init__(self, model: nn.Module, transform: str, order: list[int]):
        super().__init__()
        self.model, self.transform = prepare_for_inference(model), transform
        self.register_buffer("order", torch.tensor(order))

    def forward(self, x: torch.Tensor):
        dims = [d for letter, d in (("h", -1), ("v", -2), ("t", 2)) if letter in self.transform]
        out = self.model(x.flip(dims) if dims else x)
        heads = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(logits[:, self.order] for logits in heads)


def scores(model: nn.Module, meta: dict, folder: Path, transform: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(path -> class probabilities in the model's class order under `transform`, path -> label)."""
    categories = [str(c) for c in meta["categories"]]
    wrapped = Transformed(model, transform, class_order(categories, transform)).eval()
    predictor = Predictor(wrapped, meta, top_k=len(categories))
    labelled = load_labelled(folder)
    samples, unknown = split_known(labelled.samples, categories, False, labelled.source)
    evaluation = evaluate(predictor, samples, unknown=unknown, source=labelled.source)
    if evaluation.failed:
        raise SystemExit(f"{len(evaluation.failed)} clips of {folder} could not be read: {evaluation.failed[0][2]}")
    out = {}
    for p in evaluation.predictions:
        probs = dict(p.top)
        out[p.path] = np.array([probs[c] for c in categories])
    return out, {p.path: p.label for p in evaluation.predictions}


def right(per: dict, transforms, paths: list[str], truth: np.ndarray) -> int:
    """Clips whose top class, from the scores averaged over `transforms`, is their label."""
    mean = np.mean([[per[t][p] for p in paths] for t in transforms], axis=0)
    return int((mean.argmax(1) == truth).sum())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of labelled clips (class sub-folders)")
    parser.add_argument("--weights", default=None, help="registry name or file (default: the default model)")
    parser.add_argument("--json", type=Path, help="write the per-folder counts here")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    model, meta = load_model(args.weights, "cpu", progress=False)
    categories = [str(c) for c in meta["categories"]]
    report = {}
    for folder in args.folders:
        per = {}
        for transform in TRANSFORMS:
            per[transform], labels = scores(model, meta, folder, transform)
        paths = sorted(labels)
        truth = np.array([categories.index(labels[p]) for p in paths])

        entry = {"clips": len(paths),
                 "single": {t or "identity": right(per, (t,), paths, truth) for t in TRANSFORMS},
                 "averaged with identity": {name: right(per, names, paths, truth) for name, names in AVERAGES.items()}}
        report[str(folder)] = entry
        print(f"{folder}: {len(paths)} clips; identity {entry['single']['identity']}; single "
              + ", ".join(f"{k} {v}" for k, v in entry["single"].items() if k != "identity")
              + "; averaged " + ", ".join(f"{k} {v}" for k, v in entry["averaged with identity"].items()))
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
