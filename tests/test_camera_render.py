"""The camera corpus's renderer (examples/camera/render.py): objects that cross a fixed shot and objects
that swing back and forth near the lens (a hand waving a cup), which must stay in the `static` class's
clips as moving objects, never as a camera move."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "camera"))
import render  # noqa: E402

PHOTO = ROOT / "tests" / "fixtures" / "coffee.jpg"


def square(size: int = 40) -> np.ndarray:
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = (0, 0, 255)
    rgba[..., 3] = 255
    return rgba


def test_a_crossing_object_moves_in_a_straight_line():
    obj = render.MovingObject(square(), np.array([10.0, 20.0]), np.array([3.0, -1.0]), 50.0, 2.0)
    position, size, angle = obj.at(4)
    np.testing.assert_allclose(position, [22.0, 16.0])
    assert (size, angle) == (50.0, 8.0)


def test_a_swinging_object_goes_back_and_forth_and_grows_and_shrinks():
    period = 20.0
    obj = render.MovingObject(square(), np.array([100.0, 50.0]), np.array([1.0, 0.0]), 40.0, 3.0,
                              swing=(30.0, period, 0.0, 0.25, 0.0))
    xs = [obj.at(t)[0][0] for t in range(int(period) + 1)]
    assert 129 < max(xs) <= 130 and 70 <= min(xs) < 71  # +-30 px along x
    np.testing.assert_allclose(obj.at(int(period))[0], obj.at(0)[0], atol=1e-9)  # back after one period
    sizes = [obj.at(t)[1] for t in range(int(period))]
    assert math.isclose(max(sizes), 50.0, rel_tol=1e-3) and math.isclose(min(sizes), 30.0, rel_tol=1e-3)


def test_a_static_clip_with_a_swinging_object_keeps_the_background_still():
    photo = render.load_background(PHOTO)
    plan = render.ClipPlan("static", 160, 96, 25, 25, 0.0, "constant", 0.0)
    centre = np.array([photo.shape[1] / 2, photo.shape[0] / 2])
    obj = render.MovingObject(square(), centre, np.array([1.0, 0.0]), 30.0, 0.0, swing=(40.0, 25.0, 0.0, 0.0, 0.0))
    frames = render.render_clip(np.random.default_rng(0), plan, photo, [], 0, lambda window, view: obj, degrade=False)
    red = [(f[..., 2] > 200) & (f[..., 0] < 60) & (f[..., 1] < 60) for f in frames]
    columns = [float(np.nonzero(mask)[1].mean()) for mask in red]
    assert max(columns) - min(columns) > 10  # the object swings across the frame
    assert abs(columns[0] - columns[-1]) < 0.25 * (max(columns) - min(columns))  # and comes back
    # away from the object, the picture does not move
    still = ~np.logical_or.reduce(red)
    still = cv2.erode(still.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.abs(frames[0].astype(float) - frames[-1].astype(float))[still].mean() < 2.0


def test_a_low_texture_background_keeps_the_colour_and_loses_most_of_the_texture():
    import make_dataset

    photo = render.load_background(PHOTO)
    flat = make_dataset.low_texture_background(np.random.default_rng(0), photo)
    assert flat.shape == photo.shape and flat.dtype == np.uint8
    np.testing.assert_allclose(flat.reshape(-1, 3).mean(0), photo.reshape(-1, 3).mean(0), atol=3.0)

    def texture(image):  # mean gradient magnitude of the grey image
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return float(np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)).mean())

    assert texture(flat) < 0.15 * texture(photo)


def test_moving_shots_get_large_objects_only_when_asked_and_keep_their_label(tmp_path):
    """`--moving-large-objects`: so that a large object crossing the shot cannot stand for `static`, pans,
    tilts and zooms get such objects too; 0 leaves them as before, and static shots follow their own share."""
    import json
    import shutil

    import make_dataset

    pool = tmp_path / "sources" / "pool"
    pool.mkdir(parents=True)
    entries = []
    for i in range(12):
        shutil.copyfile(PHOTO, pool / f"photo{i}.jpg")
        cv2.imwrite(str(pool / f"cutout{i}.png"), square(48))
        entries += [{"id": f"photo{i}.jpg", "kind": "background", "collection": "test", "origin": f"photo{i}"},
                    {"id": f"cutout{i}.png", "kind": "object", "collection": "test", "origin": f"cutout{i}"}]
    (pool / "pool.json").write_text(json.dumps(entries))
    photos, _, cutouts = make_dataset._pools(pool.parent, "train")
    assert photos and cutouts  # the split by hash leaves some of each in train

    def make(label: str, index: int, static_large: float, moving_large: float) -> tuple[str, dict]:
        job = (str(pool.parent), str(tmp_path / "clips"), "camera", "train", index, label, 0, 12, 96,
               static_large, 0.0, 0.0, moving_large)
        path, made_label, info = make_dataset.make_one(job)
        assert made_label == label
        video = cv2.VideoCapture(str(tmp_path / "clips" / path))
        assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 12
        return path, info

    for index in range(3):
        assert make("pan left", 100_000 + index, 0.0, 1.0)[1].get("large_object")
        assert make("zoom in", 500_000 + index, 0.0, 1.0)[1].get("large_object")
        assert not make("pan left", 100_010 + index, 1.0, 0.0)[1].get("large_object")
        assert not make("static", 200_000 + index, 0.0, 1.0)[1].get("large_object")
        assert make("static", 200_010 + index, 1.0, 0.0)[1].get("large_object")
