"""The input a model expects, as stored in its checkpoint's "input" metadata."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

from sifa_cli.data.sampling import dense_span, parse_views
from sifa_cli.errors import InputError, WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAMPLING_MODES = ("dense", "uniform")
# What a checkpoint's metadata may ask for: beyond these a single clip would take gigabytes.
MAX_CLIP_FRAMES = 256
MAX_FRAME_STEP = 64
MAX_CROP_SIZE = 1024
MAX_RESIZE = 2048
MAX_CLIP_SECONDS = 600.0
# The frame rate a checkpoint's `step` refers to when it records no `seconds`: checkpoints made
# before clips were sampled by time (and the reference SIFA models, trained on Kinetics, whose
# videos are mostly 30 fps) chose `step` on 30 fps video, so `frames * step / 30` seconds is the
# time their clips covered in training, and keeps 30 fps video sampled exactly as before.
REFERENCE_FPS = 30.0
# Frame rates outside this range are a broken header, not a video: the stride falls back to `step`.
PLAUSIBLE_FPS = (0.1, 1000.0)


def plausible_fps(fps: Optional[float]) -> bool:
    """Whether `fps` is a frame rate a video can have (not None, finite, within PLAUSIBLE_FPS)."""
    return fps is not None and math.isfinite(fps) and PLAUSIBLE_FPS[0] <= fps <= PLAUSIBLE_FPS[1]


@dataclass(frozen=True)
class InputSpec:
    """How to build one clip: `frames` frames, sampled densely or uniformly (TSN), short side
    resized to `resize`, cropped to `size`, normalized with `mean`/`std` (0..1 scale).
    `views` ("CLIPSxCROPS") is the default multi-view testing for this model.

    Dense clips cover `seconds` of video whatever its frame rate (`stride_at`): `frames` frames
    at least one source frame apart. `step` is the stride at REFERENCE_FPS; `seconds` defaults to
    `frames * step / REFERENCE_FPS`, which is what a checkpoint without it was trained on.

    `min_seconds`, where known, is how much time the model's training clips covered at the least
    (all but the shortest 5 %; a video shorter than a clip gives a clip that covers just the video,
    `finetune` records it): a clip covering less is shorter than what the model learned from, and
    only then is a short video worth a note. None: unknown, so any clip short of `seconds` is."""

    frames: int = 16
    step: int = 1
    sampling: str = "dense"
    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    views: str = "1x1"
    seconds: Optional[float] = None
    min_seconds: Optional[float] = None

    def __post_init__(self) -> None:
        problems = []
        if self.seconds is None and 1 <= self.frames and 1 <= self.step:
            object.__setattr__(self, "seconds", self.frames * self.step / REFERENCE_FPS)
        if self.seconds is not None and not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds)
                                             and 0 < self.seconds <= MAX_CLIP_SECONDS):
            problems.append(f"seconds={self.seconds} must be a number of seconds above 0 and at most "
                            f"{MAX_CLIP_SECONDS:g}")
        if not 1 <= self.frames <= MAX_CLIP_FRAMES:
            problems.append(f"frames={self.frames} must be between 1 and {MAX_CLIP_FRAMES}")
        if self.min_seconds is not None and not (isinstance(self.min_seconds, (int, float))
                                                 and math.isfinite(self.min_seconds) and self.min_seconds >= 0):
            problems.append(f"min_seconds={self.min_seconds} must be a number of seconds, 0 or more")
        if not 1 <= self.step <= MAX_FRAME_STEP:
            problems.append(f"step={self.step} must be between 1 and {MAX_FRAME_STEP}")
        if self.sampling not in SAMPLING_MODES:
            problems.append(f"sampling={self.sampling!r} must be one of {', '.join(SAMPLING_MODES)}")
        if self.size < 1 or self.resize < self.size or self.size > MAX_CROP_SIZE or self.resize > MAX_RESIZE:
            problems.append(f"size={self.size}, resize={self.resize}: need 0 < size <= resize, size at most "
                            f"{MAX_CROP_SIZE} and resize at most {MAX_RESIZE}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append("mean and std need 3 values each, std positive")
        try:
            parse_views(self.views)
        except InputError:
            problems.append(f"views={self.views!r} must look like CLIPSxCROPS with 1 or 3 crops")
        if problems:
            raise WeightsError("invalid input spec in the checkpoint: " + "; ".join(problems))

    @classmethod
    def from_meta(cls, meta_input: Mapping[str, Any] | None) -> "InputSpec":
        """Build from a checkpoint's "input" dict; missing keys take the defaults."""
        if meta_input is None:
            return cls()
        if not isinstance(meta_input, Mapping):
            raise WeightsError("invalid input spec in the checkpoint: 'input' is not an object")
        known = {name: meta_input[name] for name in cls.__dataclass_fields__ if name in meta_input}
        try:
            for name in ("frames", "step", "size", "resize"):
                if name in known:
                    known[name] = int(known[name])
            for name in ("mean", "std"):
                if name in known:
                    known[name] = tuple(float(v) for v in known[name])
            for name in ("seconds", "min_seconds"):
                if known.get(name) is not None:
                    known[name] = float(known[name])
            for name in ("sampling", "views"):
                if name in known:
                    known[name] = str(known[name])
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"invalid input spec in the checkpoint: {exc}") from None
        return cls(**known)

    def stride_at(self, fps: Optional[float]) -> float:
        """Source frames between a dense clip's frames in a video of `fps` frames per second, so
        that the clip covers `seconds`: at least 1 (below that frames would repeat), and `step`
        when the frame rate is unknown or implausible."""
        if not plausible_fps(fps):
            return float(self.step)
        return max(1.0, round(self.seconds * fps / self.frames, 4))

    def span_at(self, fps: Optional[float]) -> int:
        """Source frames one clip spans at `fps`: a shorter video has its frames spread over the clip."""
        if self.sampling == "uniform":
            return self.frames
        return dense_span(self.frames, self.stride_at(fps))

    def clip_seconds_at(self, fps: Optional[float]) -> float:
        """Seconds of video one clip covers at `fps`: `seconds`, or more where the frame rate is too
        low for the clip's frames to lie at least one frame apart in that time (16 frames at 10 fps
        take 1.6 s). A timeline window this long holds every frame its clip needs."""
        if not plausible_fps(fps):
            return self.seconds
        return max(self.seconds, self.span_at(fps) / fps)

    def to_meta(self) -> dict[str, Any]:
        meta = asdict(self)
        meta["mean"], meta["std"] = list(self.mean), list(self.std)
        if self.min_seconds is None:  # unknown: left out, as checkpoints made before it have it
            del meta["min_seconds"]
        return meta

    def unlike_training(self, frames: int, distinct: int, fps: Optional[float]) -> list[str]:
        """Why a clip whose frames had to come from only `frames` source frames (`distinct` of them
        different) is unlike the clips the model was trained on, as the short-clip note says it; empty
        when it is not: no frame repeated and at least `min_seconds` of video. Unknown `min_seconds`:
        any such clip is."""
        if self.min_seconds is None:
            return ["the model saw less motion than in a full clip"]
        reasons = []
        if distinct < self.frames:
            reasons.append("some frames repeat")
        covered = frames / fps if plausible_fps(fps) else None
        if covered is None or covered < self.min_seconds - 1e-6:
            shown = f"{covered:.2f} s" if covered is not None else "an unknown time"
            reasons.append(f"the shortest covers {shown}, less than the {self.min_seconds:.2f} s the model's "
                           "training clips covered")
        return reasons

    def covers_enough(self, frames: int, distinct: int, fps: Optional[float]) -> bool:
        """Whether such a clip is still like the model's training clips (`unlike_training` finds nothing)."""
        return not self.unlike_training(frames, distinct, fps)
