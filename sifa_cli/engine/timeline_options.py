"""The choices that shape a timeline's segments (shot cuts, uncertainty), kept free of torch so the
CLI can name their defaults without loading the model code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sifa_cli.errors import InputError

# PySceneDetect's defaults for detect-content: a cut where the mean HSV change passes 27 (0-255
# scale), and no shot shorter than 15 frames.
CUT_THRESHOLD = 27.0
MIN_SHOT_FRAMES = 15
# A segment is uncertain when its mean top score is below UNCERTAIN_BELOW, or the runner-up
# label's mean score is within UNCERTAIN_MARGIN of it.
UNCERTAIN_BELOW = 0.6
UNCERTAIN_MARGIN = 0.15


@dataclass(frozen=True)
class TimelineOptions:
    """How a timeline is cut into segments: shot-cut detection on or off, and the uncertainty marks."""

    cuts: bool = True
    cut_threshold: float = CUT_THRESHOLD
    uncertain_below: float = UNCERTAIN_BELOW
    uncertain_margin: float = UNCERTAIN_MARGIN

    def check(self) -> None:
        if not 0.0 <= self.uncertain_below <= 1.0:
            raise InputError(f"--uncertain-below must be a score between 0 and 1, got {self.uncertain_below:g}")
        if not 0.0 <= self.uncertain_margin <= 1.0:
            raise InputError(f"--uncertain-margin must be between 0 and 1, got {self.uncertain_margin:g}")
        if not (np.isfinite(self.cut_threshold) and self.cut_threshold > 0):
            raise InputError(f"--cut-threshold must be a positive number, got {self.cut_threshold:g}")
        if self.cuts:
            content_detector()  # refuses now, before the model loads, when scenedetect is missing

    def settings(self) -> dict:
        """What goes into the results' recorded timeline settings."""
        return {"cuts": self.cut_threshold if self.cuts else None,
                "uncertain_below": self.uncertain_below, "uncertain_margin": self.uncertain_margin}


def content_detector():
    try:
        from scenedetect import ContentDetector
    except ImportError:
        raise InputError("shot-cut detection needs PySceneDetect (pip install scenedetect-headless); "
                         "or pass --no-cuts") from None
    return ContentDetector
