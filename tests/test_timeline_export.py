"""Timeline exports (`sifa predict VIDEO --timeline -o x.otio|.edl|.vtt|.srt|.csv|.html`) read back by
real readers (OpenTimelineIO, its CMX 3600 adapter, webvtt-py, srt, csv), frame numbers compared
exactly; timecode maths checked against OpenTimelineIO at every supported rate.

The videos are hard cuts between colours at known frames, scored by the tiny colour model of
tests/predict_helpers.py: each shot is one segment, so the true frames of every segment are known.
"""

from __future__ import annotations

import csv
import math
import re
from fractions import Fraction

import pytest

from cli_run import error_lines, run_sifa
from predict_helpers import colour_checkpoint, write_colour_video
from sifa_cli.engine.timecode import TimecodeRate, snap_rate
from sifa_cli.errors import InputError

otio = pytest.importorskip("opentimelineio")
pytestmark = pytest.mark.timeout(3600)  # CLI runs: minutes each on a busy 2-core machine
SLOW = 900  # a busy 2-core machine can stretch one run to minutes
# Not red: its hue wraps around 0, and the colour videos' noise then reads as cuts to the HSV detector.
SHOTS = [("green", 30), ("blue", 45), ("green", 25), ("blue", 40)]
RATES = {"23.976": Fraction(24000, 1001), "24": Fraction(24), "25": Fraction(25), "29.97": Fraction(30000, 1001),
         "30": Fraction(30), "50": Fraction(50), "59.94": Fraction(60000, 1001)}


def expected_segments():
    out, position = [], 0
    for label, frames in SHOTS:
        out.append((position, position + frames, label))
        position += frames
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return colour_checkpoint(tmp_path_factory.mktemp("weights"))


def _video(folder, rate_name):
    colours = [label for label, frames in SHOTS for _ in range(frames)]
    return write_colour_video(folder / f"cuts_{rate_name}.mp4", colours, fps=float(RATES[rate_name]))


def _export(weights, video, output, *extra):
    result = run_sifa("predict", video, "-w", weights, "--timeline", "--window", "1", "--stride", "0.5",
                      "--device", "cpu", "-o", output, *extra, timeout=SLOW)
    assert result.returncode == 0, result.stderr[-2000:]
    assert output.exists()
    return result


@pytest.mark.parametrize("rate_name, start", [("23.976", "10:00:00:00"), ("29.97", "01:00:59;00")])
def test_otio_and_edl_read_back_frame_exact_with_a_start_timecode(weights, tmp_path, rate_name, start):
    rate = float(RATES[rate_name])
    video = _video(tmp_path, rate_name)
    start_frames = int(otio.opentime.from_timecode(start, rate).value)  # OpenTimelineIO's own conversion
    expected = expected_segments()

    _export(weights, video, tmp_path / "cuts.otio", "--start-timecode", start)
    timeline = otio.adapters.read_from_file(str(tmp_path / "cuts.otio"))
    assert otio.opentime.to_timecode(timeline.global_start_time, rate) == start
    clips = list(timeline.find_clips())
    got = []
    for clip in clips:
        media_start = clip.media_reference.available_range.start_time
        assert media_start.value == start_frames and media_start.rate == pytest.approx(rate)
        first = clip.source_range.start_time.value - media_start.value
        got.append((int(first), int(first + clip.source_range.duration.value), clip.markers[0].name.split(" ")[0]))
        assert float(first).is_integer() and clip.media_reference.target_url.endswith(video.name)
    assert got == expected
    assert len({clip.markers[0].color for clip in clips if clip.markers[0].name.startswith("green")}) == 1

    _export(weights, video, tmp_path / "cuts.edl", "--start-timecode", start)
    text = (tmp_path / "cuts.edl").read_text()
    drop = rate_name == "29.97"
    assert ("FCM: DROP FRAME" if drop else "FCM: NON-DROP FRAME") in text
    read = otio.adapters.read_from_file(str(tmp_path / "cuts.edl"), rate=rate)
    edl_clips = list(read.find_clips())
    assert [(int(c.source_range.start_time.value) - start_frames,
             int(c.source_range.end_time_exclusive().value) - start_frames) for c in edl_clips] == \
        [(a, b) for a, b, _ in expected]
    # locators: one per event, at its first frame (the CMX adapter reads no drop-frame "HH:MM:SS;FF"
    # locator, though its own writer writes them so: those are checked from the text below)
    if not drop:
        assert [c.markers[0].name.split(" ")[0] for c in edl_clips] == [label for _, _, label in expected]
        assert [c.markers[0].marked_range.start_time.value for c in edl_clips] == \
            [c.source_range.start_time.value for c in edl_clips]
    locators = re.findall(r"^\* LOC: (\S+) +(\w+) +(\w+)", text, re.M)
    assert [(otio.opentime.from_timecode(tc, rate).value - start_frames, label) for tc, _, label in locators] == \
        [(first, label) for first, _, label in expected]
    # the event lines themselves, every timecode converted by OpenTimelineIO
    events = re.findall(r"^(\d{3})\s+AX\s+V\s+C\s+(\S+) (\S+) (\S+) (\S+)\s*$", text, re.M)
    assert len(events) == len(expected)
    for (number, src_in, src_out, rec_in, rec_out), (first, stop, _) in zip(events, expected):
        assert (src_in, src_out) == (rec_in, rec_out) and (";" in src_in) == drop
        assert otio.opentime.from_timecode(src_in, rate).value == start_frames + first
        assert otio.opentime.from_timecode(src_out, rate).value == start_frames + stop


def test_vtt_srt_and_csv_read_back_frame_exact(weights, tmp_path):
    webvtt = pytest.importorskip("webvtt")
    srt = pytest.importorskip("srt")
    rate = RATES["25"]
    video = _video(tmp_path, "25")
    expected = expected_segments()

    def frame(seconds: float) -> int:  # cues start on their frame, rounded down to the millisecond
        return math.ceil(seconds * float(rate) - 1e-6)

    _export(weights, video, tmp_path / "cuts.vtt")
    cues = webvtt.read(str(tmp_path / "cuts.vtt"))
    assert [(frame(_seconds(c.start)), frame(_seconds(c.end)), c.text.split("· ")[-1].split(" ")[0])
            for c in cues] == expected

    _export(weights, video, tmp_path / "cuts.srt")
    subtitles = list(srt.parse((tmp_path / "cuts.srt").read_text()))
    assert [(frame(s.start.total_seconds()), frame(s.end.total_seconds()), s.content.split("· ")[-1].split(" ")[0])
            for s in subtitles] == expected


def _seconds(clock: str) -> float:
    hh, mm, ss = clock.split(":")
    return int(hh) * 3600 + int(mm) * 60 + float(ss)


@pytest.mark.parametrize("rate_name, start", [("59.94", "00:00:59;58"), ("25", None)])
def test_csv_has_pyscenedetect_columns_frame_exact(weights, tmp_path, rate_name, start):
    rate = float(RATES[rate_name])
    video = _video(tmp_path, rate_name)
    _export(weights, video, tmp_path / "cuts.csv", *(["--start-timecode", start] if start else []))
    rows = list(csv.DictReader((tmp_path / "cuts.csv").open(newline="")))
    start_frames = int(otio.opentime.from_timecode(start, rate).value) if start else 0
    got = []
    for number, row in enumerate(rows, 1):
        assert int(row["Scene Number"]) == number
        first, last = int(row["Start Frame"]) - 1, int(row["End Frame"])  # PySceneDetect: 1-based, end inclusive
        assert int(row["Length (frames)"]) == last - first
        assert otio.opentime.from_timecode(row["Start Timecode"], rate).value == start_frames + first
        assert otio.opentime.from_timecode(row["End Timecode"], rate).value == start_frames + last
        assert float(row["Start Time (seconds)"]) == pytest.approx(first / rate, abs=6e-4)
        assert row["Shot"] == str(number) and row["Uncertain"] in ("yes", "no")
        got.append((first, last, row["Label"]))
    assert got == expected_segments()


def test_html_report_is_one_offline_file_with_pictures(weights, tmp_path):
    video = _video(tmp_path, "25")
    _export(weights, video, tmp_path / "report.html", "--start-timecode", "01:00:00:00")
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)=['"](?!data:)""", page)  # nothing fetched from elsewhere
    assert page.count("data:image/jpeg;base64,") == 3 * len(SHOTS)  # first, middle, last frame of each
    assert page.count("<tr class=") == len(SHOTS) and "01:00:00:00" in page and "Uncertain parts" in page


def test_timecode_matches_opentimelineio_at_every_rate():
    for name, rate in RATES.items():
        tc = TimecodeRate(rate)
        assert snap_rate(float(rate)) == rate and snap_rate(float(f"{float(rate):.3f}")) == rate
        drop = name in ("29.97", "59.94")
        frames = list(range(0, 3000, 7)) + list(range(17970, 18000)) + [107892, 107891, 215784, 2589407]
        for frame in frames:
            reference = otio.opentime.to_timecode(otio.opentime.RationalTime(frame, float(rate)), float(rate),
                                                  drop_frame=drop)
            assert tc.timecode(frame) == reference, (name, frame)
            assert tc.frame(reference) == frame % tc.per_day  # timecode wraps after 24 hours


def test_bad_timecodes_are_refused():
    ntsc = TimecodeRate(Fraction(30000, 1001))
    for text in ("1:00:00", "01:00:00:30", "25:00:00:00", "01:01:00;00", "01:01:00;01", "aa:bb:cc:dd"):
        with pytest.raises(InputError):
            ntsc.frame(text)
    assert ntsc.frame("01:10:00;00") == ntsc.frame("01:09:59;29") + 1  # minute 10 keeps its frames
    with pytest.raises(InputError, match="frames 0-24"):
        TimecodeRate(Fraction(25)).frame("00:00:00:25")


def test_export_mistakes_are_one_line_and_lose_nothing(weights, tmp_path):
    video = _video(tmp_path, "25")
    other = write_colour_video(tmp_path / "other.mp4", ["blue"] * 12, fps=25)
    kept = tmp_path / "kept.edl"
    kept.write_text("an edit list someone made\n")
    cases = [
        (["-o", tmp_path / "x.edl"], "is a timeline export: add --timeline"),
        (["--timeline", "-o", tmp_path / "x.edl", other], "holds one video's timeline, but 2 videos were given"),
        (["--timeline", "-o", kept], "already exists; add --overwrite"),
        (["--timeline", "-o", tmp_path / "x.edl", "--start-timecode", "1:2:3"], "must look like HH:MM:SS:FF"),
        (["--timeline", "-o", tmp_path / "x.edl", "--start-timecode", "00:00:00:25"], "frames 0-24"),
        (["--timeline", "-o", tmp_path / "x.vtt", "--start-timecode", "01:00:00:00"], "--start-timecode applies to"),
        (["--timeline", "-o", tmp_path / "x.edl", "--format", "json"], "does not apply to --output"),
        (["--timeline", "--start-timecode", "01:00:00:00"], "--start-timecode applies to"),
    ]
    for args, message in cases:
        result = run_sifa("predict", video, "-w", weights, *args, timeout=SLOW)
        assert result.returncode != 0, (args, result.stdout[-500:])
        (line,) = error_lines(result)
        assert message in line, (args, line)
    assert kept.read_text() == "an edit list someone made\n"
    assert not (tmp_path / "x.edl").exists() and not (tmp_path / "x.vtt").exists()
