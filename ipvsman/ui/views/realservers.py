"""View 3, Real servers: each real server address with its total, and under it every service it serves."""

from __future__ import annotations

from ipvsman.model import FORWARD_LABELS, Dest, Service, Snapshot
from ipvsman.ui.views import (
    KeyedListView,
    ViewContext,
    address_sort_key,
    connection_total,
    dest_state,
    rates_text,
    service_sort_key,
    state_markup,
    weight_markup,
)
from ipvsman.ui.widgets import Line, fmt_count, join_lines


class RealServersView(KeyedListView):
    name = "realservers"
    title = "Real servers"
    short_title = "Real servers"
    context = "servers"

    def header(self):
        width = self.width
        return Line(width).add(" REAL SERVER / VIRTUAL SERVICE", width - 14).add("CONNECTIONS", 13, align=">").markup

    def build(self, snapshot: Snapshot, ctx: ViewContext):
        servers: dict[str, list[tuple[Service, Dest]]] = {}
        for service in sorted(snapshot.services, key=lambda s: service_sort_key(s.key)):
            for dest in service.dests:
                servers.setdefault(dest.address, []).append((service, dest))
        if not servers:
            yield ("empty",), [("dim", " no real servers")], False
            return
        for index, address in enumerate(sorted(servers, key=address_sort_key)):
            entries = servers[address]
            if index:
                yield ("gap", address), [""], False
            yield ("rs", address), self._server_line(address, entries, snapshot, ctx), True
            for service, dest in entries:
                yield service.dest_key(dest), self._service_lines(service, dest, snapshot, ctx), True

    def _counts(self, service: Service, dest: Dest, snapshot: Snapshot, ctx: ViewContext):
        return snapshot.dest_states.get(service.dest_key(dest)) if ctx.read_connections else None

    def _server_line(self, address, entries, snapshot, ctx):
        total = sum(connection_total(self._counts(s, d, snapshot, ctx), (d,)) for s, d in entries)
        name = ctx.names.address(address)
        line = Line(self.width).add(" ").add(f"{name} ({address})" if name else address, 40, "vip")
        services = f"{len(entries)} service" + ("s" if len(entries) != 1 else "")
        line.add(services, 14, "dim")
        return line.add(f"{fmt_count(total)} conns", line.rest(), "number", align=">").markup

    def _service_lines(self, service, dest, snapshot, ctx):
        key = service.dest_key(dest)
        counts = self._counts(service, dest, snapshot, ctx)
        name = ctx.names.service(service.key)
        label = f"{name} {service.key}" if name else str(service.key)
        first = Line(self.width).add("   ").col(label, max(16, self.width - 54), "service")
        first.add(f"-> :{dest.port}", 9, "dim")
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
        return join_lines([first, second, third])
