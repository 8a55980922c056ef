"""How much the SIFA blocks' displacement fields alone tell about the class: the global-motion head's
input statistics (sifa_cli/models/global_motion.py) of a motion model, a linear classifier fitted on one
folder of labelled clips and scored on another.

    PYTHONPATH=. python benchmarks/probe_motion_statistics.py TRAIN_DIR TEST_DIR --weights W [--per-class N]

Prints the probe's top-1 on TEST_DIR, per block and for all blocks together, beside the model's own top-1
on the same clips. A model without the head gets one for the measurement (its blocks keep their
displacements; the head's weights are not used)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_sifa_motion import camera_clips  # noqa: E402
from sifa_cli.data.spec import InputSpec  # noqa: E402
from sifa_cli.models import head_probabilities  # noqa: E402
from sifa_cli.models.global_motion import STATISTICS_PER_BLOCK, pooled_statistics  # noqa: E402
from sifa_cli.visualize.clip import load_model_clip  # noqa: E402
from sifa_cli.weights.checkpoint import load_model  # noqa: E402


@torch.no_grad()
def statistics(model, spec, clips, categories):
    for _, b in model.sifa_blocks():
        b.keep_motion = True
    rows, labels, right = [], [], 0
    for clip in clips:
        x = load_model_clip(clip.path, spec).model_input
        outputs, kept = model.forward_with_motions(x)
        right += categories[int(head_probabilities(outputs).argmax())] == clip.label
        rows.append(torch.cat([pooled_statistics(k) for k in kept], dim=1)[0])
        labels.append(categories.index(clip.label))
    return torch.stack(rows), torch.tensor(labels), right / len(clips)


def fit_and_score(train_x, train_y, test_x, test_y, classes, steps=2000):
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(0)
    probe = torch.nn.Linear(a.shape[1], classes)
    opt = torch.optim.LBFGS(probe.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(a), train_y) + 1e-3 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float((probe(b).argmax(1) == test_y).float().mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--per-class", type=int, default=None, help="clips per class of TRAIN (default all)")
    args = parser.parse_args(argv)
    model, meta = load_model(args.weights, progress=False)
    spec = InputSpec.from_meta(meta["input"])
    categories = list(meta["categories"])
    torch.set_grad_enabled(False)
    train_x, train_y, _ = statistics(model, spec, camera_clips(args.train, args.per_class), categories)
    test_x, test_y, model_top1 = statistics(model, spec, camera_clips(args.test, None), categories)
    names = [n for n, _ in model.sifa_blocks()]
    print(f"{args.weights}: the model itself {100 * model_top1:.1f} % on {len(test_y)} clips of {args.test}")
    with torch.enable_grad():
        for i, name in enumerate(names):
            cols = slice(i * STATISTICS_PER_BLOCK, (i + 1) * STATISTICS_PER_BLOCK)
            score = fit_and_score(train_x[:, cols], train_y, test_x[:, cols], test_y, len(categories))
            print(f"  linear probe on {name}'s statistics: {100 * score:.1f} %")
        score = fit_and_score(train_x, train_y, test_x, test_y, len(categories))
    print(f"  linear probe on all {len(names)} blocks' statistics ({train_x.shape[1]} numbers, fitted on "
          f"{len(train_y)} clips): {100 * score:.1f} %")


if __name__ == "__main__":
    main()
