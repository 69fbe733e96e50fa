"""What every view shares: the context it is drawn with, a keyed list that keeps its selection, and
the small texts (service and server labels, drift marks, server states, rates) that several views
print the same way.

Views only turn snapshots into widgets: no kernel access, no threads.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import urwid

from ipvsman.drift import EXTRA, FORWARD, KINDS, MISSING, PERSISTENCE, SCHEDULER, WEIGHT, Drift, DriftReport
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
    group_by_vip,
    join_host_port,
    vip_group_positions,
)
from ipvsman.names import Names
from ipvsman.topology import ConfiguredService
from ipvsman.ui.drain import DrainStatus
from ipvsman.ui.tabletext import table_line
from ipvsman.ui.widgets import Line, Markup, Row, fmt_count, fmt_si
from ipvsman.verdicts import DOWN, FALLING, RISING, SUSPENDED, UP, Verdicts
from ipvsman.vips import VipOwner


def numeric_names() -> Names:
    """Names that know none: every label numeric (what the views get when no names were set up)."""
    return Names(None, show=False)


@dataclass(frozen=True)
class ConfigSummary:
    """One configuration file as view 5 lists it: what it is used for and what was wrong in it."""

    label: str  # "topology" or "keepalived.conf"
    path: str
    services: int
    used_for: str  # "names, a (add)" ...
    errors: tuple[str, ...] = ()  # "file:line: message"


@dataclass
class ViewContext:
    """What a view needs besides the snapshot, handed in by the controller."""

    now: float = 0.0
    names: Names = field(default_factory=numeric_names)
    owners: Mapping[str, VipOwner] | None = None  # VIP -> where it is held; None while unknown
    pending: Mapping[DestKey, tuple[int, int]] = field(default_factory=dict)  # (old, new) not yet confirmed
    drained: Mapping[DestKey, int] = field(default_factory=dict)  # weight before `0` drained it
    interval: float = 1.0
    read_connections: bool = True
    messages: Sequence = ()  # status history, oldest first
    drift: DriftReport | None = None  # None when no configuration is compared with the kernel
    drift_source: str = ""  # the file drift is measured against
    drift_only: bool = False  # views 1-3 list only what drifts (`D`)
    sync_monitor: object = None  # ipvsman.sync.monitor.MonitorStats, or a line saying why there is none
    configs: Sequence[ConfigSummary] = ()
    verdicts: Verdicts | None = None  # ipvsmand's state file; None: not watched (no verdicts shown)
    verdict_drift: Mapping[DestKey, str] = field(default_factory=dict)  # where the kernel and ipvsmand disagree
    drains: Mapping[DestKey, DrainStatus] = field(default_factory=dict)  # guided drains under way (`0`)


def port_label(key: ServiceKey, names: Names) -> str:
    """ldap/389/tcp with names on (port name/port/protocol, as the LVS plugin wrote it), 389/tcp
    without, or when the port has no name; FWM 10 for a firewall-mark service."""
    if key.fwmark:
        return f"FWM {key.fwmark}" + (" v6" if key.af == "inet6" else "")
    name = names.port(key.port, key.protocol)
    if name != str(key.port):
        return f"{name}/{key.port}/{key.protocol}"
    return f"{key.port}/{key.protocol}"


def service_label(key: ServiceKey, names: Names) -> str:
    """The configured name of a service (topology) when names are on, else port_label."""
    return names.service_name(key) or port_label(key, names)


def host_label(address: str, names: Names) -> str:
    """ldap4/10.10.10.204 when a name is known and names are on, else the address."""
    host = names.host(address)
    return f"{host}/{address}" if host and host != address else address


def service_title(key: ServiceKey, names: Names) -> str:
    """A service in full: [configured name] port label and VIP, e.g. LDAP ldap/389/tcp 10.10.10.100."""
    configured = names.service_name(key)
    prefix = f"{configured} " if configured else ""
    if key.fwmark:
        return prefix + port_label(key, names)
    return f"{prefix}{port_label(key, names)} {host_label(key.address, names)}"


def server_label(key: DestKey, names: Names, width: int | None = None) -> str:
    """A real server: ldap4/10.10.10.201:389 with a name, else 10.10.10.201:389. Where that does not
    fit in `width`, the name stands for the address: ldap4:389."""
    endpoint = join_host_port(key.address, key.port)
    name = names.dest_name(key)
    if not name or name == key.address:
        return endpoint
    full = f"{name}/{endpoint}"
    if width is None or len(full) <= width:
        return full
    return f"{name}:{key.port}"


# How the views write each kind of drift: upper case for a thing that is or is not there at all.
DRIFT_WORDS = {
    MISSING: "MISSING",
    EXTRA: "EXTRA",
    SCHEDULER: "scheduler",
    PERSISTENCE: "persistence",
    FORWARD: "method",
    WEIGHT: "weight",
}


def drift_words(kinds: Iterable[str]) -> str:
    """The kinds of drift of one row, in the report's order: "weight", "MISSING", "method,weight"."""
    kinds = set(kinds)
    return ",".join(DRIFT_WORDS[kind] for kind in KINDS if kind in kinds)


def drift_text(drift: Drift, names: Names, subject: bool = True) -> str:
    """One drift in a few words: '10.10.10.204:389 weight 0, configured 100'."""
    if drift.dest is not None:
        who = server_label(drift.dest, names) + " " if subject else ""
    else:
        who = ""
    if drift.kind == MISSING:
        return f"{who}configured, not in the kernel"
    if drift.kind == EXTRA:
        return f"{who}in the kernel, not configured"
    configured = "none" if drift.configured is None else drift.configured
    actual = "none" if drift.actual is None else drift.actual
    return f"{who}{DRIFT_WORDS[drift.kind]} {actual}, configured {configured}"


def service_drifts(key: ServiceKey, service: Service | None, report: DriftReport | None) -> list[Drift]:
    """The drift of a service itself and of each of its real servers, in the report's order."""
    if report is None or key not in report.affected_services:
        return []
    found = list(report.for_service(key))
    dests = service.dests if service is not None else ()
    for dest in dests:
        found.extend(report.for_dest(DestKey(key, dest.address, dest.port)))
    for configured in report.missing_dests.get(key, ()):
        found.extend(report.for_dest(DestKey(key, configured.address, configured.port)))
    return found


def missing_by_vip(report: DriftReport | None) -> dict[str, list[ConfiguredService]]:
    """Configured services the kernel does not have, by virtual address ('' for firewall marks)."""
    found: dict[str, list[ConfiguredService]] = {}
    for configured in report.missing_services if report is not None else ():
        found.setdefault(configured.key.address, []).append(configured)
    return found


def shown_services(snapshot: Snapshot, ctx: ViewContext) -> list[Service]:
    """The kernel's services, or only those that drift when the drift filter is on."""
    if ctx.drift_only and ctx.drift is not None:
        affected = ctx.drift.affected_services
        return [service for service in snapshot.services if service.key in affected]
    return list(snapshot.services)


def drift_only_note(ctx: ViewContext) -> Markup:
    """The line over the column titles of views 1-3 while the drift filter is on."""
    count = len(ctx.drift.affected_services) if ctx.drift is not None else 0
    source = f" against {ctx.drift_source}" if ctx.drift_source else ""
    return [
        " ",
        ("drift", " DRIFT ONLY "),
        ("dim", f" {count} service{'s' if count != 1 else ''} drift{'s' if count == 1 else ''}{source}; D shows all"),
    ]


def state_items(counts: StateCounts | None) -> list[tuple[str, int]]:
    """(label, count) of the states with connections, TCP states first in their usual order."""
    if not counts:
        return []
    order = [state for state in TCP_STATES if counts[state]]
    order += sorted(state for state in counts if state not in TCP_STATES and counts[state])
    return [(STATE_LABELS.get(state, state.title()), counts[state]) for state in order]


def state_markup(counts: StateCounts | None, empty: str = "no connections") -> Markup:
    """Counts by state; estimated ones (a sample, or an older table) start with "~"."""
    items = state_items(counts)
    if not items:
        return [("dim", empty)]
    markup: Markup = [("dim", "~ ")] if counts.estimated else []
    for index, (label, count) in enumerate(items):
        markup += ["  " if index else "", ("dim", f"{label} "), fmt_count(count)]
    return markup


def states_markup(counts: StateCounts | None, total: int, snapshot: Snapshot) -> Markup:
    """Counts by state of a service or real server whose kernel total is `total`, or why there are none."""
    if counts:
        return state_markup(counts)
    if total == 0:
        return [("dim", "no connections")]
    read = snapshot.table.read
    if read is None:
        why = "connection table not read" + (" (C reads it)" if snapshot.table.budget_percent == 0 else " yet")
    elif not read.complete:
        why = f"none in the sample of {fmt_count(read.entries)} entries"
    else:
        why = "none in the table read"
    return [("dim", f"states: {why}")]


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
        drain = ctx.drains.get(key)
        return (drain.word if drain is not None else "DRAIN"), "drained"
    if dest.weight == 0:
        return "ZERO", "zero"
    return "on", "ok"


# How each of ipvsmand's verdicts is coloured; the word says it without the colour.
VERDICT_ATTRS = {UP: "ok", DOWN: "zero", SUSPENDED: "drained", RISING: "pending", FALLING: "pending"}


def verdict_markup(key: DestKey, ctx: ViewContext) -> tuple[str, str]:
    """ipvsmand's word for a real server (UP, DOWN, rising 2/3...) and its attribute; '-' where it names none."""
    verdict = ctx.verdicts.by_dest.get(key) if ctx.verdicts is not None else None
    if verdict is None:
        return "-", "dim"
    return verdict.word, VERDICT_ATTRS.get(verdict.state, "dim")


def weight_markup(key: DestKey, dest: Dest, ctx: ViewContext) -> tuple[str, str | None]:
    if key in ctx.pending:
        old, new = ctx.pending[key]
        return f"{old}→{new}", "pending"
    return str(dest.weight), None


def held_markup(address: str, ctx: ViewContext) -> tuple[str, str]:
    """Where a VIP is held: 'held here on eth0 (VRRP VI_1)', 'not held here (VRRP VI_1)'."""
    if not address:
        return "firewall mark", "dim"
    if ctx.owners is None:
        return "held: unknown", "dim"
    owner = ctx.owners.get(address)
    vrrp = f" (VRRP {owner.vrrp_instance})" if owner is not None and owner.vrrp_instance else ""
    if owner is not None and owner.interface:
        return f"held here on {owner.interface}{vrrp}", "held.here"
    return f"not held here{vrrp}", "held.away"


class VipGroups:
    """group_by_vip of a snapshot's services, worked out once a layout (Snapshot.layout): the order
    is kept as positions in `services` and refilled with each new snapshot's services."""

    def __init__(self):
        self._layout: int | None = None
        self._positions: list[tuple[str, list[int]]] = []

    def __call__(self, snapshot: Snapshot) -> list[tuple[str, list[Service]]]:
        services = snapshot.services
        if snapshot.layout is None or snapshot.layout != self._layout:
            self._layout = snapshot.layout
            arrangement = snapshot.arrangement
            self._positions = arrangement.vip_groups if arrangement is not None else vip_group_positions(services)
        return [(address, [services[index] for index in positions]) for address, positions in self._positions]

    def shown(self, snapshot: Snapshot, ctx: ViewContext) -> list[tuple[str, list]]:
        """What views 1 and 2 list: the kernel's services by VIP, or, with a configuration compared,
        those the drift filter leaves with the configured ones the kernel lacks."""
        if ctx.drift is None:
            return self(snapshot)
        missing = missing_by_vip(ctx.drift)
        return group_by_vip(shown_services(snapshot, ctx) + [s for group in missing.values() for s in group])


def labels_key(snapshot: Snapshot, ctx: ViewContext) -> tuple | None:
    """What the service labels of views 1 and 2 depend on: labels worked out for one key hold while
    it stays the same. None (work them out afresh) when the layout is unknown, or when a
    configuration is compared: then the services shown also follow the drift report and `D`,
    as VipGroups.shown does."""
    if snapshot.layout is None or ctx.drift is not None:
        return None
    return (snapshot.layout, ctx.names, ctx.names.show, ctx.names.version)


def vip_title(address: str, ctx: ViewContext) -> str:
    if not address:
        return "Firewall-mark services"
    return host_label(address, ctx.names)


class View:
    """A screen of the dashboard: a box widget fed with snapshots."""

    name = ""
    title = ""
    short_title = ""  # on the tab bar of a narrow terminal
    context = "global"  # keymap context of the view besides "global"
    filters_drift = False  # whether `D` (drift only) applies to this view
    shows_states = False  # whether rows show counts by state (then a note says when they are estimated)

    def __init__(self):
        self.width = 100
        self.widget: urwid.Widget = urwid.SolidFill(" ")

    def update(self, snapshot: Snapshot | None, ctx: ViewContext) -> None:
        raise NotImplementedError

    def hide(self) -> None:
        """Another view is shown: let go of the snapshot and of anything made of it (the controller
        hands old snapshots on to be freed outside the loop, which a view keeping one defeats), but
        keep the selection. The next update() shows the snapshot of that moment."""

    def selection(self) -> Hashable | None:
        """The key of the selected row (ServiceKey, DestKey, ("vip", addr), ("rs", addr), or
        ("missing", ServiceKey or DestKey) for a configured one the kernel lacks), or None."""
        return None


class RowKind:
    """How the rows of one kind of block are made: a block is (count, kind, payload) and stands for
    `count` rows in a row; the kind tells each row's key, whether it can take the focus, and its
    markup, from the payload and the row's offset in the block, only when asked."""

    def key(self, payload, offset: int) -> Hashable:
        raise NotImplementedError

    def selectable(self, payload, offset: int) -> bool:
        return True

    def markup(self, payload, offset: int) -> Markup:
        raise NotImplementedError

    def find(self, payload, count: int, key: Hashable) -> int | None:
        """The offset of the row with `key` in the block, or None; kinds with many rows a block
        override this to skip blocks that cannot hold the key without making keys."""
        for offset in range(count):
            if self.key(payload, offset) == key:
                return offset
        return None


class ReadyRows(RowKind):
    """Rows whose markup was made beforehand: payload (key, markup, selectable), one row a block."""

    def key(self, payload, offset):
        return payload[0]

    def selectable(self, payload, offset):
        return payload[2]

    def markup(self, payload, offset):
        return payload[1]

    def find(self, payload, count, key):
        return 0 if payload[0] == key else None


READY = ReadyRows()


class IndexedBlocks(Sequence):
    """Blocks of one kind (see RowKind) given as columns, with their index worked out: `starts`,
    each block's first position and then the total, and `block_of(key)`, the only block that may
    hold a key (None when none does). A view whose blocks the polling thread arranged
    (model.Arrangement) hands them over this way: nothing is made a block between two frames,
    and a block's tuple only when a row of it is drawn or looked for."""

    __slots__ = ("counts", "kind", "payloads", "starts", "block_of")

    def __init__(self, counts: Sequence[int], kind: RowKind, payloads: Sequence, starts: Sequence[int],
                 block_of: Callable[[Hashable], int | None]):  # fmt: skip
        self.counts, self.kind, self.payloads = counts, kind, payloads
        self.starts, self.block_of = starts, block_of

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(itertools.islice(self, *index.indices(len(self))))
        return self.counts[index], self.kind, self.payloads[index]

    def __iter__(self):
        return zip(self.counts, itertools.repeat(self.kind), self.payloads)


class KeyedRowWalker(urwid.ListWalker):
    """Positions 0..n-1 over blocks of rows (see RowKind): finding a position is a bisection over the
    blocks' first positions, and a Row is made only when urwid asks for its position. Rows made for
    the previous blocks are kept by key and reused (their text set in place) when the same key is
    shown again, so a refresh changes only the widgets on screen."""

    CACHE_LIMIT = 512

    def __init__(self):
        super().__init__()
        self.blocks: list[tuple[int, RowKind, object]] = []
        self.starts: list[int] = [0]  # first position of each block, then the total
        self.total = 0
        self.block_of: Callable[[Hashable], int | None] | None = None  # see IndexedBlocks
        self.focus = 0
        self.created = 0  # Row widgets made so far: a test checks this stays near a screenful
        self._rows: dict[int, Row] = {}  # position -> Row, for the current blocks
        self._previous: dict[Hashable, Row] = {}  # key -> Row made for the blocks before

    def set_blocks(self, blocks: list[tuple[int, RowKind, object]]) -> None:
        """Show these blocks; the same list as before (a view reusing its blocks) keeps its positions."""
        if blocks is not self.blocks:
            starts = getattr(blocks, "starts", None)
            if starts is None:
                starts = list(itertools.accumulate(map(operator.itemgetter(0), blocks), initial=0))  # in C: no loop here
            self.blocks, self.starts, self.total = blocks, starts, starts[-1]
            self.block_of = getattr(blocks, "block_of", None)
        if self._rows:  # else (shown again after hide()) the rows kept then are still the newest
            self._previous = {row.key: row for row in self._rows.values()}
        self._rows = {}

    def __len__(self) -> int:
        return self.total

    def locate(self, position: int) -> tuple[int, RowKind, object, int]:
        """(count, kind, payload, offset) of the block holding `position`."""
        index = bisect.bisect_right(self.starts, position) - 1
        count, kind, payload = self.blocks[index]
        return count, kind, payload, position - self.starts[index]

    def key_at(self, position: int) -> Hashable:
        _, kind, payload, offset = self.locate(position)
        return kind.key(payload, offset)

    def selectable_at(self, position: int) -> bool:
        _, kind, payload, offset = self.locate(position)
        return kind.selectable(payload, offset)

    def find(self, key: Hashable, near: int | None = None) -> int | None:
        """The position of the row with `key` (tried first at `near`, where it was), or None."""
        if not self.total:
            return None
        if near is not None and 0 <= near < self.total and self.key_at(near) == key:
            return near
        if self.block_of is not None:
            index = self.block_of(key)
            if index is None:
                return None
            count, kind, payload = self.blocks[index]
            offset = kind.find(payload, count, key)
            return None if offset is None else self.starts[index] + offset
        for start, (count, kind, payload) in zip(self.starts, self.blocks):
            offset = kind.find(payload, count, key)
            if offset is not None:
                return start + offset
        return None

    def row(self, position: int) -> Row:
        row = self._rows.get(position)
        if row is not None:
            return row
        _, kind, payload, offset = self.locate(position)
        key, selectable = kind.key(payload, offset), kind.selectable(payload, offset)
        row = self._previous.pop(key, None)
        if row is None or row.text.selectable() != selectable:
            row = Row(key, selectable)
            self.created += 1
        row.set_markup(kind.markup(payload, offset))
        if len(self._rows) >= self.CACHE_LIMIT:
            self._rows.clear()
        self._rows[position] = row
        return row

    def changed(self) -> None:
        self._modified()

    def get_focus(self):
        if not self.total:
            return None, None
        return self.row(self.focus), self.focus

    def set_focus(self, position: int) -> None:
        self.focus = position
        self._modified()

    def get_next(self, position: int):
        if position + 1 >= self.total:
            return None, None
        return self.row(position + 1), position + 1

    def get_prev(self, position: int):
        if position <= 0 or not self.total:
            return None, None
        return self.row(position - 1), position - 1

    def positions(self, reverse: bool = False):
        return range(self.total - 1, -1, -1) if reverse else range(self.total)

    def __getitem__(self, position: int) -> Row:
        if not 0 <= position < self.total:
            raise IndexError(position)
        return self.row(position)

    def __iter__(self):
        """Every row, made as it comes (for tests and short lists; the screen asks only for what it shows)."""
        return (self.row(position) for position in range(self.total))


class ShownRows(Mapping):
    """The rows of a KeyedListView by key: `key in view.rows` says whether a row is listed, and
    view.rows[key] makes (or reuses) its widget."""

    def __init__(self, walker: KeyedRowWalker):
        self.walker = walker

    def __getitem__(self, key: Hashable) -> Row:
        position = self.walker.find(key)
        if position is None:
            raise KeyError(key)
        return self.walker.row(position)

    def __contains__(self, key: object) -> bool:
        return self.walker.find(key) is not None

    def __iter__(self):
        return (self.walker.key_at(position) for position in range(len(self.walker)))

    def __len__(self) -> int:
        return len(self.walker)


class KeyedListView(View):
    """A list of Rows known by keys, made lazily: each snapshot becomes a flat list of blocks of row
    descriptions (cheap tuples, in one pass), and widgets are made only for the rows on screen.
    Rows are reused and updated in place, and the selection follows the same key across refreshes
    (not the same row number)."""

    def __init__(self):
        super().__init__()
        self.walker = KeyedRowWalker()
        self.listbox = urwid.ListBox(self.walker)
        self.column_header = urwid.Text("", wrap="clip")
        self._column_header = urwid.AttrMap(self.column_header, "colhead")
        self.note = urwid.Text("", wrap="clip")  # above the column titles while the drift filter is on
        self.table_note = urwid.Text("", wrap="clip")  # while counts by state are estimated
        self._notes: tuple = ()
        self.widget = urwid.Frame(self.listbox, header=self._column_header)
        self.rows = ShownRows(self.walker)
        self._kept_focus: tuple[Hashable | None, int | None] | None = None  # while hidden (hide)

    def build(self, snapshot: Snapshot, ctx: ViewContext) -> Iterable[tuple[Hashable, Markup, bool]]:
        """(key, markup, selectable) of each row, top to bottom: for short lists; long ones override
        blocks() instead."""
        raise NotImplementedError

    def blocks(self, snapshot: Snapshot, ctx: ViewContext) -> list[tuple[int, RowKind, object]]:
        """(count, kind, payload) of each block of rows, top to bottom (see RowKind)."""
        return [(1, READY, (key, markup, selectable)) for key, markup, selectable in self.build(snapshot, ctx)]

    def header(self, ctx: ViewContext) -> Markup:
        return [""]

    def update(self, snapshot: Snapshot | None, ctx: ViewContext) -> None:
        self.column_header.set_text(self.header(ctx))
        notes = []
        if self.filters_drift and ctx.drift_only and ctx.drift is not None:
            self.note.set_text(drift_only_note(ctx))
            notes.append(self.note)
        if self.shows_states and snapshot is not None and snapshot.table.read is not None and not snapshot.table.current:
            # Say once, above the rows, why their counts by state carry a "~".
            self.table_note.set_text([("dim", f" ~ {table_line(snapshot)}")])
            notes.append(self.table_note)
        if tuple(notes) != self._notes:
            self._notes = tuple(notes)
            self.widget.header = urwid.Pile([*notes, self._column_header]) if notes else self._column_header
        if snapshot is None:
            blocks = [(1, READY, (("empty",), [("dim", " waiting for the first poll…")], False))]
        else:
            blocks = self.blocks(snapshot, ctx)
        focus_key, focus_index = self._focus()
        self._kept_focus = None
        self.walker.set_blocks(blocks)
        self._restore_focus(focus_key, focus_index)
        self.walker.changed()

    def hide(self) -> None:
        if self._kept_focus is None:
            self._kept_focus = self._focus()
        self.walker.set_blocks([])  # blocks made without an arrangement hold the snapshot's services
        self._let_go()

    def _let_go(self) -> None:
        """What hide() leaves to each view: its own references to the snapshot (row kinds kept for reuse)."""

    def _focus(self) -> tuple[Hashable | None, int | None]:
        if self._kept_focus is not None:
            return self._kept_focus
        if not len(self.walker):
            return None, None
        index = self.walker.focus
        return self.walker.key_at(index), index

    def _restore_focus(self, key: Hashable | None, index: int | None) -> None:
        walker = self.walker
        if not len(walker):
            walker.focus = 0
            return
        position = walker.find(key, index) if key is not None else None
        if position is not None:
            walker.focus = position
            return
        # The selected row went away: select the nearest selectable row at or above where it was.
        start = min(index or 0, len(walker) - 1)
        for position in itertools.chain(range(start, -1, -1), range(start + 1, len(walker))):
            if walker.selectable_at(position):
                walker.focus = position
                return
        walker.focus = start  # nothing to select (view 5): keep the place, from the top at first

    def selection(self) -> Hashable | None:
        if not len(self.walker) or not self.walker.selectable_at(self.walker.focus):
            return None
        return self.walker.key_at(self.walker.focus)

    def select(self, key: Hashable) -> bool:
        """Move the selection to the row with `key`; False when there is none."""
        position = self.walker.find(key)
        if position is None:
            return False
        self.walker.set_focus(position)
        return True


def line(width: int) -> Line:
    return Line(width)
