"""examples/shortclips/make_shortclips.py: the short-clip motion task. A tiny version is cut from
generated footage and photographs, and the written files are decoded for real: clip lengths, frame
rates, sizes, the pools kept apart, footage that drifts or cuts left out, and the direction of
every pan measured by phase correlation against its label."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "shortclips"))
import make_shortclips as shortclips  # noqa: E402

SIZE = (128, 96)


def scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A textured, colourful still: smooth noise at several scales (phase correlation locks on it)."""
    image = np.zeros((height, width, 3), np.float32)
    for cells in (4, 16, 64):
        coarse = rng.uniform(0, 255, (cells, max(2, cells * width // height), 3)).astype(np.float32)
        image += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) / 3
    return np.clip(image, 0, 255).astype(np.uint8)


def write_footage(path: Path, rng: np.random.Generator, fps: float, frames: int, drift: float = 0.0,
                  zoom: float = 0.0, cut_at: int | None = None, flat: bool = False) -> Path:
    """A fixed shot with a light blob crossing it; `drift` pans the whole view (px per frame), `zoom`
    narrows it (share per frame); `cut_at` switches to another scene at that frame; `flat` films a
    dark, bare scene."""
    width, height = 192, 144
    worlds = [scene(rng, width * 2, height), scene(rng, width * 2, height)]
    if flat:
        worlds = [np.full_like(world, 20) for world in worlds]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for t in range(frames):
        world = worlds[1 if cut_at is not None and t >= cut_at else 0]
        x0 = round(drift * t) % width
        frame = world[:, x0:x0 + width].copy()
        if zoom:
            keep = (1 - zoom) ** t
            crop = frame[round(height * (1 - keep) / 2):, round(width * (1 - keep) / 2):]
            frame = cv2.resize(crop[:round(height * keep), :round(width * keep)], (width, height))
        cv2.circle(frame, (20 + 3 * t % (width - 40), height // 2), 3, (160, 160, 160), -1)
        writer.write(frame)
    writer.release()
    return path


def material(path: Path, kind: str, collection: str) -> shortclips.Material:
    return shortclips.Material(path.name, kind, collection, path.name, str(path))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shortclips")
    rng = np.random.default_rng(0)
    photo = tmp / "photo.jpg"
    cv2.imwrite(str(photo), scene(rng, 256, 192))
    train_pool = [material(photo, "photo", "photos"),
                  material(write_footage(tmp / "train30.mp4", rng, 30, 75), "video", "train-videos")]
    heldout_pool = [material(write_footage(tmp / "held30.mp4", rng, 30, 130, cut_at=65), "video", "held"),
                    material(write_footage(tmp / "held10.mp4", rng, 10, 25), "video", "held"),
                    material(write_footage(tmp / "drifting.mp4", rng, 25, 60, drift=3.0), "video", "held"),
                    material(write_footage(tmp / "zooming.mp4", rng, 25, 60, zoom=0.006), "video", "held"),
                    material(write_footage(tmp / "night.mp4", rng, 25, 60, flat=True), "video", "held")]
    out = tmp / "out"
    records = shortclips.make(train_pool, heldout_pool, out, train=4, heldout=4, seed=3, sizes=(SIZE,))
    return out, records, train_pool, heldout_pool


def horizontal_shifts(path: Path) -> tuple[list[float], float, int, tuple[int, int]]:
    """Per-frame horizontal shift of the content (px, + = moves right), fps, frame count, size."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    greys = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        greys.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32))
    capture.release()
    window = cv2.createHanningWindow(greys[0].shape[::-1], cv2.CV_32F)
    shifts = [cv2.phaseCorrelate(a, b, window)[0][0] for a, b in itertools.pairwise(greys)]
    return shifts, fps, len(greys), (greys[0].shape[1], greys[0].shape[0])


def test_clips_have_the_labelled_length_rate_size_and_every_rate_in_every_class(built):
    out, records, *_ = built
    assert len(records) == 2 * 4 * len(shortclips.CLASSES)
    for split in shortclips.SPLITS:
        for label in shortclips.CLASSES:
            rows = [r for r in records if r["split"] == split and r["label"] == label]
            assert sorted(r["fps"] for r in rows) == sorted(shortclips.FRAME_RATES)
            assert sorted(p.name for p in (out / split / label).glob("*.mp4")) == \
                sorted(Path(r["path"]).name for r in rows)
    for record in records:
        _, fps, frames, size = horizontal_shifts(out / record["path"])
        assert fps == pytest.approx(record["fps"], abs=0.01)
        assert frames == record["frames"]
        assert 1.0 <= frames / fps <= 2.0 + 0.5 / fps
        assert size == SIZE
    assert json.loads((out / "sources.json").read_text()) == records


def test_pans_move_the_labelled_way_and_static_shots_hold_still(built):
    out, records, *_ = built
    assert all(r["shows_label"] for r in records)
    for record in records:
        shifts, *_ = horizontal_shifts(out / record["path"])
        travel = sum(shifts)
        if record["label"] == "static":
            assert abs(travel) < 0.05 * SIZE[0], record
        else:
            # "pan left" turns the camera left: the scene moves right in the frame.
            expected = record["pan_speed"] * record["seconds"] * SIZE[0]
            sign = 1 if record["label"] == "pan left" else -1
            assert sign * travel > 0.5 * expected, (record, travel)


def test_pools_stay_apart_and_drifting_or_cut_footage_is_not_used(built):
    out, records, train_pool, heldout_pool = built
    train_ids, heldout_ids = {m.id for m in train_pool}, {m.id for m in heldout_pool}
    assert {r["source"] for r in records if r["split"] == "train"} <= train_ids
    assert {r["source"] for r in records if r["split"] == "heldout"} <= \
        heldout_ids - {"drifting.mp4", "zooming.mp4", "night.mp4"}
    footage = {f["id"]: f for f in json.loads((out / "footage.json").read_text())}
    assert "holds still" in footage["drifting.mp4"]["left_out"]
    assert "holds still" in footage["zooming.mp4"]["left_out"]
    assert "flat" in footage["night.mp4"]["left_out"]
    assert footage["held10.mp4"]["left_out"] is None
    assert footage["held30.mp4"]["cuts"] == [65]
    for record in records:
        if record["source"] == "held30.mp4":
            last = record["start_frame"] + round((record["frames"] - 1) * 30 / record["fps"])
            assert last < 65 or record["start_frame"] >= 65, record
        if record["source"] == "held10.mp4":  # 10 fps footage makes no clip faster than it
            assert record["fps"] <= 10 / shortclips.MIN_RATE_SHARE


def test_a_static_window_filled_by_something_moving_is_not_taken_for_static():
    """A box carried across the whole window: the view does not show a still camera, so the window
    is placed again (and the clip flagged if no placement shows it)."""
    world = scene(np.random.default_rng(5), 400, 72)
    frames = [np.ascontiguousarray(world[:, 4 * t:4 * t + SIZE[0]]) for t in range(20)]
    job = shortclips.ClipJob("heldout", "static", 0, 0, 20, len(frames), *SIZE, source=None)
    shown, travel = shortclips.shows_its_label(job, frames)
    assert not shown and travel[0] < -0.5
    job.label, job.pan_speed = "pan right", 0.8
    assert shortclips.shows_its_label(job, frames)[0]
    job.label = "pan left"
    assert not shortclips.shows_its_label(job, frames)[0]


def test_footage_that_creeps_under_the_window_makes_no_static_clip_that_shows_still(tmp_path):
    """Footage drifting 0.02 frame widths a second is still by the footage rule (MAX_OWN_MOTION), but
    a window a third to a half as wide sees it drift like the camera corpus's slowest pans: its
    `static` windows are placed again and, drifting everywhere, flagged; a still shot's are not."""
    rng = np.random.default_rng(4)
    creeping = material(write_footage(tmp_path / "creeping.mp4", rng, 25, 60, drift=0.02 * 192 / 25), "video", "held")
    still = material(write_footage(tmp_path / "still.mp4", rng, 30, 75), "video", "held")
    records = shortclips.make([], [creeping, still], tmp_path / "out", train=0, heldout=4, seed=3, sizes=(SIZE,))
    footage = {f["id"]: f for f in json.loads((tmp_path / "out" / "footage.json").read_text())}
    assert footage["creeping.mp4"]["left_out"] is None
    static = [r for r in records if r["label"] == "static"]
    assert {r["source"] for r in static} == {"creeping.mp4", "still.mp4"}
    for record in static:
        seconds = (record["frames"] - 1) / record["fps"]
        drift = float(np.hypot(record["view_travel"], record["view_travel_y"])) / seconds
        assert record["shows_label"] == (drift < shortclips.MAX_VIEW_DRIFT), record
        if record["source"] == "creeping.mp4":
            assert not record["shows_label"] and record["placements"] == shortclips.PLACEMENTS, record
        else:
            assert record["shows_label"] and record["placements"] == 1, record


def test_a_static_window_whose_view_moves_up_or_down_is_not_taken_for_static():
    """A slow tilt is not a still camera, though nothing moves sideways."""
    world = scene(np.random.default_rng(6), SIZE[0], 240)
    frames = [np.ascontiguousarray(world[2 * t:2 * t + SIZE[1]]) for t in range(20)]
    job = shortclips.ClipJob("heldout", "static", 0, 0, 20, len(frames), *SIZE, source=None)
    shown, (across, down) = shortclips.shows_its_label(job, frames)
    assert not shown and abs(across) < 0.02 and down < -0.1  # 0.3 of the width in all; tiles read less
    still = [frames[0]] * 20
    shown, travel = shortclips.shows_its_label(job, still)
    assert shown and max(map(abs, travel)) < 0.01
