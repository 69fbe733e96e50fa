"""What every view shares: the context it is drawn with, a keyed list that keeps its selection, and
the small texts (service labels, server states, rates) that several views print the same way.

Views only turn snapshots into widgets: no kernel access, no threads.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import urwid

from ipvsman.model import (
    STATE_LABELS,
    TCP_STATES,
    Dest,
    DestKey,
    Rates,
    Service,
    ServiceKey,
    Snapshot,
    StateCounts,
)
from ipvsman.ui.widgets import Line, Markup, Row, fmt_count, fmt_si


class Names:
    """Names for addresses and services; this one knows none (numeric display)."""

    def address(self, address: str) -> str | None:
        return None

    def service(self, key: ServiceKey) -> str | None:
        return None

    def dest(self, key: DestKey) -> str | None:
        return None


@dataclass
class ViewContext:
    """What a view needs besides the snapshot, handed in by the controller."""

    now: float = 0.0
    names: Names = field(default_factory=Names)
    held: Mapping[str, str] | None = None  # local address -> interface; None while unknown
    pending: Mapping[DestKey, tuple[int, int]] = field(default_factory=dict)  # (old, new) not yet confirmed
    drained: Mapping[DestKey, int] = field(default_factory=dict)  # weight before `0` drained it
    interval: float = 1.0
    read_connections: bool = True
    messages: Sequence = ()  # status history, oldest first
    sync_panel: Sequence[str] | None = None  # lines of the sync monitor, None when not available


@functools.lru_cache(maxsize=65536)
def address_sort_key(address: str) -> tuple:
    """Orders addresses numerically (IPv4 before IPv6); text that is no address sorts last."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0, address)
    return (parsed.version, int(parsed), "")


def service_sort_key(key: ServiceKey) -> tuple:
    return (address_sort_key(key.address), key.fwmark, key.protocol or "", key.port)


def service_label(key: ServiceKey) -> str:
    """tcp/80, or FWM 5 for a firewall-mark service."""
    if key.fwmark:
        return f"FWM {key.fwmark}"
    return f"{key.protocol}/{key.port}"


def state_items(counts: StateCounts | None) -> list[tuple[str, int]]:
    """(label, count) of the states with connections, TCP states first in their usual order."""
    if not counts:
        return []
    order = [state for state in TCP_STATES if counts[state]]
    order += sorted(state for state in counts if state not in TCP_STATES and counts[state])
    return [(STATE_LABELS.get(state, state.title()), counts[state]) for state in order]


def state_markup(counts: StateCounts | None, empty: str = "no connections") -> Markup:
    items = state_items(counts)
    if not items:
        return [("dim", empty)]
    markup: Markup = []
    for index, (label, count) in enumerate(items):
        markup += ["  " if index else "", ("dim", f"{label} "), fmt_count(count)]
    return markup


def rates_text(rates: Rates) -> str:
    return (
        f"cps {fmt_si(rates.cps)}  pps {fmt_si(rates.inpps)}/{fmt_si(rates.outpps)}"
        f"  B/s {fmt_si(rates.inbps)}/{fmt_si(rates.outbps)}"
    )


def dest_state(key: DestKey, dest: Dest, ctx: ViewContext) -> tuple[str, str]:
    """(word, attribute) of a real server: told apart by the word, not only the colour."""
    if key in ctx.pending:
        return "pending", "pending"
    if dest.weight == 0 and key in ctx.drained:
        return "DRAIN", "drained"
    if dest.weight == 0:
        return "ZERO", "zero"
    return "on", "ok"


def weight_markup(key: DestKey, dest: Dest, ctx: ViewContext) -> tuple[str, str | None]:
    if key in ctx.pending:
        old, new = ctx.pending[key]
        return f"{old}→{new}", "pending"
    return str(dest.weight), None


def connection_total(counts: StateCounts | None, dests: Iterable[Dest]) -> int:
    """From the connection table when it was read, else the kernel's active + inactive counts."""
    if counts is not None:
        return counts.total
    return sum(dest.active_conns + dest.inactive_conns for dest in dests)


def held_markup(address: str, ctx: ViewContext) -> tuple[str, str]:
    if not address:
        return "firewall mark", "dim"
    if ctx.held is None:
        return "held: unknown", "dim"
    interface = ctx.held.get(address)
    if interface:
        return f"held here on {interface}", "held.here"
    return "not held here", "held.away"


def group_by_vip(services: Iterable[Service]) -> list[tuple[str, list[Service]]]:
    """Services grouped by virtual address in address order; fwmark services last under ''."""
    groups: dict[str, list[Service]] = {}
    for service in sorted(services, key=lambda s: service_sort_key(s.key)):
        groups.setdefault(service.key.address, []).append(service)
    return sorted(groups.items(), key=lambda item: (item[0] == "", address_sort_key(item[0])))


def vip_title(address: str, ctx: ViewContext) -> str:
    if not address:
        return "Firewall-mark services"
    name = ctx.names.address(address)
    return f"{name} ({address})" if name else address


class View:
    """A screen of the dashboard: a box widget fed with snapshots."""

    name = ""
    title = ""
    short_title = ""  # on the tab bar of a narrow terminal
    context = "global"  # keymap context of the view besides "global"

    def __init__(self):
        self.width = 100
        self.widget: urwid.Widget = urwid.SolidFill(" ")

    def update(self, snapshot: Snapshot | None, ctx: ViewContext) -> None:
        raise NotImplementedError

    def selection(self) -> Hashable | None:
        """The key of the selected row (ServiceKey, DestKey, ("vip", addr), ("rs", addr)), or None."""
        return None


class KeyedListView(View):
    """A list of Rows known by keys: rows are reused and updated in place, and the selection
    follows the same key across refreshes (not the same row number)."""

    def __init__(self):
        super().__init__()
        self.walker = urwid.SimpleFocusListWalker([])
        self.listbox = urwid.ListBox(self.walker)
        self.column_header = urwid.Text("", wrap="clip")
        self.widget = urwid.Frame(self.listbox, header=urwid.AttrMap(self.column_header, "colhead"))
        self.rows: dict[Hashable, Row] = {}

    def build(self, snapshot: Snapshot, ctx: ViewContext) -> Iterable[tuple[Hashable, Markup, bool]]:
        """(key, markup, selectable) of each row, top to bottom."""
        raise NotImplementedError

    def header(self) -> Markup:
        return [""]

    def update(self, snapshot: Snapshot | None, ctx: ViewContext) -> None:
        self.column_header.set_text(self.header())
        if snapshot is None:
            entries = [(("empty",), [("dim", " waiting for the first poll…")], False)]
        else:
            entries = list(self.build(snapshot, ctx))
        focus_key, focus_index = self._focus()
        new_rows = []
        for key, markup, selectable in entries:
            row = self.rows.get(key)
            if row is None or row.text.selectable() != selectable:
                row = Row(key, selectable)
            row.set_markup(markup)
            new_rows.append(row)
        old_keys = [row.key for row in self.walker]
        new_keys = [row.key for row in new_rows]
        self.rows = {row.key: row for row in new_rows}
        if old_keys != new_keys:
            self.walker[:] = new_rows
            self._restore_focus(focus_key, focus_index, new_keys)

    def _focus(self) -> tuple[Hashable | None, int | None]:
        if not self.walker:
            return None, None
        index = self.walker.focus
        return self.walker[index].key, index

    def _restore_focus(self, key: Hashable | None, index: int | None, keys: list[Hashable]) -> None:
        if not keys:
            return
        if key in self.rows:
            self.walker.set_focus(keys.index(key))
            return
        # The selected row went away: select the nearest selectable row at or above where it was.
        start = min(index or 0, len(keys) - 1)
        for position in [*range(start, -1, -1), *range(start + 1, len(keys))]:
            if self.walker[position].selectable():
                self.walker.set_focus(position)
                return

    def selection(self) -> Hashable | None:
        key, _ = self._focus()
        if key is None or not self.rows[key].selectable():
            return None
        return key

    def select(self, key: Hashable) -> bool:
        """Move the selection to the row with `key`; False when there is none."""
        for position, row in enumerate(self.walker):
            if row.key == key:
                self.walker.set_focus(position)
                return True
        return False


def line(width: int) -> Line:
    return Line(width)
