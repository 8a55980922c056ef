"""Shots in timelines: cut detection, windows that never cross a cut, and segments per shot.

`ShotTimelineJob` reads a video once, forward, decoding every frame at the size the model takes
(the timeline needed most of them anyway: a window's clip spans half of it or more); the decode
worker decodes each chunk of frames while the one before is scored. Each frame
goes through PySceneDetect's `ContentDetector` (the HSV difference to the frame before, its
`detect-content` command) as it is decoded. Windows are planned inside each shot as
`plan_windows` plans them over a whole video: a window is scored as soon as its frames are decoded
and no cut fell inside it, and at a cut the shot's last windows (the one aligned to the shot's end
among them) follow. Only the frames of the last window or so are held.

`finish_timeline` turns the scored windows into segments for both kinds of timeline: runs of
windows with the same label, within a shot, ending exactly at its cut, each with its frames, its
shot, the runner-up label and whether the label is uncertain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np
from torch import Tensor

from sifa_cli.data.decode import FrameCountError, Video
from sifa_cli.engine.predict import _TimelineJob, played_duration
from sifa_cli.engine.records import Segment, VideoResult, Window, merge_segments, plan_windows
from sifa_cli.engine.timeline_options import CUT_THRESHOLD, MIN_SHOT_FRAMES, TimelineOptions, content_detector
from sifa_cli.wording import counted

if TYPE_CHECKING:
    from sifa_cli.engine.predict import Predictor

DECODE_CHUNK = 32  # frames per read from the decoder
# FFmpeg threads for the one forward pass over the file (no seeks, so frame threading never restarts).
TIMELINE_DECODER_THREADS = 2


class CutDetector:
    """PySceneDetect's ContentDetector fed frame by frame (RGB, any size); `feed` returns the frame
    numbers that start a new shot. Cuts are reported at once (its SUPPRESS filter mode: no cut
    within MIN_SHOT_FRAMES of the last one), so no window is scored before its cuts are known."""

    def __init__(self, fps: float, threshold: float = CUT_THRESHOLD):
        from scenedetect import FrameTimecode
        from scenedetect.detector import FlashFilter

        self._timecode = FrameTimecode
        self._fps = fps if fps > 0 else 25.0
        self._detector = content_detector()(threshold=threshold, min_scene_len=MIN_SHOT_FRAMES,
                                            filter_mode=FlashFilter.Mode.SUPPRESS)

    def feed(self, index: int, rgb: np.ndarray) -> list[int]:
        cuts = self._detector.process_frame(self._timecode(int(index), self._fps), np.ascontiguousarray(rgb[..., ::-1]))
        return [int(cut.frame_num) for cut in cuts if 0 < cut.frame_num <= index]


class ShotTimelineJob(_TimelineJob):
    """A timeline whose windows stay inside shots (see the module docstring)."""

    def __init__(self, predictor: "Predictor", path, window: Optional[float], stride: Optional[float],
                 options: TimelineOptions):
        super().__init__(predictor, path, window, stride)
        self.options = options
        self.shots: list[tuple[int, int]] = []
        self.window_shots: list[int] = []

    def open(self, threads: int = TIMELINE_DECODER_THREADS) -> Video:
        return super().open(threads)

    def inputs(self, video: Video) -> Iterator[Tensor]:
        times = self._times
        detector = CutDetector(video.info.fps, self.options.cut_threshold)
        held: dict[int, np.ndarray] = {}
        decoded = 0  # frames [0, decoded) have been read and fed to the detector
        shot_first = 0
        done = 0  # windows of the current shot scored so far (in plan_windows' order)
        short_windows, fewest, fewest_distinct, short_shots, shortest = 0, None, None, 0, None

        def window_frames(start_time: float, end_time: float, shot_stop: int) -> tuple[np.ndarray, np.ndarray, bool]:
            first, stop = self._frame_span(start_time, end_time)
            stop = min(max(stop, first + 1), shot_stop)
            first = min(first, stop - 1)
            indices, short = self.sample(first, stop)
            frames = np.stack([held[i] for i in indices.reshape(-1).tolist()])
            return frames.reshape(*indices.shape, *frames.shape[1:]), indices, short

        def score(start_time: float, end_time: float, shot_stop: int) -> Iterator[Tensor]:
            nonlocal short_windows, fewest, fewest_distinct
            frames, indices, short = window_frames(start_time, end_time, shot_stop)
            if short:
                span = self._frame_span(start_time, end_time)
                short_windows += 1
                fewest = min(fewest or 10**9, min(span[1], shot_stop) - span[0])
                distinct = min(len(np.unique(clip)) for clip in indices)
                fewest_distinct = min(fewest_distinct or distinct, distinct)
            self.window_times.append((start_time, end_time))
            self.window_shots.append(len(self.shots) + 1)  # shots are numbered from 1
            yield from self.clip_views(frames)

        def end_shot(stop: int) -> Iterator[Tensor]:
            """The shot [shot_first, stop) is complete: its remaining windows, then the next shot."""
            nonlocal shot_first, done, short_shots, shortest
            start = float(times[shot_first])
            end = float(times[stop]) if stop < len(times) and stop < video.num_frames else self.duration
            planned = plan_windows(max(end - start, 1e-6), self.window, self.stride)
            if len(planned) == 1 and end - start < self.window - 1e-6:
                short_shots += 1
                shortest = min(shortest or 10**9, stop - shot_first)
            for s, e in planned[done:]:
                yield from score(start + s, min(start + e, end), stop)
            self.shots.append((shot_first, stop))
            shot_first, done = stop, 0

        while decoded < video.num_frames:
            wanted = np.arange(decoded, min(decoded + DECODE_CHUNK, video.num_frames))
            following = np.arange(wanted[-1] + 1, min(wanted[-1] + 1 + DECODE_CHUNK, video.num_frames))
            try:  # the worker decodes the following chunk while this one is scored
                frames = video.read(wanted, ahead=following if following.size else None)
            except FrameCountError:  # the file holds fewer frames than it announced: num_frames is now right
                if decoded >= video.num_frames:
                    break
                continue
            for index, frame in zip(wanted.tolist(), frames):
                held[index] = frame
                for cut in detector.feed(index, frame):
                    if cut > shot_first:
                        yield from end_shot(cut)
            decoded = int(wanted[-1]) + 1
            # Windows of the current shot that lie wholly in decoded frames: no cut can fall in them now.
            start = float(times[shot_first])
            last_time = float(times[decoded - 1])
            while start + done * self.stride + self.window <= last_time + 1e-9:
                s = start + done * self.stride
                yield from score(s, s + self.window, decoded)
                done += 1
            # Frames before the earliest a window still to come can use are let go.
            earliest = min(start + done * self.stride, last_time - self.window - self.stride) - 1e-3
            keep_from = max(shot_first, int(np.searchsorted(times, earliest)))
            for index in [i for i in held if i < keep_from]:
                del held[index]
        if decoded == 0:
            return
        self.duration = played_duration(times[:decoded], video.info.fps)
        yield from end_shot(decoded)
        self.frames = decoded
        if short_shots:
            self.notes.append(f"{counted(short_shots, 'shot')} shorter than a window ({self.window:g} s), the shortest "
                              f"{shortest} frames: each is labelled from the frames it has")
        if short_windows:
            self.note_short(fewest, fewest_distinct, short_windows)


def finish_timeline(job: _TimelineJob, scores: Tensor) -> VideoResult:
    """The result of a timeline job: windows, overall top-k, and segments with frames, shots,
    runner-up and uncertainty (see TimelineOptions)."""
    p = job.predictor
    options: TimelineOptions = getattr(job, "options", None) or TimelineOptions(cuts=False)
    per_window = scores.view(len(job.window_times), p.views.count, -1).mean(dim=1)
    window_shots = getattr(job, "window_shots", None) or [None] * len(job.window_times)
    windows = [Window(round(s, 3), round(e, 3), p.top(row), shot)
               for (s, e), row, shot in zip(job.window_times, per_window, window_shots)]
    frames = getattr(job, "frames", None) or len(job._times)
    times = np.asarray(job._times[:frames], dtype=np.float64)
    duration = float(job.duration)
    shots = getattr(job, "shots", None) or None
    groups = shots if shots else [(0, frames)]
    segments: list[Segment] = []
    position = 0
    for number, (first, stop) in enumerate(groups):
        count = sum(1 for shot in window_shots if shot == number + 1) if shots else len(windows)
        shot_windows = windows[position:position + count]
        rows = per_window[position:position + count]
        position += count
        if not shot_windows:
            continue
        start_time = float(times[first]) if first < frames else duration
        end_time = float(times[stop]) if stop < frames else duration
        merged = merge_segments(shot_windows)
        merged[0].start, merged[-1].end = start_time, end_time
        taken, kept = 0, []  # kept: [segment, index of its first window in the shot]
        for segment in merged:
            segment.start_frame = kept[-1][0].end_frame if kept else first
            boundary = stop if segment is merged[-1] else _nearest_frame(times, segment.end)
            segment.end_frame = min(max(boundary, segment.start_frame + 1), stop)
            if segment.end_frame <= segment.start_frame and kept:  # boundaries closer than a frame
                kept[-1][0].windows += segment.windows
            else:
                kept.append([segment, taken])
            taken += segment.windows
        for segment, taken in kept:
            segment.start = float(times[segment.start_frame]) if segment.start_frame < frames else duration
            segment.end = float(times[segment.end_frame]) if segment.end_frame < frames else duration
            segment.shot = number + 1 if shots else None
            window_rows = rows[taken:taken + segment.windows].float()
            labelled = [row for row in window_rows if p.categories[int(row.argmax())] == segment.label]
            segment.score = round(float(np.mean([float(row.max()) for row in labelled or window_rows])), 6)
            _mark_uncertainty(segment, window_rows.mean(dim=0), p.categories, options)
            segments.append(segment)
    overall = p.top(per_window.mean(dim=0))
    return VideoResult(str(job.path), overall, notes=job.notes, inputs=len(scores), duration=round(duration, 3),
                       windows=windows, segments=segments, fps=float(job.fps), frames=frames,
                       shots=list(shots) if shots else None, short=job.short, window=job.window,
                       stride=job.stride)


def _nearest_frame(times: np.ndarray, t: float) -> int:
    index = int(np.searchsorted(times, t))
    if index > 0 and (index >= len(times) or t - times[index - 1] < times[index] - t):
        index -= 1
    return index


def _mark_uncertainty(segment: Segment, mean: Tensor, categories: list[str], options: TimelineOptions) -> None:
    order = mean.argsort(descending=True).tolist()
    others = [i for i in order if categories[i] != segment.label]
    if others:
        segment.runner_up = (categories[others[0]], round(float(mean[others[0]]), 6))
    runner_score = segment.runner_up[1] if segment.runner_up else 0.0
    segment.uncertain = bool(segment.score < options.uncertain_below
                             or segment.score - runner_score < options.uncertain_margin)
