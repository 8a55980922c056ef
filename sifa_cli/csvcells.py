"""CSV cells a spreadsheet would run as formulas ("CSV injection"): a file name or label starting
with `=`, `+`, `-`, `@`, a tab or a carriage return is written with a `'` in front, as OWASP
recommends, in every CSV sifa writes. A cell that itself starts with `'` gets one more, so reading a
results file back (`restore`) gives every cell exactly as it was."""

from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"
_ESCAPED = FORMULA_STARTS + (_QUOTE,)


def neutralise(value: Any) -> Any:
    """`value` as it goes in a CSV cell: text that starts like a formula gets a leading quote."""
    if isinstance(value, str) and value[:1] in _ESCAPED:
        return _QUOTE + value
    return value


def neutralise_row(row: Union[Mapping[str, Any], Sequence[Any]]) -> Union[dict[str, Any], list[Any]]:
    if isinstance(row, Mapping):
        return {key: neutralise(value) for key, value in row.items()}
    return [neutralise(value) for value in row]


def restore(text: str) -> str:
    """A cell read back from a CSV sifa wrote: the quote `neutralise` added, removed."""
    if isinstance(text, str) and text[:1] == _QUOTE and text[1:2] in _ESCAPED and text[1:2] != "":
        return text[1:]
    return text
