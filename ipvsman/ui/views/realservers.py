"""View 3, Real servers: each real server address with its total, and under it every service it serves
(and every configured one it is missing from), with a DRIFT line where the configuration disagrees."""

from __future__ import annotations

from ipvsman.model import FORWARD_LABELS, Dest, DestKey, Service, Snapshot
from ipvsman.topology import ConfiguredDest
from ipvsman.ui.views import (
    READY,
    KeyedListView,
    RowKind,
    ViewContext,
    address_sort_key,
    connection_total,
    dest_state,
    drift_text,
    host_label,
    rates_text,
    service_sort_key,
    service_title,
    state_markup,
    weight_markup,
)
from ipvsman.ui.widgets import Line, fmt_count, join_lines, short_origin


class RealServersView(KeyedListView):
    name = "realservers"
    title = "Real servers"
    short_title = "Real servers"
    context = "servers"
    filters_drift = True

    def __init__(self):
        super().__init__()
        self._addresses: set[str] = set()  # the real server addresses _order was sorted from
        self._order: list[str] = []

    def header(self, ctx: ViewContext):
        width = self.width
        return Line(width).add(" REAL SERVER / VIRTUAL SERVICE", width - 14).add("CONNECTIONS", 13, align=">").markup

    def blocks(self, snapshot: Snapshot, ctx: ViewContext):
        report = ctx.drift
        drift_only = ctx.drift_only and report is not None
        # Each real server address with (service, dest) of every service it serves, in service order:
        # the one pass over all real servers, with no key made unless the drift filter needs it.
        servers: dict[str, list[tuple[Service, Dest | ConfiguredDest]]] = {}
        for service in sorted(snapshot.services, key=lambda s: service_sort_key(s.key)):
            entries = service.dests
            if report is not None:
                entries = entries + tuple(report.missing_dests.get(service.key, ()))
            for dest in entries:
                if drift_only and not report.kinds(DestKey(service.key, dest.address, dest.port)):
                    continue
                found = servers.get(dest.address)
                if found is None:
                    servers[dest.address] = [(service, dest)]
                else:
                    found.append((service, dest))
        if not servers:
            text = " no real server drifts" if drift_only else " no real servers"
            return [(1, READY, (("empty",), [("dim", text)], False))]
        order = self._address_order(servers)
        kind = ServerRows(self, snapshot, ctx, servers[order[0]])
        # One block a real server address: a blank line before all but the first, its line, a row a
        # service. The payload is the address's list alone (one tuple fewer a block to allocate).
        blocks = [(len(entries) + 2, kind, entries) for entries in map(servers.__getitem__, order)]
        blocks[0] = (blocks[0][0] - 1, kind, blocks[0][2])
        return blocks

    def _address_order(self, servers: dict) -> list[str]:
        """The addresses in address order; the same as last time when the set of addresses is (a set
        comparison, much cheaper than sorting 100,000 addresses again on every poll)."""
        if servers.keys() != self._addresses:
            self._addresses = set(servers)
            self._order = sorted(servers, key=address_sort_key)
        return self._order

    def _counts(self, service: Service, dest: Dest, snapshot: Snapshot, ctx: ViewContext):
        return snapshot.dest_states.get(service.dest_key(dest)) if ctx.read_connections else None

    def _server_line(self, address, entries, snapshot, ctx):
        present = [(s, d) for s, d in entries if isinstance(d, Dest)]
        total = sum(connection_total(self._counts(s, d, snapshot, ctx), (d,)) for s, d in present)
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
        first.add(f"{fmt_count(connection_total(counts, (dest,)))} conns", first.rest(), align=">")
        second = Line(self.width).add("      ")
        if counts is None and not ctx.read_connections:
            second.add(f"active {fmt_count(dest.active_conns)}  inactive {fmt_count(dest.inactive_conns)}")
        else:
            second.markup += state_markup(counts)
        third = Line(self.width).add("      ").add(rates_text(dest.rates), None, "dim")
        lines = [first, second, third]
        drifts = ctx.drift.for_dest(key) if ctx.drift is not None else ()
        if drifts:
            drift = Line(self.width).add("      ").add(" DRIFT ", None, "drift").gap(1)
            text = "; ".join(drift_text(d, ctx.names, subject=False) for d in drifts)
            origin = next((d.origin for d in drifts if d.origin), "")
            drift.add(text + (f" ({short_origin(origin)})" if origin else ""), drift.rest(), "drift.text")
            lines.append(drift)
        return join_lines(lines)

    def _missing_line(self, key: DestKey, dest: ConfiguredDest, ctx: ViewContext):
        line = self._lead(key, ctx, "dim").add("weight ", None, "dim").add(str(dest.weight), 9, "dim")
        line.add(FORWARD_LABELS.get(dest.forward, dest.forward), 7, "dim")
        return line.add(" MISSING ", None, "drift").markup


class ServerRows(RowKind):
    """The rows of one real server address in view 3; payload [(service, dest)...] of that address
    (a dest is a ConfiguredDest where the kernel lacks the server); a blank line first but for the
    first address's block."""

    def __init__(self, view: RealServersView, snapshot: Snapshot, ctx: ViewContext, first: list):
        self.view, self.snapshot, self.ctx, self.first = view, snapshot, ctx, first

    def _unpack(self, entries: list) -> tuple[int, str, list]:
        return (entries is not self.first), entries[0][1].address, entries

    def key(self, payload, offset):
        gap, address, entries = self._unpack(payload)
        if offset < gap:
            return ("gap", address)
        if offset == gap:
            return ("rs", address)
        service, dest = entries[offset - gap - 1]
        key = DestKey(service.key, dest.address, dest.port)
        return ("missing", key) if isinstance(dest, ConfiguredDest) else key

    def selectable(self, payload, offset):
        return offset >= (payload is not self.first)

    def markup(self, payload, offset):
        gap, address, entries = self._unpack(payload)
        view, ctx = self.view, self.ctx
        if offset < gap:
            return [""]
        if offset == gap:
            return view._server_line(address, entries, self.snapshot, ctx)
        service, dest = entries[offset - gap - 1]
        key = DestKey(service.key, dest.address, dest.port)
        if isinstance(dest, ConfiguredDest):
            return view._missing_line(key, dest, ctx)
        return view._service_lines(service, dest, self.snapshot, ctx)

    def find(self, payload, count, key):
        gap, address, entries = self._unpack(payload)
        if isinstance(key, tuple) and len(key) == 2 and key[0] in ("gap", "rs"):
            if key[1] != address or (key[0] == "gap" and not gap):
                return None
            return 0 if key[0] == "gap" else gap
        missing = isinstance(key, tuple) and len(key) == 2 and key[0] == "missing"
        if missing:
            key = key[1]
        if not isinstance(key, DestKey) or key.address != address:
            return None
        for index, (service, dest) in enumerate(entries):
            if dest.port == key.port and service.key == key.service and isinstance(dest, ConfiguredDest) == missing:
                return gap + 1 + index
        return None
