"""Tables that fit the terminal: every shown column whole, long cells wrapped or cut with an ellipsis.

A DataTable sizes each column to its widest cell, so one long alert message or model name pushes the
columns after it off the screen. Here each column has a narrowest width; the widths are worked out
from the space there is (again on every resize), and cells wider than their column wrap onto the lines
the column allows, the last one ending in `…`.
"""

import re
from typing import NamedTuple, Sequence

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widgets import DataTable

#: The width a flexible column gets before the others grow past their narrowest.
COMFORTABLE = 40
_PIECES = re.compile(r"[^ _/-]*(?:[ _/-]+|$)")  # words, each with the separators after it


class Column(NamedTuple):
    label: str
    narrowest: int | None = None  # None: never narrower than its widest cell
    lines: int = 1  # how many lines a cell may wrap onto
    flexible: bool = False  # takes the width the others leave
    optional: bool = False  # left out (the last first) when even the narrowest widths do not fit


def widths(columns: Sequence[Column], naturals: Sequence[int], space: int, padding: int) -> list[int | None]:
    """Each column's width (None: left out) in `space` cells, `padding` more per shown column."""
    floors = [max(len(c.label), c.narrowest or n) for c, n in zip(columns, naturals)]
    # Which columns give way depends on the width, not on the rows (a search must not change the columns).
    shown = [True] * len(columns)
    for i in reversed(range(len(columns))):
        if sum(f + padding for f, s in zip(floors, shown) if s) <= space:
            break
        if columns[i].optional:
            shown[i] = False
    out: list[int | None] = [min(f, n) if s else None for f, n, s in zip(floors, naturals, shown)]
    rest = space - sum(w + padding for w in out if w is not None)

    def grow(i: int, target: int) -> None:
        nonlocal rest
        width = out[i]
        if width is not None and rest > 0 and target > width:
            more = min(target - width, rest)
            out[i], rest = width + more, rest - more

    flexible = [i for i, c in enumerate(columns) if c.flexible]
    for i in flexible:
        grow(i, min(naturals[i], COMFORTABLE))
    for i, c in enumerate(columns):
        if not c.flexible:
            grow(i, naturals[i])
    for i in flexible:
        grow(i, naturals[i])
    return out


def wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width`, broken after spaces, `_`, `/` and `-` (long words folded)."""
    lines = [""]
    for piece in _PIECES.findall(text):
        if len(lines[-1]) + len(piece.rstrip()) > width and lines[-1]:
            lines.append("")
        while len(lines[-1]) + len(piece.rstrip()) > width:
            cut = width - len(lines[-1])
            lines[-1] += piece[:cut]
            lines.append("")
            piece = piece[cut:]
        lines[-1] += piece
    return [line.rstrip() for line in lines if line.strip()] or [""]


def fit(cell: str | Text, width: int, lines: int) -> Text:
    """The cell in `width` cells and at most `lines` lines, the last one ending in `…` if there is more."""
    text = cell if isinstance(cell, Text) else Text(str(cell))
    if text.cell_len <= width:
        return text
    wrapped = wrap(text.plain, width)
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][:width - 1].rstrip() + "…"
    return Text("\n".join(wrapped), style=text.style)


class FittedTable(DataTable):
    """A DataTable of rows given whole (`show`), laid out again for every width it gets."""

    DEFAULT_CSS = "FittedTable { scrollbar-gutter: stable; overflow-x: hidden; }"

    class Laid(Message):
        """The columns were laid out again; `hidden` names those left out for want of width."""

        def __init__(self, table: "FittedTable", hidden: list[str]) -> None:
            super().__init__()
            self.table = table
            self.hidden = hidden

    def __init__(self, columns: Sequence[Column], **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.layout_columns = tuple(columns)
        self._rows: list[tuple[str | None, tuple]] = []
        self._hidden: list[str] | None = None

    def show(self, rows: Sequence[tuple], keys: Sequence[str] | None = None,
             columns: Sequence[Column] | None = None) -> None:
        """Show `rows` (one cell per column), keyed by `keys`; `columns` replaces the columns."""
        if columns is not None:
            self.layout_columns = tuple(columns)
        self._rows = list(zip(keys or [None] * len(rows), rows))
        self._lay_out()

    def on_resize(self, event: events.Resize) -> None:
        self._lay_out()

    def _lay_out(self) -> None:
        space = self.scrollable_content_region.width
        if space <= 0:
            return  # not on screen yet: laid out when it is
        naturals = [max([len(c.label)] + [_width(row[i]) for _, row in self._rows])
                    for i, c in enumerate(self.layout_columns)]
        sizes = widths(self.layout_columns, naturals, space, 2 * self.cell_padding)
        cursor_row, scroll_y = self.cursor_row, self.scroll_y
        self.clear(columns=True)
        shown = [(i, c, w) for i, (c, w) in enumerate(zip(self.layout_columns, sizes)) if w is not None]
        for _, c, w in shown:
            self.add_column(c.label, width=w)
        for key, row in self._rows:
            cells = [fit(row[i], w, c.lines) for i, c, w in shown]
            self.add_row(*cells, key=key, height=max(len(cell.plain.split("\n")) for cell in cells) if cells else 1)
        if self.row_count:
            self.move_cursor(row=min(cursor_row, self.row_count - 1), scroll=False)
            self.call_after_refresh(self.scroll_to, y=scroll_y, animate=False)  # once the new rows are measured
        hidden = [c.label for c, w in zip(self.layout_columns, sizes) if w is None]
        if hidden != self._hidden:
            self._hidden = hidden
            self.post_message(self.Laid(self, hidden))


def _width(cell: str | Text) -> int:
    return Text(cell).cell_len if isinstance(cell, str) else cell.cell_len
