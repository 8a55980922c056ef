"""Tables that fit the terminal: columns are dropped by priority, not squeezed until their headers
read '…'; paths are shown relative to their common folder and cut from the left, so the file name
stays; columns marked `wrap` fold onto several lines instead of being cut.

    cols = [Col("video", cut_left=True), Col("top-1"), Col("score", justify="right", priority=1),
            Col("next", wrap=True, priority=2)]
    fitted = fit_table(cols, rows, width=console.width)
    console.print(fitted.table)          # fitted.dropped: headers left out
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from rich.table import Column, Table
from rich.text import Text

Cell = Union[str, Text]  # str: plain text (no markup)
ELLIPSIS = "…"


@dataclass
class Col:
    header: str
    priority: int = 0  # 0: always shown; higher numbers are dropped first when space is short
    justify: str = "left"
    wrap: bool = False  # may fold onto several lines, down to min_width (at least its longest header word)
    min_width: int = 12
    cut_left: bool = False  # cut from the left ("…/name.mp4") down to min_width
    fold_at: Optional[str] = None  # a wrap column too narrow for its cells breaks lines after this separator
    style: Optional[str] = None


@dataclass
class FittedTable:
    table: Table
    dropped: list[str]


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(str(cell))


def cut_left(text: Cell, width: int) -> Text:
    """The end of `text` in at most `width` cells, with '…' in front when something was cut."""
    text = _text(text)
    if text.cell_len <= width:
        return text
    if width <= 1:
        return Text(ELLIPSIS[:width])
    tail = text[len(text) - (width - 1):]
    while tail.cell_len > width - 1:  # wide characters
        tail = tail[1:]
    return Text(ELLIPSIS) + tail


def _pack(pieces: list[str], separator: str, width: int, style) -> Text:
    """Pieces joined by `separator`, a line break replacing it where the next piece would not fit."""
    lines: list[str] = []
    for piece in pieces:
        joined = lines[-1] + separator + piece if lines else piece
        if lines and Text(joined).cell_len <= width:
            lines[-1] = joined
        else:
            if lines:
                lines[-1] += separator.rstrip()
            lines.append(piece)
    return Text("\n".join(lines), style=style)


def table_overhead(columns: int) -> int:
    """Cells a boxed rich table with (0, 1) padding adds around `columns` columns."""
    return 3 * columns + 1


def fit_table(cols: Sequence[Col], rows: Sequence[Sequence[Cell]], width: int, **table_kwargs) -> FittedTable:
    """A rich Table of `rows` no wider than `width`, dropping the least important columns first."""
    texts = [[_text(cell) for cell in row] for row in rows]
    natural = [max([Text(c.header).cell_len] + [row[i].cell_len for row in texts]) for i, c in enumerate(cols)]
    header_word = [max(len(word) for word in c.header.split() or [""]) for c in cols]
    # a column that folds at a separator needs room for its longest piece
    piece = [max([0] + [Text(p).cell_len for row in texts for p in row[i].plain.split(c.fold_at)])
             if c.fold_at else 0 for i, c in enumerate(cols)]

    def need(i: int) -> int:
        col = cols[i]
        if col.wrap or col.cut_left:
            return min(natural[i], max(col.min_width, header_word[i], piece[i]))
        return natural[i]

    active = list(range(len(cols)))
    while sum(need(i) for i in active) + table_overhead(len(active)) > width:
        droppable = [i for i in active if cols[i].priority > 0]
        if not droppable:
            break
        active.remove(max(droppable, key=lambda i: (cols[i].priority, i)))
    widths = {i: need(i) for i in active}
    spare = width - sum(widths.values()) - table_overhead(len(active))
    for i in sorted(active, key=lambda i: (not cols[i].cut_left, cols[i].priority, i)):  # paths first
        if spare <= 0:
            break
        grow = min(spare, natural[i] - widths[i])
        widths[i] += grow
        spare -= grow

    columns = [Column(cols[i].header, justify=cols[i].justify, width=widths[i], no_wrap=not cols[i].wrap,
                      overflow="fold" if cols[i].wrap else "ellipsis", style=cols[i].style) for i in active]
    table = Table(*columns, **table_kwargs)

    def shown(i: int, cell: Text) -> Text:
        if cols[i].cut_left:
            return cut_left(cell, widths[i])
        separator = cols[i].fold_at
        if cols[i].wrap and separator and cell.cell_len > widths[i]:
            return _pack(cell.plain.split(separator), separator, widths[i], cell.style)
        return cell

    for row in texts:
        table.add_row(*[shown(i, row[i]) for i in active])
    return FittedTable(table, [cols[i].header for i in range(len(cols)) if i not in active])


def relative_paths(paths: Sequence[str]) -> tuple[Optional[str], list[str]]:
    """(common folder, paths relative to it) for two or more paths with a common folder; else
    (None, the paths unchanged)."""
    if len(paths) < 2:
        return None, list(paths)
    try:
        root = os.path.commonpath([os.path.abspath(p) if os.path.isabs(p) else os.path.normpath(p) for p in paths])
    except ValueError:  # absolute and relative paths mixed, or different drives
        return None, list(paths)
    if root in ("", os.sep, "."):
        return None, list(paths)
    normalised = [os.path.abspath(p) if os.path.isabs(p) else os.path.normpath(p) for p in paths]
    return root, [os.path.relpath(p, root) for p in normalised]
