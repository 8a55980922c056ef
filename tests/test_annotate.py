"""`sifa predict VIDEO --annotate out.mp4`: the video written back with its labels drawn in a band.

Sources are lossless FFV1 files, so the decoded input is exactly what was written; the output is a
lossy mp4, compared within codec tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from conftest import pattern_frames, write_video
from predict_helpers import colour_frames
from sifa_cli.engine.annotate import BandLayout, label_colour

WIDTH, HEIGHT = 160, 120


def decoded(path: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.stack(frames)


def colour_video(path: Path, colours: list[str]) -> Path:
    return write_video(path, colour_frames(colours, WIDTH, HEIGHT), fps=10, fourcc="FFV1")


def test_labels_are_drawn_in_a_band_and_the_rest_is_the_input(app, weights, tmp_path):
    # smooth pictures (a gradient, a moving bar): what a codec keeps well, unlike pixel noise
    video = write_video(tmp_path / "pattern.mkv", pattern_frames(30, WIDTH, HEIGHT), fps=10, fourcc="FFV1")
    out = tmp_path / "labelled.mp4"
    result = CliRunner().invoke(app, ["predict", str(video), "-w", str(weights), "-k", "3", "--device", "cpu",
                                      "--annotate", str(out)])
    assert result.exit_code == 0, result.output
    assert f"labelled video: {out} (30 frames, {WIDTH}x{HEIGHT}" in " ".join(result.stderr.split())

    source, written = decoded(video).astype(np.int16), decoded(out).astype(np.int16)
    assert written.shape == source.shape == (30, HEIGHT, WIDTH, 3)
    band = BandLayout.for_frame(HEIGHT, 3, timeline=False).height
    assert 20 <= band <= HEIGHT // 2
    difference = np.abs(written - source).mean(axis=(0, 2, 3))  # per row, over frames, columns, channels
    assert difference[:band].mean() > 50, "the band darkens the picture and carries text"
    # Below the band (past the 16-row codec blocks that straddle its edge) the picture is the input's.
    assert difference[band + 16 :].max() < 6, difference[band + 16 :].round(1)
    # The band holds text: bright glyph pixels on the darkened picture, in every frame.
    band_pixels = written[:, :band].max(axis=3)
    assert ((band_pixels > 200).sum(axis=(1, 2)) > 40).all()


def test_with_a_timeline_each_frame_names_the_segment_playing(app, weights, tmp_path):
    video = colour_video(tmp_path / "red_blue.mkv", ["red"] * 30 + ["blue"] * 30)
    out, results = tmp_path / "timeline.mp4", tmp_path / "results.json"
    result = CliRunner().invoke(app, ["predict", str(video), "-w", str(weights), "--device", "cpu", "--timeline",
                                      "--window", "0.8", "--stride", "0.4", "-o", str(results), "--annotate", str(out)])
    assert result.exit_code == 0, result.output
    [record] = json.loads(results.read_text())
    segments = record["segments"]
    assert len(segments) >= 2 and segments[0]["label"] != segments[-1]["label"]

    written = decoded(out)
    assert len(written) == 60
    layout = BandLayout.for_frame(HEIGHT, 2, timeline=True)
    swatch = max(4, layout.line // 2)
    baseline = layout.pad + layout.line - max(2, layout.line // 4)
    for segment in (segments[0], segments[-1]):
        frame = written[int((segment["start"] + segment["end"]) / 2 * 10)]
        # The colour swatch before the label is the segment's colour ...
        patch = frame[baseline - swatch + 1 : baseline - 1, layout.pad + 1 : layout.pad + swatch - 1]
        assert np.abs(patch.reshape(-1, 3).mean(axis=0) - label_colour(segment["label"])).max() < 40
        # ... and so is the timeline strip under the segment's stretch of the video.
        x = int((segment["start"] + segment["end"]) / 2 / record["duration"] * WIDTH) + 3
        strip = frame[layout.height - layout.strip + 1 : layout.height - 1, x]
        assert np.abs(strip.mean(axis=0) - label_colour(segment["label"])).max() < 40


def test_annotate_refuses_to_overwrite_its_input_and_bad_targets(app, weights, tmp_path):
    video = write_video(tmp_path / "clip.mp4", colour_frames(["green"] * 12), fps=10)
    before = video.read_bytes()
    (tmp_path / "sub").mkdir()
    cases = [
        ([str(video), "--annotate", str(tmp_path / "sub" / ".." / "clip.mp4")], "is the input video itself"),
        ([str(video), "--annotate", str(tmp_path / "out.avi")], "must end with .mp4"),
        ([str(video), "--annotate", str(tmp_path / "missing" / "out.mp4")], "does not exist"),
        ([str(video), str(video.with_name("other.mp4")), "--annotate", str(tmp_path / "o.mp4")], None),
    ]
    write_video(tmp_path / "other.mp4", colour_frames(["red"] * 12), fps=10)
    for args, message in cases:
        result = CliRunner().invoke(app, ["predict", *args, "-w", str(weights)])
        assert result.exit_code == 2, result.output
        assert (message or "--annotate draws on one video; 2 were given") in result.stderr
        assert "Traceback" not in result.output
    assert video.read_bytes() == before
    assert not list(tmp_path.glob("*.mp4.*")) and not (tmp_path / "o.mp4").exists()
