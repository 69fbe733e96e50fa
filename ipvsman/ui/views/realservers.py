"""View 3, Real servers: each real server address with its total, and under it every service it serves
(and every configured one it is missing from), with a DRIFT line where the configuration disagrees."""

from __future__ import annotations

from ipvsman.model import (
    FORWARD_LABELS,
    Dest,
    DestKey,
    ServerBlocks,
    Service,
    Snapshot,
    connection_total,
    servers_by_address,
    services_in_order,
    sorted_addresses,
)
from ipvsman.topology import ConfiguredDest
from ipvsman.ui.views import (
    READY,
    IndexedBlocks,
    KeyedListView,
    RowKind,
    ViewContext,
    dest_state,
    drift_text,
    host_label,
    rates_text,
    service_title,
    states_markup,
    verdict_markup,
    weight_markup,
)
from ipvsman.ui.widgets import Line, fmt_count, join_lines, short_origin


class RealServersView(KeyedListView):
    name = "realservers"
    title = "Real servers"
    short_title = "Real servers"
    context = "servers"
    filters_drift = True
    shows_states = True

    def __init__(self):
        super().__init__()
        self._addresses: set[str] = set()  # the real server addresses _order was sorted from
        self._order: list[str] = []
        self._kind: ServerRows | None = None
        self._reused: tuple | None = None  # (layout, blocks) while the layout and its grouping hold

    def header(self, ctx: ViewContext):
        width = self.width
        return Line(width).add(" REAL SERVER / VIRTUAL SERVICE", width - 14).add("CONNECTIONS", 13, align=">").markup

    def blocks(self, snapshot: Snapshot, ctx: ViewContext):
        report = ctx.drift
        drift_only = ctx.drift_only and report is not None
        layout = snapshot.layout if report is None else None  # drift adds rows of its own each poll
        if self._reused is not None and layout is not None and self._reused[0] == layout:
            blocks = self._reused[1]
            self._kind.show(snapshot, ctx)  # same rows, each resolved in the new snapshot when drawn
            return blocks
        self._reused = None
        arrangement = snapshot.arrangement if report is None else None
        if arrangement is not None and arrangement.server_blocks.entries:  # worked out by the polling thread
            by_position, entries_of = arrangement.by_position, None  # entries: each service's dests
            server_blocks = arrangement.server_blocks
        else:
            by_position, entries_of, servers = self._group(snapshot, report, drift_only)
            if not servers:
                text = " no real server drifts" if drift_only else " no real servers"
                return [(1, READY, (("empty",), [("dim", text)], False))]
            server_blocks = ServerBlocks(servers, self._address_order(servers))
            if report is None:
                entries_of = None  # each service's dests, looked up in the snapshot shown (kept while the layout holds)
        # One block a real server address; its payload is the address's list of entries alone.
        kind = self._kind = ServerRows(self, server_blocks.entries[0], server_blocks.index)
        kind.show(snapshot, ctx, by_position, entries_of)
        blocks = IndexedBlocks(server_blocks.rows, kind, server_blocks.entries, server_blocks.starts, kind.block_of)
        if layout is not None:
            self._reused = (layout, blocks)
        return blocks

    @staticmethod
    def _group(snapshot: Snapshot, report, drift_only: bool) -> tuple[list[int], list[tuple], dict]:
        """What model.Arrangement holds, for a snapshot without one or with a configuration compared."""
        # Services in display order, each with its entries: its real servers, then the configured
        # ones the kernel lacks. Rows refer to entries by (service position, entry position).
        by_position = services_in_order(snapshot.services)
        entries_of = entries_in_order(snapshot, by_position, report)

        def drifts(position: int, entry) -> bool:
            service_key = snapshot.services[by_position[position]].key
            return bool(report.kinds(DestKey(service_key, entry.address, entry.port)))

        servers = servers_by_address(entries_of, drifts if drift_only else None)
        return by_position, entries_of, servers

    def _let_go(self) -> None:
        if self._kind is not None:
            self._kind.show(None, None)
        if self._reused is None:
            self._kind = None

    def _address_order(self, servers: dict) -> list[str]:
        """The addresses in address order; the same as last time when the set of addresses is (a set
        comparison, much cheaper than sorting 100,000 addresses again on every poll)."""
        if servers.keys() != self._addresses:
            self._addresses = set(servers)
            self._order = sorted_addresses(servers)
        return self._order

    def _counts(self, service: Service, dest: Dest, snapshot: Snapshot, ctx: ViewContext):
        return snapshot.dest_states.get(service.dest_key(dest)) if ctx.read_connections else None

    def _server_line(self, address, entries, snapshot, ctx):
        present = [(s, d) for s, d in entries if isinstance(d, Dest)]
        total = connection_total(d for _, d in present)
        line = Line(self.width).add(" ").add(host_label(address, ctx.names), 40, "vip")
        services = f"{len(present)} service" + ("s" if len(present) != 1 else "")
        if len(present) != len(entries):
            services += f", missing from {len(entries) - len(present)}"
        line.add(services, 26, "dim")
        return line.add(f"{fmt_count(total)} conns", line.rest(), "number", align=">").markup

    def _lead(self, key: DestKey, ctx: ViewContext, attr: str = "service") -> Line:
        first = Line(self.width).add("   ").col(service_title(key.service, ctx.names), max(16, self.width - 54), attr)
        return first.add(f"-> :{key.port}", 9, "dim")

    def _service_lines(self, service, dest, snapshot, ctx):
        key = service.dest_key(dest)
        counts = self._counts(service, dest, snapshot, ctx)
        first = self._lead(key, ctx)
        weight, weight_attr = weight_markup(key, dest, ctx)
        first.add("weight ", None, "dim").add(weight, 9, weight_attr)
        first.add(FORWARD_LABELS.get(dest.forward, dest.forward), 7)
        word, attr = dest_state(key, dest, ctx)
        first.add(word, 8, attr)
        total = connection_total((dest,))
        first.add(f"{fmt_count(total)} conns", first.rest(), align=">")
        second = Line(self.width).add("      ")
        # The kernel's own counts first: exact on every poll; then the table's counts by state.
        second.add(f"active {fmt_count(dest.active_conns)}  inactive {fmt_count(dest.inactive_conns)}", None, "dim")
        if dest.persist_conns:
            second.add(f"  persistent {fmt_count(dest.persist_conns)}", None, "dim")
        second.gap(3)
        second.extend(states_markup(counts, total, snapshot))
        third = Line(self.width).add("      ").add(rates_text(dest.rates), None, "dim")
        lines = [first, second, third]
        verdict = ctx.verdicts.by_dest.get(key) if ctx.verdicts is not None else None
        if verdict is not None:
            word, verdict_attr = verdict_markup(key, ctx)
            told = Line(self.width).add("      ").add("ipvsmand ", None, "dim").add(word, None, verdict_attr)
            told.add(verdict.describe()[len(word):]).add(f"  ({verdict.check_text()})", told.rest(), "dim")
            lines.append(told)
        drain = ctx.drains.get(key)
        if drain is not None:
            lines.append(Line(self.width).add("      ").add(drain.describe(), None, "drained"))
        drifts = ctx.drift.for_dest(key) if ctx.drift is not None else ()
        disagreement = ctx.verdict_drift.get(key)
        if drifts or disagreement:
            drift = Line(self.width).add("      ").add(" DRIFT ", None, "drift").gap(1)
            texts = [drift_text(d, ctx.names, subject=False) for d in drifts]
            origin = next((d.origin for d in drifts if d.origin), "")
            if origin:
                texts[-1] += f" ({short_origin(origin)})"
            drift.add("; ".join(texts + ([disagreement] if disagreement else [])), drift.rest(), "drift.text")
            lines.append(drift)
        return join_lines(lines)

    def _missing_line(self, key: DestKey, dest: ConfiguredDest, ctx: ViewContext):
        line = self._lead(key, ctx, "dim").add("weight ", None, "dim").add(str(dest.weight), 9, "dim")
        line.add(FORWARD_LABELS.get(dest.forward, dest.forward), 7, "dim")
        return line.add(" MISSING ", None, "drift").markup


def entries_in_order(snapshot: Snapshot, by_position: list[int], report) -> list[tuple]:
    """For each service in display order: its real servers, then the configured ones it lacks."""
    services = snapshot.services
    if report is None:
        return [services[index].dests for index in by_position]
    missing = report.missing_dests
    return [services[index].dests + tuple(missing.get(services[index].key, ())) for index in by_position]


class ServerRows(RowKind):
    """The rows of one real server address in view 3; payload [(service position, entry position)...]
    of that address, resolved in the snapshot shown (an entry is a ConfiguredDest where the kernel
    lacks the server); a blank line first but for the first address's block. Without a
    configuration compared (`entries_of` None), an entry is the index of a real server in its
    service's dests, looked up in the snapshot shown when its row is drawn.

    While the layout holds the view keeps its blocks and `show`s each new snapshot here instead."""

    def __init__(self, view: RealServersView, first: list, index: dict[str, int]):
        self.view, self.first = view, first
        self.index = index  # address -> block (ServerBlocks.index)
        self.snapshot: Snapshot | None = None
        self.ctx: ViewContext | None = None
        self.by_position: list[int] = []
        self.entries_of: list[tuple] | None = None

    def show(self, snapshot: Snapshot | None, ctx: ViewContext | None, by_position=None, entries_of=None) -> None:
        """Rows drawn from `snapshot` from now on (None: the view is hidden, none kept)."""
        self.snapshot, self.ctx = snapshot, ctx
        if by_position is not None:
            self.by_position = by_position
            self.entries_of = entries_of

    def _entry(self, pair: tuple[int, int]) -> tuple[Service, Dest | ConfiguredDest]:
        position, index = pair
        service = self.snapshot.services[self.by_position[position]]
        return service, (service.dests if self.entries_of is None else self.entries_of[position])[index]

    def _unpack(self, pairs: list) -> tuple[int, str, list]:
        return (pairs is not self.first), self._entry(pairs[0])[1].address, pairs

    def key(self, payload, offset):
        gap, address, pairs = self._unpack(payload)
        if offset < gap:
            return ("gap", address)
        if offset == gap:
            return ("rs", address)
        service, dest = self._entry(pairs[offset - gap - 1])
        key = DestKey(service.key, dest.address, dest.port)
        return ("missing", key) if isinstance(dest, ConfiguredDest) else key

    def selectable(self, payload, offset):
        return offset >= (payload is not self.first)

    def markup(self, payload, offset):
        gap, address, pairs = self._unpack(payload)
        view, ctx = self.view, self.ctx
        if offset < gap:
            return [""]
        if offset == gap:
            return view._server_line(address, list(map(self._entry, pairs)), self.snapshot, ctx)
        service, dest = self._entry(pairs[offset - gap - 1])
        key = DestKey(service.key, dest.address, dest.port)
        if isinstance(dest, ConfiguredDest):
            return view._missing_line(key, dest, ctx)
        return view._service_lines(service, dest, self.snapshot, ctx)

    def block_of(self, key) -> int | None:
        """The block of the address a row key names (IndexedBlocks.block_of)."""
        if isinstance(key, DestKey):
            return self.index.get(key.address)
        if isinstance(key, tuple) and len(key) == 2 and key[0] in ("gap", "rs", "missing"):
            return self.index.get(key[1].address if key[0] == "missing" else key[1])
        return None

    def find(self, payload, count, key):
        gap, address, pairs = self._unpack(payload)
        if isinstance(key, tuple) and len(key) == 2 and key[0] in ("gap", "rs"):
            if key[1] != address or (key[0] == "gap" and not gap):
                return None
            return 0 if key[0] == "gap" else gap
        missing = isinstance(key, tuple) and len(key) == 2 and key[0] == "missing"
        if missing:
            key = key[1]
        if not isinstance(key, DestKey) or key.address != address:
            return None
        for index, pair in enumerate(pairs):
            service, dest = self._entry(pair)
            if dest.port == key.port and service.key == key.service and isinstance(dest, ConfiguredDest) == missing:
                return gap + 1 + index
        return None
