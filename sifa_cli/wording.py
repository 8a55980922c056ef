"""Count-dependent wording for messages: `counted(2, "video")` is "2 videos", `form(1, "has", "have")` is "has"."""

from __future__ import annotations


def form(n: int, one: str, many: str | None = None) -> str:
    """`one` when `n` is 1, otherwise `many` (by default `one` + "s"): a noun, verb or pronoun that agrees with `n`."""
    if n == 1:
        return one
    return many if many is not None else one + "s"


def counted(n: int, word: str, plural: str | None = None) -> str:
    """`n` and `word` in the form that agrees with it: "0 videos", "1 video", "2 classes" (with `plural` "classes")."""
    return f"{n} {form(n, word, plural)}"
