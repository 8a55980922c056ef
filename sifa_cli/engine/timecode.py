"""SMPTE timecode for timeline exports: frame numbers <-> HH:MM:SS:FF, drop-frame where it applies.

A video's measured frame rate (29.97002997...) is snapped to the broadcast rate it stands for
(30000/1001), so that frame N is always the same timecode as an editing tool computes it. At
29.97 and 59.94 fps timecode is drop-frame (written HH:MM:SS;FF): frame numbers 00 and 01 (00-03
at 59.94) are skipped at the start of every minute except each tenth, so the timecode keeps pace
with the clock. Other rates count frames plainly at their nominal rate (23.976 fps counts 24 a
timecode second, as every editing tool does). Timecode wraps after 24 hours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from sifa_cli.errors import InputError

# The rates editing tools know by name; a measured rate this close (relative) to one is that rate.
STANDARD_RATES = (Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
                  Fraction(48), Fraction(50), Fraction(60000, 1001), Fraction(60))
SNAP_TOLERANCE = 2e-4
DROP_FRAME_RATES = {Fraction(30000, 1001): 2, Fraction(60000, 1001): 4}  # frame numbers dropped a minute
_TIMECODE = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})([:;.])(\d{2,3})$")


def snap_rate(fps: float) -> Fraction:
    """The exact frame rate a measured `fps` stands for: a standard rate when within 0.02 %, else
    the nearest fraction with a denominator up to 1001."""
    if not fps > 0:
        raise InputError("the video's frame rate is unknown, so its frames have no timecode")
    for rate in STANDARD_RATES:
        if abs(fps - float(rate)) <= SNAP_TOLERANCE * float(rate):
            return rate
    return Fraction(fps).limit_denominator(1001)


@dataclass(frozen=True)
class TimecodeRate:
    """Counting frames as timecode at one frame rate."""

    rate: Fraction

    @classmethod
    def for_fps(cls, fps: float) -> "TimecodeRate":
        return cls(snap_rate(fps))

    @property
    def nominal(self) -> int:
        """Frames counted per timecode second (24 at 23.976, 30 at 29.97)."""
        return max(1, round(self.rate))

    @property
    def dropped(self) -> int:
        """Frame numbers skipped at each minute but every tenth (0 when not drop-frame)."""
        return DROP_FRAME_RATES.get(self.rate, 0)

    @property
    def drop_frame(self) -> bool:
        return self.dropped > 0

    @property
    def per_day(self) -> int:
        return 24 * 6 * (600 * self.nominal - 9 * self.dropped)

    def timecode(self, frame: int) -> str:
        """The timecode of frame number `frame` (0 = 00:00:00:00); ';' before the frames when drop-frame."""
        frame = int(frame) % self.per_day
        drop, nominal = self.dropped, self.nominal
        if drop:
            per_ten = 600 * nominal - 9 * drop
            per_minute = 60 * nominal - drop
            tens, rest = divmod(frame, per_ten)
            frame += 9 * drop * tens + (drop * ((rest - drop) // per_minute) if rest > drop else 0)
        seconds, ff = divmod(frame, nominal)
        minutes, ss = divmod(seconds, 60)
        hh, mm = divmod(minutes, 60)
        return f"{hh:02d}:{mm:02d}:{ss:02d}{';' if drop else ':'}{ff:02d}"

    def frame(self, timecode: str, option: str = "--start-timecode") -> int:
        """The frame number of a timecode HH:MM:SS:FF (or HH:MM:SS;FF), checked for this rate."""
        match = _TIMECODE.match(timecode.strip())
        if not match:
            raise InputError(f"{option} must look like HH:MM:SS:FF (HH:MM:SS;FF for drop-frame), got {timecode!r}")
        hh, mm, ss, _, ff = (match.group(i) for i in range(1, 6))
        hh, mm, ss, ff = int(hh), int(mm), int(ss), int(ff)
        rate_text = format_rate(self.rate)
        if hh > 23 or mm > 59 or ss > 59 or ff >= self.nominal:
            raise InputError(f"{option} {timecode}: not a timecode at {rate_text} fps (hours 0-23, minutes and "
                             f"seconds 0-59, frames 0-{self.nominal - 1})")
        minutes = 60 * hh + mm
        if self.dropped and ss == 0 and ff < self.dropped and mm % 10:
            raise InputError(f"{option} {timecode}: drop-frame timecode at {rate_text} fps skips frames "
                             f"00-{self.dropped - 1:02d} at the start of each minute not divisible by 10")
        return (3600 * hh + 60 * mm + ss) * self.nominal + ff - self.dropped * (minutes - minutes // 10)

    def seconds(self, frame: int) -> float:
        """Where frame number `frame` starts, in seconds from frame 0."""
        return float(Fraction(int(frame)) / self.rate)


def format_rate(rate: Fraction) -> str:
    """29.97, 23.976, 25: how editors name a rate."""
    if rate.denominator == 1:
        return str(rate.numerator)
    return f"{float(rate):.3f}".rstrip("0").rstrip(".")
