"""Display attributes for 16 and 256 colours and monochrome, readable on dark and light terminals.

Text on the terminal's own background uses only colours that read on black and on white
(dark green, dark cyan, dark red, brown, dark magenta, mid grey); bright colours appear only
on the header's fixed blue background. Meaning never rests on colour alone: every state
that matters also has a word or a marker.
"""

from __future__ import annotations

# (name, 16-colour foreground, 16-colour background, monochrome, 256-colour fg, 256-colour bg)
PALETTE: list[tuple[str, str, str, str, str, str]] = [
    ("header", "white", "dark blue", "standout", "h255", "h24"),
    ("header.title", "white,bold", "dark blue", "standout,bold", "h255,bold", "h24"),
    ("header.dim", "light gray", "dark blue", "standout", "h250", "h24"),
    ("header.live", "light green,bold", "dark blue", "standout,bold", "h120,bold", "h24"),
    ("header.demo", "yellow,bold", "dark blue", "standout,bold", "h228,bold", "h24"),
    ("header.readonly", "light magenta,bold", "dark blue", "standout,bold", "h219,bold", "h24"),
    ("header.paused", "black", "brown", "bold", "h16", "h178"),
    ("header.error", "white,bold", "dark red", "bold", "h255,bold", "h124"),
    ("header.drift", "black", "brown", "bold,underline", "h16", "h178"),
    ("tab", "black", "light gray", "default", "h236", "h252"),
    ("tab.active", "white,bold", "dark cyan", "standout,bold", "h255,bold", "h31"),
    ("tab.hint", "dark gray", "light gray", "default", "h240", "h252"),
    ("colhead", "dark cyan,bold", "default", "underline", "h31,bold", "default"),
    ("vip", "dark cyan,bold", "default", "bold", "h31,bold", "default"),
    ("service", "default,bold", "default", "bold", "default,bold", "default"),
    ("dim", "dark gray", "default", "default", "h244", "default"),
    ("number", "default", "default", "default", "default", "default"),
    ("held.here", "dark green,bold", "default", "bold", "h34,bold", "default"),
    ("held.away", "dark gray", "default", "default", "h244", "default"),
    ("ok", "dark green,bold", "default", "default", "h34,bold", "default"),
    ("drained", "brown,bold", "default", "bold", "h172,bold", "default"),
    ("zero", "dark red,bold", "default", "bold,underline", "h160,bold", "default"),
    ("pending", "dark magenta,bold", "default", "underline", "h133,bold", "default"),
    ("drift", "black", "brown", "standout", "h16", "h178"),
    ("drift.text", "brown", "default", "default", "h172", "default"),
    ("spark", "dark green", "default", "default", "h34", "default"),
    ("focus", "black", "dark cyan", "standout", "h16", "h117"),
    ("status", "default", "default", "default", "default", "default"),
    ("status.info", "dark green", "default", "default", "h34", "default"),
    ("status.warn", "brown,bold", "default", "bold", "h172,bold", "default"),
    ("status.error", "white,bold", "dark red", "standout", "h255,bold", "h124"),
    ("status.pending", "dark magenta,bold", "default", "bold", "h133,bold", "default"),
    ("hint", "dark gray", "default", "default", "h244", "default"),
    ("key", "dark cyan,bold", "default", "bold", "h31,bold", "default"),
    ("error", "dark red,bold", "default", "bold", "h160,bold", "default"),
    ("overlay", "default", "default", "default", "default", "default"),
    ("overlay.title", "dark cyan,bold", "default", "bold", "h31,bold", "default"),
    ("toosmall", "white,bold", "dark red", "standout", "h255,bold", "h124"),
]

ATTRIBUTES = tuple(entry[0] for entry in PALETTE)

# Every attribute turns into the focus bar on the selected row, so the bar is one solid colour;
# the words (ok, DRAIN, ZERO, pending, DRIFT, MISSING) still tell the states apart there.
FOCUS_MAP = {None: "focus", **{name: "focus" for name in ATTRIBUTES}}

COLOR_DEPTHS = {"16": 16, "256": 256, "mono": 1}


def color_depth(choice: str | None, detected: int) -> int:
    """The number of colours to use: the --colors choice, else what the terminal reports."""
    if choice is not None:
        return COLOR_DEPTHS[choice]
    if detected >= 256:
        return 256
    if detected >= 8:
        return 16
    return 1
