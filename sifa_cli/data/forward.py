"""Every frame of one video, in order, for a timeline's single forward pass over the file.

A timeline with cut detection decodes every frame, and decoding is most of its CPU time
(benchmarks/RESULTS.md). One FFmpeg decoder with frame threads costs more CPU per frame than one
without (its threads wait on each other), and one decoder without them keeps one core busy at most.
So where the file's key frames are known (decord reads them from the container's index),
`ForwardFrames` cuts the file into chunks that start on key frames and has two decode workers,
one FFmpeg thread each, decode alternate chunks: each worker decodes its next chunk while the
caller works on the last one. Each chunk's start is checked against frames decoded in order
(`ForwardFrames`), so the frames are exactly those of one decoder running through the file.

Elsewhere (OpenCV, no key frames, a single chunk, no decode workers) it reads chunks of
`CHUNK` frames from the one video, asking it to decode the next chunk ahead. If the second worker
fails in any way, the rest is read from the first (which reports its own errors as before).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from sifa_cli.data.decode import Video
from sifa_cli.errors import SifaError

CHUNK = 32  # frames per read when one decoder reads on its own; the least a key-frame chunk holds
CHECK = 4  # frames past its chunk each worker decodes, to check the next chunk's start (ForwardFrames)


def key_frame_chunks(keys: np.ndarray, num_frames: int, least: int = CHUNK) -> list[tuple[int, int]]:
    """[first, stop) ranges covering frames 0..num_frames-1, each starting on a key frame and holding
    at least `least` frames (except the last); [] when decoding cannot start at frame 0."""
    keys = np.unique(np.asarray(keys, dtype=np.int64))
    keys = keys[(keys >= 0) & (keys < num_frames)]
    if num_frames < 1 or keys.size == 0 or keys[0] != 0:
        return []
    starts = [0]
    for key in keys[1:].tolist():
        if key - starts[-1] >= least:
            starts.append(key)
    if len(starts) > 1 and num_frames - starts[-1] < least:
        starts.pop()  # a short tail joins the chunk before it
    return [(first, stop) for first, stop in zip(starts, starts[1:] + [num_frames])]


class ForwardFrames:
    """`read(first)` returns (indices, frames) of the next chunk from frame `first` on (see the module
    docstring). `open_other()` opens a second reader of the same file (decord, in its own decode
    worker); None reads with `video` alone.

    Seeking is where decoders go wrong: decord, seeking to the key frame of an open GOP (x265's
    default, some broadcast encoders), drops the pictures that lead it and hands out every frame of
    the chunk two places late. So each worker also decodes the first `CHECK` frames after its chunk,
    continuing in order (exact), and a chunk read from a key frame is used only when its first `CHECK`
    frames are those, bit for bit, and they are all different from each other and from the frame before
    (so a chunk shifted by a frame or more cannot pass). Otherwise the second worker is let go and the
    rest is decoded in order from the last key frame that was checked, with one FFmpeg thread.
    """

    def __init__(self, video: Video, open_other: Optional[Callable[[], Video]] = None):
        self.video = video
        self.other: Optional[Video] = None
        self.chunks: list[tuple[int, int]] = []
        self.checked = 0  # chunk starts that passed the check
        self._planned_for = video.num_frames
        self._next = 0  # the chunk `read` hands out next
        self._after: Optional[np.ndarray] = None  # the last frame of that chunk's predecessor + CHECK after it
        self._exact_from = 0  # a key frame decoding can start from exactly (0, or a chunk start that passed)
        self._position: Optional[int] = 0  # the frame `video` decodes next, when known
        if open_other is not None and video.backend == "decord" and getattr(video, "_worker", None) is not None:
            keys = video.key_frames()
            chunks = key_frame_chunks(keys, video.num_frames) if keys is not None else []
            if len(chunks) >= 2:
                try:
                    other = open_other()
                except SifaError:
                    other = None
                if other is not None and (other.backend != "decord" or other.num_frames != video.num_frames):
                    other.close()
                    other = None
                if other is not None:
                    self.other, self.chunks = other, chunks

    @property
    def paired(self) -> bool:
        return self.other is not None

    def read(self, first: int) -> tuple[np.ndarray, np.ndarray]:
        """The next chunk's frame indices and frames (uint8 RGB). Raises what `Video.read` raises
        for `video` (FrameCountError: its `num_frames` is corrected; read again from `first`)."""
        if self.other is not None:
            if (self.video.num_frames == self._planned_for and self._next < len(self.chunks)
                    and self.chunks[self._next][0] == first):
                got = self._read_paired()
                if got is not None:
                    return got
            self._drop_other()
        return self._read_in_order(first)

    def close(self) -> None:
        self._drop_other()

    # -- internals ----------------------------------------------------------------------------

    def _span(self, index: int) -> np.ndarray:
        """Chunk `index`'s frames and the CHECK frames after it (fewer at the end of the file)."""
        first, stop = self.chunks[index]
        return np.arange(first, min(stop + CHECK, self.video.num_frames))

    def _read_paired(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        index = self._next
        reader = self.video if index % 2 == 0 else self.other
        span = self._span(index)
        ahead = self._span(index + 2) if index + 2 < len(self.chunks) else None
        if index == 0:  # the second worker starts on chunk 1 while the first decodes chunk 0
            primed = self._from_other(lambda: self.other.read(self._span(1)[:1], ahead=self._span(1)))
            if primed is None:
                return None
        if reader is self.video:
            self._position = None  # it goes on to decode ahead
            frames = self.video.read(span, ahead=ahead)
        else:
            frames = self._from_other(lambda: self.other.read(span, ahead=ahead))
            if frames is None:
                return None
        first, stop = self.chunks[index]
        if index > 0 and not self._starts_right(frames):
            return None
        if index > 0:
            self._exact_from = first
            self.checked += 1
        self._after = frames[stop - first - 1:]
        self._next += 1
        return np.arange(first, stop), frames[: stop - first]

    def _starts_right(self, frames: np.ndarray) -> bool:
        after = self._after
        if after is None or len(after) < 2 or len(frames) < len(after) - 1:
            return False
        expected = after[1:]
        if not all(np.array_equal(got, want) for got, want in zip(frames, expected)):
            return False
        return all(not np.array_equal(after[i], after[j]) for i in range(len(after)) for j in range(i + 1, len(after)))

    def _read_in_order(self, first: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames from `first` on, decoding in order; from the last checked key frame when `video`
        is not at `first` (only a key frame known to decode exactly is sought)."""
        start = first if self._position == first else min(self._exact_from, first)
        wanted = np.arange(start, min(first + CHUNK, self.video.num_frames))
        following = np.arange(wanted[-1] + 1, min(wanted[-1] + 1 + CHUNK, self.video.num_frames))
        self._position = None
        frames = self.video.read(wanted, ahead=following if following.size else None)
        self._position = int(wanted[-1]) + 1
        return wanted[first - start:], frames[first - start:]

    def _from_other(self, call: Callable[[], np.ndarray]) -> Optional[np.ndarray]:
        try:
            return call()
        except (SifaError, ValueError):
            return None

    def _drop_other(self) -> None:
        other, self.other = self.other, None
        self.chunks = []
        if other is not None:
            other.close()
