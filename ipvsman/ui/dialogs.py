"""Small framed overlays over the dashboard: pick one of a list (`a`), answer y/n (`x`), read details (`i`).

Each names the keymap context its keys are looked up in; the controller owns what they do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import urwid

from ipvsman.ui.widgets import Markup, Row


class Dialog(urwid.WidgetWrap):
    """A framed box with a title; `context` is its keymap context, `modal` keeps other keys out."""

    context = ""
    modal = True
    hint = ""  # what answers it, for the status line when another key is pressed

    def __init__(self, title: str, body: urwid.Widget, footer: Markup | str = ""):
        self.title = title
        widgets = [body]
        if footer:
            widgets = [body, ("pack", urwid.Divider()), ("pack", urwid.Text(footer))]
        box = urwid.LineBox(urwid.Pile(widgets), title=title, title_attr="overlay.title")
        super().__init__(urwid.AttrMap(box, "overlay"))

    def height(self, width: int, screen_rows: int) -> int:
        """Rows the dialog wants when it is `width` columns wide on a screen of `screen_rows`."""
        return min(screen_rows - 4, 8)


class ChoiceDialog(Dialog):
    """A list to pick one entry from with the arrows and Enter."""

    context = "choose"
    hint = "Enter adds, Esc adds nothing"

    def __init__(self, title: str, entries: Sequence[tuple[Markup | str, object]], footer: Markup | str = ""):
        self.values = [value for _, value in entries]
        rows = []
        for index, (label, _) in enumerate(entries):
            row = Row(("choice", index))
            row.set_markup([" ", *(label if isinstance(label, list) else [label])])
            rows.append(row)
        self.walker = urwid.SimpleFocusListWalker(rows)
        self.listbox = urwid.ListBox(self.walker)
        super().__init__(title, self.listbox, footer)

    def select(self, value: object) -> None:
        if value in self.values:
            self.walker.set_focus(self.values.index(value))

    def chosen(self) -> object:
        return self.values[self.walker.focus] if self.values else None

    def height(self, width: int, screen_rows: int) -> int:
        return min(screen_rows - 4, len(self.values) + 4)


class ConfirmDialog(Dialog):
    """A question answered with y or n (Esc is no), carrying what each answer does: `y` runs
    `on_yes`; `n` shows `no_message` and runs `on_no` (the controller closes it first)."""

    context = "confirm"
    hint = "answer y or n"

    def __init__(self, title: str, question: str, detail: Markup | str = "", *,
                 on_yes: Callable[[], None] | None = None, no_message: str = "nothing changed",
                 on_no: Callable[[], None] | None = None):  # fmt: skip
        self.question = question
        self.on_yes, self.no_message, self.on_no = on_yes, no_message, on_no
        self.lines = [urwid.Text(("service", question))]
        if detail:
            self.lines.append(urwid.Text(detail))
        answers = [("key", " y"), " yes   ", ("key", "n"), "/", ("key", "Esc"), " no"]
        super().__init__(title, urwid.Filler(urwid.Pile(self.lines), valign="top"), answers)

    def height(self, width: int, screen_rows: int) -> int:
        return min(screen_rows - 4, 4 + sum(line.rows((width - 2,)) for line in self.lines))


class DetailsDialog(Dialog):
    """Lines of text to read and scroll; any of its close keys, or another command, closes it."""

    context = "details"
    modal = False

    def __init__(self, title: str, lines: Sequence[Markup | str]):
        self.lines = [urwid.Text(line if line else "") for line in lines]
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(self.lines))
        super().__init__(title, self.listbox, [("key", " i"), "/", ("key", "Esc"), " closes"])

    def height(self, width: int, screen_rows: int) -> int:
        return min(screen_rows - 4, 4 + sum(line.rows((width - 2,)) for line in self.lines))

    @property
    def text(self) -> str:
        return "\n".join(widget.text for widget in self.lines)
