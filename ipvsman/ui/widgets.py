"""Rows, cells, number formats and sparklines shared by the views, and the dashboard's top widget."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import urwid

from ipvsman.ui.palette import FOCUS_MAP

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
ELLIPSIS = "…"

Markup = list  # urwid text markup: a list of str and (attribute, str)


def fmt_count(value: int) -> str:
    """12,345."""
    return f"{value:,}"


def fmt_si(value: float) -> str:
    """A rate in at most 5 characters: 999, 1.2k, 12k, 123k, 1.2M ... (decimal multiples)."""
    value = float(value)
    for unit in ("", "k", "M", "G", "T"):
        if abs(value) < 999.5:
            if unit == "" or abs(value) >= 9.95:
                return f"{value:.0f}{unit}"
            return f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.0f}P"


def fmt_seconds(seconds: float) -> str:
    """A duration as 0:07, 12:30 or 3:02:10."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def fmt_age(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    return fmt_seconds(seconds)


def fmt_duration(seconds: float) -> str:
    """A cost or an age as 4.1 ms, 40 ms, 2.9 s, 41 s, 12 min, 3.5 h: the few digits a glance needs."""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def short_origin(origin: str) -> str:
    """'keepalived.conf:12' for '/etc/keepalived/keepalived.conf:12': the file's name and the line."""
    path, sep, line = origin.rpartition(":")
    if not sep or not line.isdigit():
        return origin.rsplit("/", 1)[-1]
    return f"{path.rsplit('/', 1)[-1]}:{line}"


def sparkline(values: Sequence[int], width: int) -> str:
    """The last `width` values as block characters scaled to their maximum; '' when width < 1."""
    if width < 1:
        return ""
    recent = list(values)[-width:]
    top = max(recent, default=0)
    if top <= 0:
        return SPARK_BLOCKS[0] * len(recent)
    last = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[min(last, round(value * last / top))] for value in recent)


def fit(text: str, width: int, align: str = "<") -> str:
    """`text` padded or cut (with an ellipsis) to exactly `width` columns."""
    if width <= 0:
        return ""
    if len(text) > width:
        return text[: width - 1] + ELLIPSIS if width > 1 else text[:1]
    return f"{text:{align}{width}}"


class Line:
    """Builds one line of markup from cells; the last cell may take the rest of the width."""

    def __init__(self, width: int):
        self.width = width
        self.used = 0
        self.markup: Markup = []

    def add(self, text: str, width: int | None = None, attr: str | None = None, align: str = "<") -> Line:
        room = self.width - self.used
        if room <= 0:
            return self
        if width is None:
            width = len(text)
        cell = fit(text, min(width, room), align)
        self.used += len(cell)
        self.markup.append((attr, cell) if attr else cell)
        return self

    def col(self, text: str, width: int, attr: str | None = None, align: str = "<") -> Line:
        """A table column: the text in width - 1 columns, then a space that keeps columns apart."""
        return self.add(text, max(0, width - 1), attr, align).gap(1)

    def gap(self, width: int = 1) -> Line:
        return self.add("", width)

    def extend(self, markup: Markup) -> Line:
        """Append ready markup ((attribute, text) pairs and strings), cut to the room left."""
        for part in markup:
            attr, text = part if isinstance(part, tuple) else (None, part)
            self.add(text, None, attr)
        return self

    def rest(self) -> int:
        return max(0, self.width - self.used)


def join_lines(lines: Sequence[Line | Markup]) -> Markup:
    """Several lines as the markup of one multi-line Text."""
    markup: Markup = []
    for index, line in enumerate(lines):
        if index:
            markup.append("\n")
        markup.extend(line.markup if isinstance(line, Line) else line)
    return markup or [""]


class RowText(urwid.Text):
    """A Text that can take the focus (selectable) and passes every key on."""

    def __init__(self, selectable: bool):
        super().__init__("", wrap="clip")
        self._selectable = selectable

    def selectable(self) -> bool:
        return self._selectable

    def keypress(self, size, key):
        return key


class Row(urwid.AttrMap):
    """One entry of a list view, known by a key that stays the same across refreshes."""

    def __init__(self, key: Hashable, selectable: bool = True):
        self.key = key
        self.text = RowText(selectable)
        self._markup: object = None
        super().__init__(self.text, None, FOCUS_MAP)

    def set_markup(self, markup: Markup | str) -> None:
        """Change the text in place, and only when it changed (no redraw otherwise)."""
        if markup != self._markup:
            self._markup = markup
            self.text.set_text(markup)

    @property
    def plain(self) -> str:
        return self.text.text


MIN_COLS, MIN_ROWS = 80, 24  # the smallest terminal the dashboard draws in


class DashboardWidget(urwid.WidgetWrap):
    """The top widget: hands keys and mouse events to the controller (ipvsman.ui.app.Dashboard), and draws a one-line
    notice instead of the dashboard when the terminal is too small (nothing is lost)."""

    def __init__(self, controller, body: urwid.Widget):
        self.controller = controller
        super().__init__(body)

    def set_body(self, body: urwid.Widget) -> None:
        self._w = body

    @property
    def body(self) -> urwid.Widget:
        return self._w

    def selectable(self) -> bool:
        return True

    def render(self, size, focus=False):
        cols, rows = size
        if cols < MIN_COLS or rows < MIN_ROWS:
            notice = urwid.Text(("toosmall", f"terminal too small: need {MIN_COLS}x{MIN_ROWS}, have {cols}x{rows}"),
                                wrap="clip")
            return urwid.Filler(notice, valign="top").render(size, focus)
        self.controller.set_width(cols)
        return super().render(size, focus)

    def keypress(self, size, key):
        return self.controller.keypress(size, key)

    def mouse_event(self, size, event, button, col, row, focus):
        return self.controller.mouse_event(size, event, button, col, row, focus)
