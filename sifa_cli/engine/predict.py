"""Predict actions in videos: sample clips, cut views, batch them through the model, average.

Background threads (`decoders`, one video each at a time) open and decode the videos a few clips
ahead of the model, so decoding and inference overlap; clips from videos decoded at the same time
share batches. Results come back in input order.
`timeline` does the same for consecutive windows of long videos and merges windows that agree.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional

import numpy as np
import torch
from torch import Tensor, nn

from sifa_cli.data.dataset import STILL_IMAGE
from sifa_cli.data.decode import DECODER_THREADS, DEFAULT_TIMEOUT_S, FrameCountError, Video, read_sampled
from sifa_cli.data.sampling import Views, parse_views, sample_clips
from sifa_cli.data.spec import InputSpec
from sifa_cli.data.transforms import evaluation_views
from sifa_cli.engine.device import autocast
from sifa_cli.errors import InputError, ModelError, SifaError
from sifa_cli.models import predict_proba
from sifa_cli.models.inference import prepare_for_inference
from sifa_cli.engine.records import (
    ProgressFn,
    RunStats,
    ShortClips,
    TopK,
    VideoResult,
    check_counts,
    check_window_options,
    default_decoders,
    plan_windows,
    window_and_stride,
)
from sifa_cli.wording import counted, form

if TYPE_CHECKING:
    from sifa_cli.engine.timeline_options import TimelineOptions



class _Job:
    """One video: `plan` says how many units of work it is (1, or one per timeline window),
    `inputs` produces the model inputs (views.count per unit) in the background thread, and
    `finish` turns their scores into a result."""

    def __init__(self, predictor: "Predictor", path: Path):
        self.predictor = predictor
        self.path = path
        self.notes: list[str] = []
        self.duration: Optional[float] = None
        self.seq = -1  # position in the input, set when a decoding thread takes the job
        self.window_times: list[tuple[float, float]] = []
        # kept by Predictor._run as the model scores this job's inputs
        self.scores: list[Tensor] = []
        self.units = 0  # units of work planned (`plan`), and scored so far
        self.units_done = 0
        self.finished = False  # its decoding thread is done with it
        self.error: Optional[str] = None
        self.fps: Optional[float] = None  # the video's frame rate, which sets the clips' stride
        self.short: Optional[ShortClips] = None

    def open(self, threads: int = DECODER_THREADS) -> Video:
        p = self.predictor
        short_side = p.spec.resize if p.views.crops == 1 else p.spec.size
        return Video(self.path, backend=p.decoder, short_side=short_side, timeout=p.decode_timeout, threads=threads)

    def clip_views(self, frames: np.ndarray) -> Iterator[Tensor]:
        spec, views = self.predictor.spec, self.predictor.views
        for clip in frames:
            yield from evaluation_views(clip, spec.size, spec.resize, views.crops, spec.mean, spec.std)

    def sample(self, start: int, stop: int) -> tuple[np.ndarray, bool]:
        spec = self.predictor.spec
        sampled = sample_clips(spec.frames, spec.stride_at(self.fps), spec.sampling, self.predictor.views.clips,
                               start, stop)
        return sampled.indices, sampled.short

    def note_short(self, frames: int, distinct: int, windows: int = 0) -> None:
        """Record that clips (all of them, or `windows` timeline windows) had only `frames` frames,
        unless that is still as much video as the model's training clips covered (`covers_enough`)."""
        spec = self.predictor.spec
        if spec.covers_enough(frames, distinct, self.fps):
            return
        span = spec.span_at(self.fps)
        where = (f"{counted(windows, 'window')} {form(windows, 'holds', 'hold')} as few as {frames} frames" if windows
                 else f"the video has {frames} frames")
        rate = f" at {self.fps:.3g} fps" if self.fps else ""
        note = (f"{where}, fewer than the {span} a {spec.seconds:.2f} s clip spans{rate}: the clip's {spec.frames} "
                f"frames were spread evenly over them ({distinct} distinct)")
        self.short = ShortClips(frames, span, distinct, windows, note, fps=self.fps)
        self.notes.append(note)


class _ClipJob(_Job):
    def plan(self, video: Video) -> int:
        fps = video.info.fps
        self.duration = played_duration(video.frame_times(), fps)
        self.fps = fps
        if fps and video.num_frames < SPARSE_FRAMES_SHARE * self.duration * fps:
            # e.g. an AVI whose index holds each frame for several frame times with empty chunks:
            # its frames are further apart than the declared rate says, so the stride follows the
            # rate it really shows, and the clip still covers the model's time span
            self.fps = video.num_frames / self.duration
            self.notes.append(
                f"only {video.num_frames} distinct frames over {self.duration:.1f} s, though the file declares "
                f"{fps:.3g} fps (it holds each frame for several frame times): clips were sampled at the "
                f"{self.fps:.3g} fps it really shows")
        return 1

    def inputs(self, video: Video) -> Iterator[Tensor]:
        shortness: list[bool] = []

        def sample(num_frames: int) -> np.ndarray:
            indices, short = self.sample(0, num_frames)
            shortness.append(short)
            return indices

        frames, indices = read_sampled(video, sample)
        if shortness[-1]:
            self.note_short(video.num_frames, min(len(np.unique(clip)) for clip in indices))
        self.duration = played_duration(video.frame_times(), video.info.fps)  # again: reading may correct the count
        yield from self.clip_views(frames)

    def finish(self, scores: Tensor) -> VideoResult:
        p = self.predictor
        return VideoResult(str(self.path), p.top(scores.mean(dim=0)), notes=self.notes,
                           inputs=len(scores), duration=self.duration, short=self.short)


class _TimelineJob(_Job):
    def __init__(self, predictor: "Predictor", path: Path, window: Optional[float], stride: Optional[float]):
        super().__init__(predictor, path)
        self.asked = (window, stride)  # None: this video's default (`window_and_stride`)
        self.window, self.stride = window, stride
        self._planned: list[tuple[float, float]] = []
        self._times = np.zeros(0)

    def plan(self, video: Video) -> int:
        self.fps = video.info.fps
        times = video.frame_times()
        self.fps = video.info.fps
        self.duration = played_duration(times, video.info.fps)
        self._times = times
        self.window, self.stride = window_and_stride(self.predictor.spec, self.fps, *self.asked)
        try:
            self._planned = plan_windows(self.duration, self.window, self.stride)
        except InputError as exc:
            raise InputError(f"{self.path}: {exc}") from None
        return len(self._planned)

    def inputs(self, video: Video) -> Iterator[Tensor]:
        short_windows, fewest, fewest_distinct = 0, None, None
        reader: Optional[_ForwardReader] = None
        for position, (start_time, end_time) in enumerate(self._planned):
            first, stop = self._frame_span(start_time, end_time)
            if first >= video.num_frames:
                break  # the file held fewer frames than it announced; its notes say so
            if reader is None or reader.planned_for != video.num_frames:  # (again) after a count fix
                reader = _ForwardReader(video, [self._window_indices(video.num_frames, *self._frame_span(s, e))[0]
                                                for s, e in self._planned[position:]])
            indices, short = self._window_indices(video.num_frames, first, stop)
            try:
                frames = reader.take(indices)
            except FrameCountError:  # fewer frames than announced: sample again for the real count
                reader = None
                shortness: list[bool] = []

                def sample(num_frames: int, first=first, stop=stop) -> np.ndarray:
                    indices, short = self._window_indices(num_frames, first, stop)
                    shortness.append(short)
                    return indices

                frames, indices = read_sampled(video, sample)
                short = shortness[-1]
            if short:
                short_windows += 1
                fewest = min(fewest or stop - first, stop - first)
                distinct = min(len(np.unique(clip)) for clip in indices)
                fewest_distinct = min(fewest_distinct or distinct, distinct)
            self.window_times.append((start_time, end_time))
            yield from self.clip_views(frames)
        if short_windows:
            self.note_short(fewest, fewest_distinct, short_windows)

    def _frame_span(self, start_time: float, end_time: float) -> tuple[int, int]:
        """Frames [first, stop) whose times lie in [start_time, end_time). Frame times are often
        float32 (33.6 s reads 33.59999847; an hour in, they are off by 2e-4 s): a frame within a
        tenth of a frame time of an edge counts as on it, so windows on the frame grid get every
        frame, not one too few at one edge and one too many at the other."""
        fps = self.fps
        slack = 0.1 / fps if fps is not None and np.isfinite(fps) and fps > 0 else 1e-6
        first = int(np.searchsorted(self._times, start_time - slack, side="left"))
        stop = max(int(np.searchsorted(self._times, end_time - slack, side="left")), first + 1)
        return first, stop

    def _window_indices(self, num_frames: int, first: int, stop: int) -> tuple[np.ndarray, bool]:
        return self.sample(min(first, num_frames - 1), min(stop, num_frames))

    def finish(self, scores: Tensor) -> VideoResult:
        from sifa_cli.engine.shots import finish_timeline

        return finish_timeline(self, scores)  # segments with frames, shots and uncertainty


class _ForwardReader:
    """The frames a timeline's windows need, decoded in one forward pass over the file.

    Windows overlap, and reading each one on its own sent the decoder back to a key frame for
    every window: with key frames 250 frames apart (OpenCV's vtest.avi) a window cost 66 ms of
    decoding instead of 8. Here every frame any window samples is read once, in file order, and
    kept only until the last window that uses it has taken it."""

    def __init__(self, video: Video, windows: list[np.ndarray]):
        self._video = video
        self.planned_for = video.num_frames  # the windows' indices depend on it
        self._wanted = np.unique(np.concatenate([w.reshape(-1) for w in windows]))
        # lowest frame index any window from the i-th on needs: frames below it can go
        lowest = [int(w.min()) for w in windows]
        self._keep_from = np.minimum.accumulate(lowest[::-1])[::-1]
        self._window = 0
        self._read_up_to = 0  # position in _wanted of the first frame not read yet
        self._frames: dict[int, np.ndarray] = {}

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Frames at `indices` (the next window's, in window order) shaped (*indices.shape, H, W, 3)."""
        keep_from = int(self._keep_from[self._window])
        self._window += 1
        for index in [i for i in self._frames if i < keep_from]:
            del self._frames[index]
        end = int(np.searchsorted(self._wanted, indices.max(), side="right"))
        if end > self._read_up_to:
            batch = self._wanted[self._read_up_to:end]
            for index, frame in zip(batch.tolist(), self._video.read(batch)):
                self._frames[index] = frame
            self._read_up_to = end
        frames = np.stack([self._frames[i] for i in indices.reshape(-1).tolist()])
        return frames.reshape(*indices.shape, *frames.shape[1:])


# Below this share of the frames its duration and frame rate imply, a file is called sparse.
SPARSE_FRAMES_SHARE = 0.5


def played_duration(times: np.ndarray, fps: float) -> float:
    """Seconds a video plays for, from its frames' presentation times (which also hold when the
    file repeats frames or varies its rate): the last frame lasts about as long as the gap before it."""
    steps = np.diff(times)
    frame_duration = float(steps[-1]) if len(steps) else (1.0 / fps if fps else 0.04)
    return float(times[-1] + frame_duration)


class _JobFeed:
    """Hands the jobs to the decoding threads one at a time, numbering them in input order."""

    def __init__(self, jobs: Iterable[_Job]):
        self._jobs = iter(jobs)
        self._lock = threading.Lock()
        self._count = 0

    def take(self) -> Optional[_Job]:
        with self._lock:
            job = next(self._jobs, None)
            if job is not None:
                job.seq = self._count
                self._count += 1
            return job


class Predictor:
    """A model plus everything needed to turn video files into ranked labels.

    meta: the checkpoint metadata ("categories", "input"). views: multi-view testing, default
    from the checkpoint's input spec. batch_size: model inputs per forward pass. decoders: videos
    decoded at once (default: the CPU count, at most 4).
    """

    def __init__(
        self,
        model: nn.Module,
        meta: Mapping[str, Any],
        *,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        views: Views | str | None = None,
        batch_size: int = 8,
        top_k: int = 5,
        decoder: str = "auto",
        decode_timeout: float = DEFAULT_TIMEOUT_S,
        decoders: Optional[int] = None,
    ):
        check_counts(batch_size, top_k, decoders)
        self.decoders = decoders or default_decoders()
        self.model = prepare_for_inference(model.eval())
        self.device = torch.device(device)
        self.precision = getattr(precision, "value", precision)
        autocast(self.device, self.precision)  # refuses a bad precision now rather than mid-run
        self.spec = InputSpec.from_meta(meta.get("input"))
        self.categories = [str(c) for c in meta["categories"]]
        self.views = parse_views(views) if isinstance(views, str) else (views or parse_views(self.spec.views))
        self.batch_size = batch_size
        self.top_k = min(top_k, len(self.categories))
        self.decoder = decoder
        self.decode_timeout = decode_timeout
        self.stats = RunStats()

    # -- public -------------------------------------------------------------------------------

    def predict(self, paths: Iterable[str | Path], progress: Optional[ProgressFn] = None) -> Iterator[VideoResult]:
        """One result per path, in order; a path that fails gets a result with `error` set."""
        return self._run((_ClipJob(self, Path(p)) for p in paths), progress)

    def timeline(
        self, paths: Iterable[str | Path], window: Optional[float] = None, stride: Optional[float] = None,
        progress: Optional[ProgressFn] = None, options: Optional["TimelineOptions"] = None,
    ) -> Iterator[VideoResult]:
        """Per-window top-k over each video, plus merged segments; progress counts windows.
        window, stride: seconds; None for the defaults of `window_and_stride` (the model's clip span
        at each video's frame rate, and half of it).
        `options` (sifa_cli.engine.shots.TimelineOptions): shot-cut detection and the uncertainty
        thresholds; without options, no cut detection and the default thresholds."""
        from sifa_cli.engine.shots import ShotTimelineJob
        from sifa_cli.engine.timeline_options import TimelineOptions

        check_window_options(window, stride)  # before any work
        options = options or TimelineOptions(cuts=False)
        options.check()

        def job(path: Path) -> _TimelineJob:
            made = (ShotTimelineJob(self, path, window, stride, options) if options.cuts
                    else _TimelineJob(self, path, window, stride))
            made.options = options
            return made

        return self._beside_decoding(self._run((job(Path(p)) for p in paths), progress))

    def _beside_decoding(self, results: Iterator[VideoResult]) -> Iterator[VideoResult]:
        """A timeline on the CPU leaves one core to the decoder: it decodes every frame of a long
        file, and torch's OpenMP threads wait at every barrier for a thread the decoder has pushed
        off its core. On 2 cores beside a training job the model took 0.4 s of CPU for a 20 s 720p
        timeline with 1 thread and 2.4-3.1 s with 2 (benchmarks/RESULTS.md). The thread count is
        restored after the run."""
        if self.device.type != "cpu":
            yield from results
            return
        before = torch.get_num_threads()
        torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - 1)))
        try:
            yield from results
        finally:
            torch.set_num_threads(before)

    def top(self, scores: Tensor) -> TopK:
        values, indices = scores.float().topk(self.top_k)
        return [(self.categories[i], round(float(v), 6)) for v, i in zip(values.tolist(), indices.tolist())]

    def forward(self, batch: Tensor) -> Tensor:
        """Class probabilities for a batch of model inputs N,C,T,H,W (on the CPU)."""
        started = time.perf_counter()
        try:
            with torch.inference_mode(), autocast(self.device, self.precision):
                probs = predict_proba(self.model, batch.to(self.device, non_blocking=True))
            probs = probs.float().cpu()
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower() or "can't allocate memory" in str(exc).lower():
                raise SifaError(
                    f"out of memory on {self.device}: try a smaller --batch-size or fewer --views"
                ) from None
            raise ModelError(
                f"the model rejected inputs of shape {tuple(batch.shape)}: {str(exc).splitlines()[0]}"
            ) from None
        self.stats.model_seconds += time.perf_counter() - started
        self.stats.batches += 1
        if probs.shape[-1] != len(self.categories):
            raise ModelError(
                f"the model gives {probs.shape[-1]} scores but the checkpoint names {len(self.categories)} categories"
            )
        return probs

    # -- the pipeline -------------------------------------------------------------------------

    def _run(self, jobs: Iterable[_Job], progress: Optional[ProgressFn]) -> Iterator[VideoResult]:
        report = progress or (lambda planned, done: None)
        per_unit = self.views.count
        messages: queue.Queue = queue.Queue(maxsize=max(2 * self.batch_size, per_unit + 1))
        stop = threading.Event()
        feed = _JobFeed(jobs)
        producers = [threading.Thread(target=self._produce, args=(feed, messages, stop), name=f"sifa-decode-{i}",
                                      daemon=True) for i in range(self.decoders)]
        started = time.perf_counter()
        for producer in producers:
            producer.start()
        producers_done = 0

        started_jobs: dict[int, _Job] = {}  # started and not yet yielded, by input position
        next_seq = 0  # the input position to yield next
        batch: list[tuple[_Job, Tensor]] = []

        def run_batch() -> None:
            if not batch:
                return
            probs = self.forward(torch.stack([tensor for _, tensor in batch]))
            finite = torch.isfinite(probs).all(dim=-1).tolist()
            for (job, _), row, row_finite in zip(batch, probs, finite):
                if not row_finite and job.error is None:  # never NaN in a results file
                    job.error = (f"{job.path}: the model's scores are not finite numbers (NaN or infinity); "
                                 "its weights may be damaged")
                job.scores.append(row)
                if len(job.scores) % per_unit == 0:
                    job.units_done += 1
                    if job.units_done > job.units:  # a timeline cut into shots has more windows than planned
                        job.units += 1
                        report(1, 0)
                    report(0, 1)
            self.stats.inputs += len(batch)
            batch.clear()

        def completed() -> Iterator[VideoResult]:
            nonlocal next_seq
            waiting = {id(job) for job, _ in batch}  # inputs not scored yet
            while (job := started_jobs.get(next_seq)) is not None and job.finished and id(job) not in waiting:
                del started_jobs[next_seq]
                next_seq += 1
                if job.error is None and job.units > job.units_done:
                    report(0, job.units - job.units_done)  # windows a short file lacked
                if job.error is not None:
                    result = VideoResult(str(job.path), error=job.error)
                    self.stats.videos_failed += 1
                else:
                    result = job.finish(torch.stack(job.scores))
                    self.stats.videos_ok += 1
                job.scores = []
                self.stats.wall_seconds = time.perf_counter() - started
                yield result

        try:
            while True:
                kind, job, payload = messages.get()
                if kind == "start":
                    started_jobs[job.seq] = job
                elif kind == "plan":
                    job.units = payload
                    report(payload, 0)
                elif kind == "input":
                    batch.append((job, payload))
                    if len(batch) >= self.batch_size:
                        run_batch()
                        yield from completed()
                elif kind in ("end", "failed"):
                    job.finished = True
                    if kind == "failed":
                        job.error = payload
                        batch[:] = [item for item in batch if item[0] is not job]
                        if job.units:
                            report(0, job.units - job.units_done)
                        else:  # failed before it could say how much work it was
                            report(1, 1)
                    if messages.empty():  # nothing else decoded yet: run what we have now
                        run_batch()
                    yield from completed()
                elif kind == "done":
                    producers_done += 1
                    if producers_done == len(producers):
                        run_batch()
                        yield from completed()
                        return
                elif kind == "crash":
                    raise payload
        finally:
            stop.set()  # the producer notices within 0.1 s; it is a daemon thread
            self.stats.wall_seconds = time.perf_counter() - started

    def _produce(self, feed: _JobFeed, messages: queue.Queue, stop: threading.Event) -> None:
        def put(kind: str, job: Optional[_Job] = None, payload: Any = None) -> None:
            while not stop.is_set():
                try:
                    messages.put((kind, job, payload), timeout=0.1)
                    return
                except queue.Full:
                    continue

        try:
            while (job := feed.take()) is not None:
                if stop.is_set():
                    return
                put("start", job)
                try:
                    with job.open() as video:
                        if video.num_frames == 1:
                            raise InputError(f"{job.path}: {STILL_IMAGE}; sifa recognises actions in videos")
                        put("plan", job, job.plan(video))
                        for tensor in job.inputs(video):
                            put("input", job, tensor)
                            if stop.is_set():
                                return
                        job.notes[:0] = video.notes
                except SifaError as exc:
                    put("failed", job, str(exc))
                    continue
                except MemoryError:
                    put("failed", job, f"{job.path}: out of memory while decoding; try fewer --views")
                    continue
                put("end", job)
            put("done")
        except BaseException as exc:  # a bug: hand it to the consumer so it surfaces with its traceback
            put("crash", None, exc)
