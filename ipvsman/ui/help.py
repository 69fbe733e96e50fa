"""The `?` help overlay, generated from the keymap table."""

from __future__ import annotations

import urwid

from ipvsman.ui.keymap import KEYMAP, Keymap, key_label

KEY_COLUMN = 22


def help_lines(keymap: Keymap = KEYMAP) -> list[urwid.Widget]:
    lines: list[urwid.Widget] = []
    for title, entries in keymap.grouped():
        if lines:
            lines.append(urwid.Text(""))
        lines.append(urwid.Text(("overlay.title", title)))
        for keys, text in entries:
            label = "  " + ", ".join(key_label(key) for key in keys)
            lines.append(
                urwid.Columns(
                    [(KEY_COLUMN, urwid.Text(("key", label), wrap="clip")), urwid.Text(text)], dividechars=1
                )
            )
    return lines


class HelpOverlay(urwid.WidgetWrap):
    """A framed, scrollable list of every key and what it does."""

    def __init__(self, keymap: Keymap = KEYMAP):
        self.listbox = urwid.ListBox(urwid.SimpleFocusListWalker(help_lines(keymap)))
        box = urwid.LineBox(self.listbox, title="Keys  (? or Esc closes)", title_attr="overlay.title")
        super().__init__(urwid.AttrMap(box, "overlay"))
