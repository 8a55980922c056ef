"""Timeline exports for editing tools, chosen by the --output suffix of `sifa predict --timeline`.

- `.otio`: OpenTimelineIO. One video track; each segment is a clip of the source media (its frames
  as the source range) with a marker naming the label in a colour per class; the media's range
  starts at the start timecode. Written with the opentimelineio library.
- `.edl`: CMX 3600. One event per segment, source and record timecode equal (the segments laid
  end to end as in the source), the label as a locator (`* LOC:`) and a comment.
- `.vtt` / `.srt`: one subtitle cue per segment, timed at its first frame and the frame after its
  last (at the video's frame rate, in whole milliseconds rounded down, so each cue begins on its
  own first frame).
- `.csv`: one row per segment with PySceneDetect's `list-scenes` columns (Start Frame is 1-based,
  End Frame is the segment's last frame, also 1-based) but SMPTE timecode, then label, score,
  uncertainty, runner-up and shot.
- `.html`: see sifa_cli.engine.timeline_report.

Frame numbers are exact: they come from the segments' frames, and timecode from
sifa_cli.engine.timecode (drop-frame at 29.97 and 59.94 fps).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sifa_cli.csvcells import neutralise
from sifa_cli.engine.records import Segment, VideoResult
from sifa_cli.engine.timecode import TimecodeRate, format_rate
from sifa_cli.errors import InputError, SifaError
from sifa_cli.fileio import atomic_write_path

EXPORT_SUFFIXES = (".otio", ".edl", ".vtt", ".srt", ".csv", ".html")
# Marker colours, one per class in the model's order (OpenTimelineIO's names; EDL locators take the same).
COLOURS = ("RED", "GREEN", "BLUE", "YELLOW", "CYAN", "MAGENTA", "ORANGE", "PURPLE", "PINK", "WHITE", "BLACK")
CSV_COLUMNS = ("Scene Number", "Start Frame", "Start Timecode", "Start Time (seconds)", "End Frame", "End Timecode",
               "End Time (seconds)", "Length (frames)", "Length (timecode)", "Length (seconds)",
               "Label", "Score", "Uncertain", "Runner-up", "Runner-up Score", "Shot")


def export_suffix(output: Optional[Path]) -> Optional[str]:
    """The export an --output names by its suffix, or None (a results file)."""
    suffix = output.suffix.lower() if output is not None else ""
    return suffix if suffix in EXPORT_SUFFIXES else None


def check_export_tools(suffix: str) -> None:
    """Refuse before any work when the library an export needs is missing."""
    if suffix == ".otio":
        try:
            import opentimelineio  # noqa: F401
        except ImportError:
            raise InputError("writing .otio needs OpenTimelineIO: pip install opentimelineio "
                             "(or sifa[timeline])") from None


@dataclass
class TimelineDoc:
    """One video's timeline, ready to export: segments with frames, at an exact rate."""

    media: Path
    rate: TimecodeRate
    frames: int
    segments: list[Segment]
    start: int  # the start timecode, as a frame count
    categories: list[str]

    @classmethod
    def from_result(cls, result: VideoResult, categories: list[str], start_timecode: Optional[str]) -> "TimelineDoc":
        if not result.fps or not result.frames or not result.segments:
            raise SifaError(f"{result.path}: no timeline to export (no frames or frame rate)")
        rate = TimecodeRate.for_fps(result.fps)
        start = rate.frame(start_timecode) if start_timecode else 0
        return cls(Path(result.path), rate, result.frames, list(result.segments), start, list(categories))

    def timecode(self, frame: int) -> str:
        return self.rate.timecode(self.start + frame)

    def colour(self, label: str) -> str:
        index = self.categories.index(label) if label in self.categories else len(self.categories)
        return COLOURS[index % len(COLOURS)]


def segment_text(segment: Segment) -> str:
    """'pan left 0.93' or 'pan left 0.42 (uncertain; runner-up zoom in 0.38)'."""
    text = f"{segment.label} {segment.score:.2f}"
    if segment.uncertain:
        runner = f"; runner-up {segment.runner_up[0]} {segment.runner_up[1]:.2f}" if segment.runner_up else ""
        text += f" (uncertain{runner})"
    return text


def write_export(doc: TimelineDoc, output: Path) -> None:
    """Write `doc` in the format `output`'s suffix names, atomically."""
    suffix = output.suffix.lower()
    if suffix == ".html":
        from sifa_cli.engine.timeline_report import html_report

        text = html_report(doc)
    elif suffix == ".otio":
        text = otio_text(doc)
    else:
        text = {".edl": edl_text, ".vtt": vtt_text, ".srt": srt_text, ".csv": csv_text}[suffix](doc)
    with atomic_write_path(output) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


# -- OpenTimelineIO ------------------------------------------------------------------------------

def otio_text(doc: TimelineDoc) -> str:
    import opentimelineio as otio

    rate = float(doc.rate.rate)

    def time(frames: int) -> "otio.opentime.RationalTime":
        return otio.opentime.RationalTime(frames, rate)

    media = otio.schema.ExternalReference(
        target_url=doc.media.resolve().as_uri(),
        available_range=otio.opentime.TimeRange(time(doc.start), time(doc.frames)))
    track = otio.schema.Track(name="camera moves", kind=otio.schema.TrackKind.Video)
    for number, segment in enumerate(doc.segments, 1):
        length = segment.end_frame - segment.start_frame
        clip = otio.schema.Clip(name=f"{number:03d} {segment.label}", media_reference=media.clone(),
                                source_range=otio.opentime.TimeRange(time(doc.start + segment.start_frame),
                                                                     time(length)))
        clip.metadata["sifa"] = _segment_metadata(segment)
        clip.markers.append(otio.schema.Marker(
            name=segment_text(segment), color=doc.colour(segment.label),
            marked_range=otio.opentime.TimeRange(time(doc.start + segment.start_frame), time(length)),
            metadata={"sifa": _segment_metadata(segment)}))
        track.append(clip)
    timeline = otio.schema.Timeline(name=doc.media.name, global_start_time=time(doc.start))
    timeline.tracks.append(track)
    timeline.metadata["sifa"] = {"media": str(doc.media), "rate": format_rate(doc.rate.rate),
                                 "drop_frame": doc.rate.drop_frame, "frames": doc.frames}
    return otio.adapters.write_to_string(timeline, "otio_json") + "\n"


def _segment_metadata(segment: Segment) -> dict:
    return {"label": segment.label, "score": segment.score, "start_frame": segment.start_frame,
            "end_frame": segment.end_frame, "shot": segment.shot, "uncertain": segment.uncertain,
            "runner_up": list(segment.runner_up) if segment.runner_up else None}


# -- CMX 3600 EDL --------------------------------------------------------------------------------

REEL = "AX"  # CMX's name for a file-based source: the clip name comment says which file


def edl_text(doc: TimelineDoc) -> str:
    lines = [f"TITLE: {_edl_safe(doc.media.stem)[:70]}", f"FCM: {'DROP FRAME' if doc.rate.drop_frame else 'NON-DROP FRAME'}", ""]
    for number, segment in enumerate(doc.segments, 1):
        tc_in, tc_out = doc.timecode(segment.start_frame), doc.timecode(segment.end_frame)
        lines.append(f"{number:03d}  {REEL:<8} V     C        {tc_in} {tc_out} {tc_in} {tc_out}")
        lines.append(f"* FROM CLIP NAME: {_edl_safe(doc.media.name)}")
        lines.append(f"* LOC: {tc_in} {doc.colour(segment.label):<7} {_edl_safe(segment_text(segment))}")
        shot = f" shot {segment.shot}" if segment.shot is not None else ""
        lines.append(f"* COMMENT: sifa {_edl_safe(segment_text(segment))}{shot}")
        lines.append("")
    return "\r\n".join(lines)


def _edl_safe(text: str) -> str:
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())


# -- subtitles -----------------------------------------------------------------------------------

def cue_milliseconds(doc: TimelineDoc, frame: int) -> int:
    """When frame `frame` starts, in whole milliseconds rounded down (a cue then starts on it)."""
    rate = doc.rate.rate
    return (frame * 1000 * rate.denominator) // rate.numerator


def _clock(ms: int, separator: str) -> str:
    seconds, ms = divmod(ms, 1000)
    minutes, ss = divmod(seconds, 60)
    hh, mm = divmod(minutes, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}{separator}{ms:03d}"


def _cues(doc: TimelineDoc, separator: str) -> list[str]:
    blocks = []
    for number, segment in enumerate(doc.segments, 1):
        start = _clock(cue_milliseconds(doc, segment.start_frame), separator)
        end = _clock(cue_milliseconds(doc, segment.end_frame), separator)
        shot = f"shot {segment.shot} · " if segment.shot is not None else ""
        blocks.append(f"{number}\n{start} --> {end}\n{shot}{segment_text(segment)}\n")
    return blocks


def vtt_text(doc: TimelineDoc) -> str:
    return "WEBVTT\n\n" + "\n".join(_cues(doc, "."))


def srt_text(doc: TimelineDoc) -> str:
    return "\n".join(_cues(doc, ","))


# -- CSV -----------------------------------------------------------------------------------------

def csv_text(doc: TimelineDoc) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for number, segment in enumerate(doc.segments, 1):
        first, end = segment.start_frame, segment.end_frame
        length = end - first
        writer.writerow([
            number, first + 1, doc.timecode(first), f"{doc.rate.seconds(first):.3f}",
            end, doc.timecode(end), f"{doc.rate.seconds(end):.3f}",
            length, doc.rate.timecode(length), f"{doc.rate.seconds(length):.3f}",
            neutralise(segment.label), f"{segment.score:.6f}", "yes" if segment.uncertain else "no",
            neutralise(segment.runner_up[0]) if segment.runner_up else "",
            f"{segment.runner_up[1]:.6f}" if segment.runner_up else "",
            "" if segment.shot is None else segment.shot,
        ])
    return out.getvalue()

