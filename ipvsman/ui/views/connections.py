"""View 4, Connections: the connection table through a lazy list walker (a widget per visible row only),
with a typed filter and sorting by column; addresses and ports are named when names are on (the
filter and the sort still work on the numbers)."""

from __future__ import annotations

import functools
import ipaddress
import itertools
import operator
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import urwid

from ipvsman.model import STATE_LABELS, Connection, ConnectionTable, Snapshot, address_sort_key, split_host_port
from ipvsman.ui.views import View, ViewContext
from ipvsman.ui.tabletext import table_line
from ipvsman.ui.widgets import Line, Row, fmt_count, fmt_seconds

# Sort columns in the order `s` steps through them; None keeps the kernel's order.
SORT_COLUMNS: tuple[str | None, ...] = (None, "proto", "expires", "state", "client", "virtual", "real", "origin")
SORT_KEYS: dict[str, Callable[[Connection], object]] = {
    "proto": lambda c: c.protocol,
    "expires": lambda c: c.expires,
    "state": lambda c: c.state,
    "client": lambda c: (address_sort_key(c.client), c.client_port),
    "virtual": lambda c: (address_sort_key(c.virtual), c.virtual_port),
    "real": lambda c: (address_sort_key(c.dest), c.dest_port),
    "origin": lambda c: c.origin or "",
}


def _or_empty(origin: str | None) -> str:
    return origin or ""


# The same orders for a ConnectionTable, from its columns: a key per entry without a Connection
# per entry, and key functions called once per distinct word or server address.
TABLE_SORT_KEYS: dict[str, Callable[[ConnectionTable], list]] = {
    "proto": lambda t: list(t.column("protocol")),
    "expires": lambda t: list(t.column("expires")),
    "state": lambda t: list(t.column("state")),
    "client": lambda t: t.client_order(address_sort_key),
    "virtual": lambda t: list(zip(t.column("virtual", address_sort_key), t.column("virtual_port"))),
    "real": lambda t: list(zip(t.column("dest", address_sort_key), t.column("dest_port"))),
    "origin": lambda t: list(t.column("origin", _or_empty)),
}

# Column widths (with the space after each); the three address columns share the rest.
PROTO, EXPIRES, STATE, ORIGIN = 4, 7, 12, 5

FIELD_ALIASES = {
    "c": "client", "client": "client", "from": "client",
    "v": "virtual", "vip": "virtual", "virtual": "virtual",
    "r": "real", "rs": "real", "real": "real", "dest": "real",
    "state": "state", "s": "state",
    "proto": "proto", "p": "proto",
    "origin": "origin", "o": "origin",
}  # fmt: skip
STATE_BY_LABEL = {label.lower(): state for state, label in STATE_LABELS.items()}
ENDPOINT_FIELDS = {"client": (1, 2), "virtual": (3, 4), "real": (5, 6)}  # Connection field indexes
TABLE_FIELDS = {"client": ("client", "client_port"), "virtual": ("virtual", "virtual_port"),
                "real": ("dest", "dest_port"), "state": "state", "proto": "protocol", "origin": "origin"}  # fmt: skip


@functools.lru_cache(maxsize=65536)
def normal_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def parse_endpoint(value: str) -> tuple[str | None, int | None]:
    """ADDR, ADDR:PORT, [ADDR6]:PORT or :PORT; raises ValueError with a readable reason."""
    if value.startswith(":") and value[1:].isdigit():
        return None, int(value[1:])
    try:
        return split_host_port(value)
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_address(value.strip("[]"))), None
    except ValueError:
        raise ValueError(f"not an address, address:port or :port: {value!r}") from None


@dataclass(frozen=True)
class ConnectionFilter:
    """A parsed filter. Words: `field=value` (client/c, virtual/v, real/r, state, proto, origin) or
    any text found in a connection. Values of one field are alternatives; everything else must hold."""

    text: str
    exact: tuple[tuple[str, tuple], ...]  # (field, alternatives)
    words: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> ConnectionFilter:
        exact: dict[str, list] = {}
        words = []
        for token in text.split():
            field, sep, value = token.partition("=")
            if not sep:
                words.append(token.lower())
                continue
            name = FIELD_ALIASES.get(field.lower())
            if name is None:
                raise ValueError(f"unknown filter field {field!r} (use c=, v=, r=, state=, proto=, origin=)")
            if not value:
                raise ValueError(f"{field}= needs a value")
            if name in ENDPOINT_FIELDS:
                address, port = parse_endpoint(value)
                exact.setdefault(name, []).append((address and normal_address(address), port))
            elif name == "state":
                exact.setdefault(name, []).append(STATE_BY_LABEL.get(value.lower(), value.upper()))
            else:
                exact.setdefault(name, []).append(value.upper())
        return cls(text.strip(), tuple((k, tuple(v)) for k, v in exact.items()), tuple(words))

    def __bool__(self) -> bool:
        return bool(self.exact or self.words)

    def matches(self, conn: Connection) -> bool:
        for field, alternatives in self.exact:
            if field in ENDPOINT_FIELDS:
                address_index, port_index = ENDPOINT_FIELDS[field]
                address, port = normal_address(conn[address_index]), conn[port_index]
                if not any((a is None or a == address) and (p is None or p == port) for a, p in alternatives):
                    return False
            elif field == "state":
                if conn.state.upper() not in alternatives:
                    return False
            elif field == "proto":
                if conn.protocol.upper() not in alternatives:
                    return False
            elif (conn.origin or "").upper() not in alternatives:
                return False
        if self.words:
            haystack = searchable(conn)
            return all(word in haystack for word in self.words)
        return True

    def rows(self, table: ConnectionTable) -> Iterable[int]:
        """Indexes of the entries of `table` that match: as matches() on each, computed column-wise.

        Each `field=` is a mask over the table's columns (true where it holds), computed in C with
        the field's values normalised once per distinct value; only words need each entry whole.
        """
        masks = [self._mask(table, field, alternatives) for field, alternatives in self.exact]
        words = self.words
        if not masks:  # words alone: every entry made whole, in turn (faster than by index)
            return [row for row, text in enumerate(map(searchable, table)) if all(word in text for word in words)]
        rows = itertools.compress(range(len(table)), functools.reduce(lambda a, b: map(operator.and_, a, b), masks))
        if words:
            return [row for row in rows if all(word in searchable(table[row]) for word in words)]
        return rows

    @staticmethod
    def _mask(table: ConnectionTable, field: str, alternatives: tuple) -> Iterable[bool]:
        if field not in ENDPOINT_FIELDS:  # a word of the kind: upper() once per distinct one
            allowed = frozenset(alternatives)
            return table.column(TABLE_FIELDS[field], lambda value: (value or "").upper() in allowed)
        address_field, port_field = TABLE_FIELDS[field]
        if field == "client":
            # Clients are mostly distinct, and IPv4 ones are already as normal_address spells them
            # (inet_ntoa): only the others are looked up, once each.
            others = {c: normal for c in table.other_clients if (normal := normal_address(c)) != c}
            addresses = table.column("client", (lambda c: others.get(c, c)) if others else None)
        else:
            addresses = table.column(address_field, normal_address)
        full = {(a, p) for a, p in alternatives if a is not None and p is not None}
        by_address = {a for a, p in alternatives if p is None}
        by_port = {p for a, p in alternatives if a is None}
        if not (by_address or by_port):
            return map(full.__contains__, zip(addresses, table.column(port_field)))
        if not (full or by_port):
            return map(by_address.__contains__, addresses)
        addresses, ports = list(addresses), list(table.column(port_field))
        masks = [map(full.__contains__, zip(addresses, ports)), map(by_address.__contains__, addresses),
                 map(by_port.__contains__, ports)]  # fmt: skip
        return functools.reduce(lambda a, b: map(operator.or_, a, b), masks)


def searchable(conn: Connection) -> str:
    return (
        f"{conn.protocol} {conn.client}:{conn.client_port} {conn.virtual}:{conn.virtual_port} "
        f"{conn.dest}:{conn.dest_port} {conn.state} {STATE_LABELS.get(conn.state, '')} {conn.origin or ''}"
    ).lower()


def identity(conn: Connection) -> tuple:
    return tuple(conn[:7])


class ConnectionWalker(urwid.ListWalker):
    """Positions 0..n-1 over `order` (indexes into `connections`); a Row is made only when urwid
    asks for a position, and kept only while it may be asked again."""

    CACHE_LIMIT = 256

    def __init__(self, formatter: Callable[[Connection], list]):
        super().__init__()
        self.formatter = formatter
        self.connections: Sequence[Connection] = ()
        self.order: Sequence[int] = ()
        self.focus = 0
        self.created = 0  # widgets made so far: a test checks this stays near a screenful
        self._cache: dict[int, Row] = {}
        self._spare: dict[int, Row] = {}  # the rows before the last refresh, by position: reused, text set anew

    def set_rows(self, connections: Sequence[Connection], order: Sequence[int], focus: int) -> None:
        self.connections = connections
        self.order = order
        self.focus = max(0, min(focus, len(order) - 1))
        self.refresh()

    def refresh(self) -> None:
        """Make the rows' text again (countdowns, names change) and redraw; their widgets are reused."""
        if self._cache:
            self._spare, self._cache = self._cache, {}
        self._modified()

    def __len__(self) -> int:
        return len(self.order)

    def connection_at(self, position: int) -> Connection:
        return self.connections[self.order[position]]

    def _row(self, position: int) -> Row:
        row = self._cache.get(position)
        if row is None:
            if len(self._cache) >= self.CACHE_LIMIT:
                self._cache.clear()
            row = self._spare.pop(position, None)
            if row is None:
                row = Row(("conn", position))
                self.created += 1
            row.set_markup(self.formatter(self.connection_at(position)))
            self._cache[position] = row
        return row

    def get_focus(self):
        if not self.order:
            return None, None
        return self._row(self.focus), self.focus

    def set_focus(self, position: int) -> None:
        self.focus = position
        self._modified()

    def get_next(self, position: int):
        if position + 1 >= len(self.order):
            return None, None
        return self._row(position + 1), position + 1

    def get_prev(self, position: int):
        if position <= 0 or not self.order:
            return None, None
        return self._row(position - 1), position - 1

    def positions(self, reverse: bool = False):
        return range(len(self.order) - 1, -1, -1) if reverse else range(len(self.order))


class ConnectionsView(View):
    name = "connections"
    title = "Connections"
    short_title = "Connections"
    context = "connections"

    def __init__(self):
        super().__init__()
        self.walker = ConnectionWalker(self._format)
        self.listbox = urwid.ListBox(self.walker)
        self.summary = urwid.Text("", wrap="clip")
        self.column_header = urwid.Text("", wrap="clip")
        self.table_info = urwid.Text("", wrap="clip")  # the table's age, extent and cost
        head = urwid.Pile([self.summary, self.table_info, urwid.AttrMap(self.column_header, "colhead")])
        self.widget = urwid.Frame(self.listbox, header=head)
        self.filter = ConnectionFilter.parse("")
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.snapshot: Snapshot | None = None
        self.taken_at = 0.0  # when the table on screen was read
        self.ctx = ViewContext()
        self._computed_for: tuple | None = None
        self._show_origin = False
        self._table: Sequence[Connection] | None = None  # the table the rows are made of (state.connections)

    # -- what the controller changes ---------------------------------------------------------
    def set_filter(self, text: str) -> None:
        """Raises ValueError (one readable line) for a filter that does not parse."""
        self.filter = ConnectionFilter.parse(text)
        if self.snapshot is None and self._table is not None:
            # Hidden: the rows are made when it is shown, of the table of that moment.
            self._table = None
            self.walker.set_rows((), (), 0)
            return
        self._recompute(keep_focus=False)

    def step_sort(self, step: int) -> None:
        index = SORT_COLUMNS.index(self.sort_column)
        self.sort_column = SORT_COLUMNS[(index + step) % len(SORT_COLUMNS)]
        self._recompute(keep_focus=True)

    def reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._recompute(keep_focus=True)

    def hide(self) -> None:
        # The table and its order stay (shown again with the same table, as on a budget: no sort
        # again); the rest of the snapshot goes.
        self.snapshot = None

    def update(self, snapshot: Snapshot | None, ctx: ViewContext) -> None:
        self.ctx = ctx
        if snapshot is not self.snapshot:
            # Tables are read less often than polls (on a budget) and a paused poll repeats its
            # table: the same table keeps its rows and its time, so countdowns go on.
            same_table = snapshot is not None and self._table is not None and snapshot.state.connections is self._table
            self.snapshot = snapshot
            if not same_table:
                self._table = snapshot.state.connections if snapshot is not None else None
                read = snapshot.table.read if snapshot else None
                self.taken_at = read.finished_at if read else snapshot.taken_at if snapshot else 0.0
                self._recompute(keep_focus=True)
                return
        self._draw_heads()
        self.walker.refresh()  # countdowns move on

    def selection(self) -> Hashable | None:
        if not self.walker.order:
            return None
        return identity(self.walker.connection_at(self.walker.focus))

    # -- building -----------------------------------------------------------------------------
    def _recompute(self, keep_focus: bool) -> None:
        previous = self.selection() if keep_focus else None
        previous_position = self.walker.focus
        connections = self._table or ()
        self._show_origin = any(conn.origin for conn in connections[:64])
        order: Sequence[int]
        table = isinstance(connections, ConnectionTable)  # then column-wise: no Connection per entry
        if self.filter:
            if table:
                order = list(self.filter.rows(connections))
            else:
                order = [index for index, conn in enumerate(connections) if self.filter.matches(conn)]
        else:
            # The whole table in the kernel's order: a range, not a list of 200,000 ints (8 MB).
            order = range(len(connections))
        if self.sort_column:
            if table:
                keys = TABLE_SORT_KEYS[self.sort_column](connections)
                order = sorted(order, key=keys.__getitem__, reverse=self.sort_reverse)
            else:
                key = SORT_KEYS[self.sort_column]
                order = sorted(order, key=lambda index: key(connections[index]), reverse=self.sort_reverse)
        elif self.sort_reverse:
            order = order[::-1]
        focus = 0
        if previous is not None:
            focus = self._find(connections, order, previous, previous_position)
        self.walker.set_rows(connections, order, focus)
        self._draw_heads()

    @staticmethod
    def _find(connections, order, wanted: tuple, near: int) -> int:
        if near < len(order) and identity(connections[order[near]]) == wanted:
            return near
        if isinstance(connections, ConnectionTable):
            # The wanted client's entries, found in the table's records, then placed in `order`.
            rows = [row for row in connections.rows_of_clients((wanted[1],)) if identity(connections[row]) == wanted]
            positions = []
            for row in rows:
                try:
                    positions.append(order.index(row))
                except ValueError:  # filtered out
                    pass
            return min(positions) if positions else min(near, max(0, len(order) - 1))
        for position, index in enumerate(order):
            if identity(connections[index]) == wanted:
                return position
        return min(near, max(0, len(order) - 1))

    def _widths(self) -> tuple[int, int]:
        fixed = 1 + PROTO + EXPIRES + STATE + (ORIGIN if self._show_origin else 0)
        flexible = max(3, (self.width - fixed) // 3)
        return fixed, flexible

    def _draw_heads(self) -> None:
        total = len(self.snapshot.connections) if self.snapshot else 0
        shown = len(self.walker.order)
        summary = Line(self.width).add(" ")
        if self.snapshot is None:
            summary.add("waiting for the first poll…", None, "dim")
        elif self.snapshot.state.connections is None:
            summary.add("connection table not read (--no-connections)", None, "dim")
        else:
            summary.add(f"{fmt_count(shown)} of {fmt_count(total)} connections", None, "number")
            if self.filter:
                summary.add("   filter ", None, "dim").add(self.filter.text, None, "key")
        sort = self.sort_column or "kernel order"
        summary.add("   sorted by ", None, "dim").add(sort + (" (reversed)" if self.sort_reverse else ""))
        self.summary.set_text(summary.markup)
        info = table_line(self.snapshot) if self.snapshot is not None else ""
        self.table_info.set_text([("dim", f" {info}"[: self.width])])
        arrow = "▼" if self.sort_reverse else "▲"

        def title(text: str, column: str, width: int = 99) -> str:
            """The column's title, with the sort arrow on the sorted one (cut to fit, not ellipsised)."""
            return f"{text[: width - 1]}{arrow}" if column == self.sort_column else text

        _, flexible = self._widths()
        line = Line(self.width).add(" ")
        columns = [("PRO", "proto", PROTO, "<"), ("EXPIRE", "expires", EXPIRES, ">"), ("STATE", "state", STATE, "<"),
                   ("CLIENT", "client", flexible, "<"), ("VIRTUAL", "virtual", flexible, "<"),
                   ("REAL SERVER", "real", flexible, "<")]  # fmt: skip
        for text, column, width, align in columns:
            line.add(title(text, column, width - 1), width - 1, align=align).gap(1)
        if self._show_origin:
            rest = line.rest()
            line.add(title("ORIGIN" if rest >= 6 else "ORIG", "origin", rest), rest)
        self.column_header.set_text(line.markup)

    def _format(self, conn: Connection) -> list:
        elapsed = self.ctx.now - self.taken_at
        _, flexible = self._widths()
        line = Line(self.width).add(" ").col(conn.protocol, PROTO)
        line.col(fmt_seconds(max(0.0, conn.expires - max(0.0, elapsed))), EXPIRES, align=">")
        if conn.is_template:
            line.col("template", STATE, "dim")
        else:
            line.col(STATE_LABELS.get(conn.state, conn.state), STATE)
        names, protocol = self.ctx.names, conn.protocol.lower()
        line.col(names.endpoint(conn.client, conn.client_port, protocol), flexible)
        line.col(names.endpoint(conn.virtual, conn.virtual_port, protocol), flexible)
        line.col(names.endpoint(conn.dest, conn.dest_port, protocol), flexible)
        if self._show_origin:
            line.add(conn.origin or "-", ORIGIN, "key" if conn.origin == "SYNC" else "dim")
        return line.markup
