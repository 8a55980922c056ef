"""Predict on a stream as it arrives: a camera, an RTSP/HTTP URL, anything OpenCV's FFmpeg opens.

A reader thread pulls frames off the stream, scales them to the model's resize side and hands them
over through a small queue; the scorer keeps the last clip's worth in a ring buffer and, every
`stride` frames once it is full, runs the model on that window. Memory stays bounded whatever the
stream's length: the ring holds one clip span, the queue a few dozen frames.

A source that reports a frame count is a file behind a URL: the reader waits for the scorer, so
every window is scored. A live source (camera, RTSP, an MJPEG feed) cannot wait: when the scorer
falls behind, the oldest queued frames are dropped and counted, so the label stays current.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np
import torch

from sifa_cli.data.decode_backends import as_rgb_uint8, clean_reason, take_native_log
from sifa_cli.data.inputs import StreamSource
from sifa_cli.data.sampling import sample_clips
from sifa_cli.data.transforms import evaluation_views, resize_short_side
from sifa_cli.engine.predict import Predictor
from sifa_cli.engine.records import TopK
from sifa_cli.errors import DecodeError, InputError

OPEN_TIMEOUT_S = 15.0
READ_TIMEOUT_S = 15.0
QUEUE_FRAMES = 32
FALLBACK_FPS = 25.0


@dataclass
class LiveWindow:
    """One scored window: stream time in seconds (from the first frame), its top-k, and how many
    frames it held (fewer than a clip span only when the whole stream was shorter)."""

    index: int
    start: float
    end: float
    top: TopK
    frames: int
    notes: list[str] = field(default_factory=list)


@dataclass
class LiveStats:
    frames: int = 0  # read from the stream
    dropped: int = 0  # read but skipped because scoring fell behind
    windows: int = 0
    stream_seconds: float = 0.0  # stream time covered
    wall_seconds: float = 0.0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    live: bool = True
    ended: str = ""  # why it stopped: "end of stream", "interrupted"
    error: str = ""  # what broke the stream off, if anything did


def open_stream(source: StreamSource, open_timeout: float = OPEN_TIMEOUT_S,
                read_timeout: float = READ_TIMEOUT_S) -> cv2.VideoCapture:
    """An opened capture, or a DecodeError that says why not."""
    take_native_log()
    if source.camera is not None:
        capture = cv2.VideoCapture(source.camera)
        what = "camera"
    else:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout * 1000)]
        capture = cv2.VideoCapture(source.url, cv2.CAP_FFMPEG, params)
        what = "stream"
    if not capture.isOpened():
        capture.release()
        reason = clean_reason(take_native_log())
        detail = f" ({reason})" if reason else ""
        hint = "is it connected, and free?" if source.camera is not None else "check the address and that it is reachable"
        raise DecodeError(f"{source}: cannot open the {what}{detail}; {hint}")
    return capture


# What FFmpeg says when a stream stops before its end: a connection cut off or a read that timed out.
_BROKEN_OFF = ("ends prematurely", "timed out", "connection reset", "broken pipe")


def _broken_off(native_log: str) -> str:
    """Why the stream stopped early, from the decoder's own words; '' for a normal end."""
    for line in native_log.splitlines():
        if any(marker in line.lower() for marker in _BROKEN_OFF):
            return f"the stream broke off: {clean_reason(line) or line.strip()}"
    return ""


class LiveScorer:
    """Scores the windows of one stream with `predictor` (its views' crops; one clip per window).

    stride: seconds between window ends. window: seconds a window spans, used only for models that
    sample uniformly (TSN-style); dense models use their own clip span.
    """

    def __init__(self, predictor: Predictor, stride: float = 1.0, window: float = 2.0,
                 queue_frames: int = QUEUE_FRAMES):
        if stride <= 0 or window <= 0:
            raise InputError("--window and --stride must be positive numbers of seconds")
        self.predictor = predictor
        self.stride_seconds = stride
        self.window_seconds = window
        self.queue_frames = queue_frames
        self.stats = LiveStats()

    def span_frames(self, fps: float) -> int:
        spec = self.predictor.spec
        if spec.sampling == "dense":
            return spec.span_at(fps)
        return max(spec.frames, round(self.window_seconds * fps))

    def run(self, capture: cv2.VideoCapture, stop: threading.Event) -> Iterator[LiveWindow]:
        """Windows as they are scored, until the stream ends or `stop` is set. Closes `capture`."""
        started = time.perf_counter()
        stats = self.stats
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        stats.fps = fps if np.isfinite(fps) and 0 < fps < 1000 else 0.0
        stats.live = not capture.get(cv2.CAP_PROP_FRAME_COUNT) > 0
        rate = stats.fps or FALLBACK_FPS
        span = self.span_frames(rate)
        stride = max(1, round(self.stride_seconds * rate))
        frames: queue.Queue = queue.Queue(maxsize=self.queue_frames)
        reader = threading.Thread(target=self._read, args=(capture, frames, stop), name="sifa-live-read", daemon=True)
        reader.start()
        ring: deque = deque(maxlen=span)  # (stream time, frame)
        since_last = 0
        try:
            while not stop.is_set():
                try:
                    kind, when, frame = frames.get(timeout=0.1)
                except queue.Empty:
                    continue
                if kind == "end":
                    stats.ended = "end of stream"
                    break
                if ring and ring[-1][1].shape != frame.shape:
                    ring.clear()  # the stream changed its frame size: start a fresh window
                ring.append((when, frame))
                since_last += 1
                stats.stream_seconds = when + 1.0 / rate
                if len(ring) == span and (stats.windows == 0 or since_last >= stride):
                    yield self._score(ring, rate, span)
                    since_last = 0
            else:
                stats.ended = "interrupted"
            if stats.ended == "end of stream" and ring and (stats.windows == 0 or since_last > 0):
                yield self._score(ring, rate, span)  # the tail, or the whole of a stream shorter than a clip
        finally:
            stop.set()
            reader.join(timeout=2.0)
            if not reader.is_alive():  # a reader stuck in a native read still holds the capture
                capture.release()
            stats.wall_seconds = time.perf_counter() - started

    def _score(self, ring: deque, rate: float, span: int) -> LiveWindow:
        spec, p = self.predictor.spec, self.predictor
        times = [when for when, _ in ring]
        clip_frames = np.stack([frame for _, frame in ring])
        sampled = sample_clips(spec.frames, spec.stride_at(rate), spec.sampling, 1, 0, len(clip_frames))
        clip = clip_frames[sampled.indices[0]]
        views = evaluation_views(clip, spec.size, spec.resize, p.views.crops, spec.mean, spec.std)
        probs = p.forward(torch.stack(views))
        p.stats.inputs += len(views)
        notes = []
        if sampled.short and not spec.covers_enough(len(ring), len(np.unique(sampled.indices[0])), rate):
            notes.append(f"the stream held only {len(ring)} of the {span} frames a window needs: its frames were spread evenly over the clip")
        window = LiveWindow(self.stats.windows, round(times[0], 3), round(times[-1] + 1.0 / rate, 3),
                            p.top(probs.mean(dim=0)), len(ring), notes)
        self.stats.windows += 1
        return window

    def _read(self, capture: cv2.VideoCapture, frames: queue.Queue, stop: threading.Event) -> None:
        stats = self.stats
        short_side = self.predictor.spec.resize if self.predictor.views.crops == 1 else self.predictor.spec.size
        first_wall = None
        index = 0

        def put(item) -> None:
            while not stop.is_set():
                try:
                    frames.put(item, timeout=0.1)
                    return
                except queue.Full:
                    if stats.live:  # drop the oldest queued frame so the label stays current
                        try:
                            frames.get_nowait()
                            stats.dropped += 1
                        except queue.Empty:
                            pass

        try:
            while not stop.is_set():
                ok, frame = capture.read()
                if not ok or frame is None:
                    stats.error = _broken_off(take_native_log())
                    break
                if first_wall is None:
                    first_wall = time.perf_counter()
                    stats.height, stats.width = frame.shape[:2]
                rgb = as_rgb_uint8(frame, bgr=True)
                if min(rgb.shape[:2]) > short_side:
                    rgb = resize_short_side(rgb[None], short_side)[0]
                when = index / stats.fps if stats.fps else time.perf_counter() - first_wall
                stats.frames += 1
                index += 1
                put(("frame", when, rgb))
        except Exception as exc:  # a frame it cannot convert ends the stream; the summary says why
            stats.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            put(("end", None, None))
