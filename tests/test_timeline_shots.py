"""Shot cuts in timelines, on edited videos of real imagery with known hard cuts (tests/edited_media.py),
through the real CLI and the shipped camera-movement model: every cut on a segment boundary, no
segment across a cut, shot labels as good as with the shots cut apart; --no-cuts; uncertainty."""

from __future__ import annotations

import json

import pytest

from cli_run import error_lines, run_sifa
from edited_media import edited_video, separate_shots

# Shots of 2.4-3.6 s at 25 fps, and one of 0.8 s (shorter than a 2 s window).
SHOTS = [("pan left", 80), ("static", 70), ("zoom in", 90), ("tilt up", 20), ("pan right", 80), ("zoom out", 75)]


# A busy 2-core machine (nice 19 beside a training job) can stretch one run to minutes.
SLOW = 900
pytestmark = pytest.mark.timeout(3600)


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edited")
    path = folder / "edit.mp4"
    cuts = edited_video(path, SHOTS)
    return folder, path, cuts


def _timeline(path, *extra):
    # 2 s windows (one every 1 s), longer than the model's clip span, the default
    result = run_sifa("predict", path, "--timeline", "--window", "2", "--format", "json", "--device", "cpu", *extra,
                      timeout=SLOW)
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = json.loads(result.stdout)
    return record, result


@pytest.fixture(scope="module")
def with_cuts(edited):
    """The default timeline (cuts on), with uncertainty marked below 0.95 so some segments are."""
    return _timeline(edited[1], "--uncertain-below", "0.95")[0]


def test_segments_end_at_every_cut_and_never_cross_one(edited, with_cuts):
    folder, path, cuts = edited
    record = with_cuts
    segments = record["segments"]
    bounds = [s["start_frame"] for s in segments[1:]]
    for cut in cuts:
        assert min(abs(cut - b) for b in bounds) <= 2, (cut, bounds)
    for s in segments:
        assert not any(s["start_frame"] < cut < s["end_frame"] for cut in cuts), (s, cuts)
    # segments tile the video, each names its shot, and the shots are the edit's
    assert segments[0]["start_frame"] == 0 and segments[-1]["end_frame"] == record["frames"] == sum(n for _, n in SHOTS)
    assert all(a["end_frame"] == b["start_frame"] for a, b in zip(segments, segments[1:]))
    shots = [(s["start_frame"], s["end_frame"]) for s in record["shots"]]
    assert [first for first, _ in shots[1:]] == cuts  # found exactly, on this footage
    assert all(shots[s["shot"] - 1][0] <= s["start_frame"] < s["end_frame"] <= shots[s["shot"] - 1][1] for s in segments)
    # no window crosses a cut either
    fps = record["fps"]
    for w in record["windows"]:
        first, stop = shots[w["shot"] - 1]
        assert first / fps - 1e-3 <= w["start"] and w["end"] <= stop / fps + 1e-3, (w, first, stop)
    # the 20-frame shot is labelled from the frames it has, and a note says so
    assert any("1 shot shorter than a window (2 s), the shortest 20 frames" in note for note in record["notes"])


def test_shot_labels_are_as_good_as_with_the_shots_cut_apart(edited, with_cuts, tmp_path):
    record = with_cuts
    by_shot = {}
    for s in record["segments"]:  # the label covering most of each shot
        by_shot.setdefault(s["shot"], []).append((s["end_frame"] - s["start_frame"], s["label"]))
    in_edit = [max(by_shot[n])[1] for n in range(1, len(SHOTS) + 1)]
    apart = separate_shots(tmp_path, SHOTS)
    result = run_sifa("predict", *apart, "--format", "json", "--device", "cpu", timeout=SLOW)
    assert result.returncode == 0, result.stderr[-2000:]
    cut_apart = [r["top"][0]["label"] for r in json.loads(result.stdout)]
    truth = [label for label, _ in SHOTS]
    right_in_edit = sum(a == b for a, b in zip(in_edit, truth))
    right_apart = sum(a == b for a, b in zip(cut_apart, truth))
    assert right_in_edit >= right_apart, (in_edit, cut_apart)
    assert right_in_edit == len(SHOTS), in_edit


def test_no_cuts_gives_the_old_timeline_and_a_cut_inside_windows(edited):
    folder, path, cuts = edited
    record, _ = _timeline(path, "--no-cuts")
    assert "shots" not in record and all("shot" not in s for s in record["segments"])
    starts = [w["start"] for w in record["windows"]]
    assert starts[:-1] == [float(k) for k in range(len(starts) - 1)]  # every 1 s, blind to the cuts
    assert record["windows"][-1]["end"] == record["duration"]  # and the last one aligned to the end
    assert any(s["start_frame"] < cut < s["end_frame"] for s in record["segments"] for cut in cuts)


def test_uncertainty_threshold_marks_segments_and_the_table_shows_it(edited, with_cuts):
    folder, path, cuts = edited
    record = with_cuts
    marked = [s for s in record["segments"] if s["uncertain"]]
    assert marked and all(s["score"] < 0.95 or s["score"] - s["runner_up"]["score"] < 0.15 for s in marked)
    assert all(not s["uncertain"] for s in record["segments"] if s["score"] >= 0.95 and
               s["score"] - s["runner_up"]["score"] >= 0.15)
    assert all(s["runner_up"]["label"] != s["label"] for s in record["segments"])
    # settings record the thresholds (a re-run with others is not mixed into the same file)
    assert record["settings"]["timeline"]["uncertain_below"] == 0.95
    table = run_sifa("predict", path, "--timeline", "--window", "2", "--device", "cpu", "--uncertain-below", "0.95",
                     timeout=SLOW)
    assert table.returncode == 0, table.stderr[-2000:]
    assert f"? uncertain ({len(marked)}): mean top score below 0.95" in table.stdout
    assert "runner-up" in table.stdout and "5 cuts found, 6 shots; --no-cuts to ignore them" in table.stdout


@pytest.mark.parametrize("args, message", [
    (["--no-cuts"], "--cuts/--no-cuts applies to --timeline"),
    (["--uncertain-below", "0.5"], "--uncertain-below applies to --timeline"),
    (["--timeline", "--uncertain-below", "1.5"], "--uncertain-below must be a score between 0 and 1"),
    (["--timeline", "--uncertain-margin", "-1"], "--uncertain-margin must be between 0 and 1"),
])
def test_bad_timeline_options_are_one_line(edited, args, message):
    folder, path, cuts = edited
    result = run_sifa("predict", path, *args, timeout=SLOW)
    assert result.returncode != 0
    (line,) = error_lines(result)
    assert message in line
