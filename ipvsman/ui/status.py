"""The header (director, mode, poll age, health, view tabs) and the footer status line."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import urwid

from ipvsman.ui.widgets import Markup

# How long a message stays in the status line, by level (seconds).
MESSAGE_SECONDS = {"info": 5.0, "warn": 10.0, "error": 30.0}
HISTORY_LENGTH = 50


@dataclass(frozen=True)
class Message:
    text: str
    level: str  # "info", "warn", "error"
    at: float
    until: float


class StatusBar(urwid.WidgetWrap):
    """One line: the newest message until it expires, else pending changes, else key hints.

    Every message is also kept in `history` (newest last) so nothing reported is lost when
    it leaves the line; the sync view lists them.
    """

    def __init__(self, clock: Callable[[], float], hint: Markup | str = ""):
        self.clock = clock
        self.hint = hint
        self.history: collections.deque[Message] = collections.deque(maxlen=HISTORY_LENGTH)
        self.pending: dict[object, str] = {}
        self._current: Message | None = None
        self._text = urwid.Text("", wrap="ellipsis")
        self._map = urwid.AttrMap(self._text, "status")
        super().__init__(self._map)
        self.refresh()

    def post(self, text: str, level: str = "info", seconds: float | None = None) -> None:
        now = self.clock()
        message = Message(text, level, now, now + (MESSAGE_SECONDS[level] if seconds is None else seconds))
        self.history.append(message)
        self._current = message
        self.refresh()

    def set_pending(self, key: object, text: str | None) -> None:
        """Show (text) or forget (None) a change that waits for confirmation."""
        if text is None:
            self.pending.pop(key, None)
        else:
            self.pending[key] = text
        self.refresh()

    def set_hint(self, hint: Markup | str) -> None:
        self.hint = hint
        self.refresh()

    @property
    def current(self) -> Message | None:
        if self._current is not None and self._current.until <= self.clock():
            self._current = None
        return self._current

    def refresh(self) -> None:
        """Show what is due now; called on every tick so messages expire."""
        message = self.current
        if message is not None:
            markup: Markup | str = [(f"status.{message.level}", f" {message.text} ")]
        elif self.pending:
            texts = list(self.pending.values())
            extra = f" (+{len(texts) - 1} more)" if len(texts) > 1 else ""
            markup = [("status.pending", f" pending: {texts[-1]}{extra} ")]
        else:
            markup = self.hint or ""
        self._text.set_text(markup)

    @property
    def text(self) -> str:
        return self._text.text


class Header(urwid.WidgetWrap):
    """Three lines: who and what is watched; the director's health; the view tabs."""

    def __init__(self):
        self._identity = urwid.Text("", wrap="clip")
        self._poll = urwid.Text("", align="right", wrap="clip")
        self._health = urwid.Text("", wrap="clip")
        self._tabs = urwid.Text("", wrap="clip")
        self._tab_hint = urwid.Text("", align="right", wrap="clip")
        first = urwid.AttrMap(urwid.Columns([self._identity, ("pack", self._poll)], dividechars=1), "header")
        second = urwid.AttrMap(self._health, "header.dim")
        third = urwid.AttrMap(urwid.Columns([self._tabs, ("pack", self._tab_hint)], dividechars=1), "tab")
        super().__init__(urwid.Pile([first, second, third]))

    def set_identity(self, host: str, modes: Sequence[tuple[str, str]]) -> None:
        markup: Markup = [("header.title", " ipvsman "), ("header", f" {host} ")]
        for attr, word in modes:
            markup += [" ", (attr, f" {word} ")]
        self._identity.set_text(markup)

    def set_poll(self, markup: Markup | str) -> None:
        self._poll.set_text(markup)

    def set_health(self, markup: Markup | str) -> None:
        self._health.set_text(markup)

    def set_tabs(self, tabs: Sequence[tuple[str, str]], active: str, hint: str) -> None:
        markup: Markup = []
        for index, (name, title) in enumerate(tabs, start=1):
            attr = "tab.active" if name == active else "tab"
            markup += [" " if index > 1 else "", (attr, f" {index} {title} ")]
        self._tabs.set_text(markup)
        self._tab_hint.set_text(("tab.hint", hint))

    @property
    def lines(self) -> tuple[str, str, str]:
        return (self._identity.text, self._health.text, self._tabs.text)


class FilterPrompt(urwid.WidgetWrap):
    """The footer while a connection filter is typed: `/` then the filter text."""

    def __init__(self):
        self.edit = urwid.Edit(("key", "/ "), wrap="clip")
        super().__init__(urwid.AttrMap(self.edit, "status"))

    def start(self, text: str) -> None:
        self.edit.set_edit_text(text)
        self.edit.set_edit_pos(len(text))

    @property
    def value(self) -> str:
        return self.edit.edit_text
