"""View 1, Virtual servers: each VIP (is it held here, on which interface) and its services."""

from __future__ import annotations

from ipvsman.model import SCHEDULER_NAMES, Service, Snapshot
from ipvsman.ui.views import (
    KeyedListView,
    ViewContext,
    connection_total,
    group_by_vip,
    held_markup,
    rates_text,
    service_label,
    state_markup,
    vip_title,
)
from ipvsman.ui.widgets import Line, fmt_count, join_lines, sparkline

INDENT = 4


class VirtualServersView(KeyedListView):
    name = "virtual"
    title = "Virtual servers"
    short_title = "Virtual"
    context = "servers"

    def header(self):
        width = self.width
        return Line(width).add(" VIRTUAL SERVER / SERVICE", width - 14).add("CONNECTIONS", 13, align=">").markup

    def build(self, snapshot: Snapshot, ctx: ViewContext):
        groups = group_by_vip(snapshot.services)
        if not groups:
            yield ("empty",), [("dim", " no virtual services")], False
            return
        for index, (address, services) in enumerate(groups):
            if index:
                yield ("gap", address), [""], False
            yield ("vip", address), self._vip_line(address, services, snapshot, ctx), True
            for service in services:
                yield service.key, self._service_lines(service, snapshot, ctx), True

    def _vip_line(self, address: str, services: list[Service], snapshot: Snapshot, ctx: ViewContext):
        total = sum(
            connection_total(snapshot.service_states.get(s.key) if ctx.read_connections else None, s.dests)
            for s in services
        )
        held, held_attr = held_markup(address, ctx)
        line = Line(self.width).add(" ").add(vip_title(address, ctx), 34, "vip").gap(1)
        line.add(held, 24, held_attr)
        line.add(f"{fmt_count(total)} conns", line.rest(), "number", align=">")
        return line.markup

    def _service_lines(self, service: Service, snapshot: Snapshot, ctx: ViewContext):
        key = service.key
        counts = snapshot.service_states.get(key) if ctx.read_connections else None
        scheduler = SCHEDULER_NAMES.get(service.scheduler, service.scheduler)
        persistence = f"persistent {service.persistent}s" if service.persistent is not None else "not persistent"
        first = Line(self.width).gap(INDENT - 2).add(service_label(key), 10, "service").gap(1)
        first.add(f"{service.scheduler} ", 6, "dim").add(scheduler, 28).gap(1)
        first.add(persistence, 16, "dim" if service.persistent is None else None)
        first.add(f"{fmt_count(connection_total(counts, service.dests))} conns", first.rest(), align=">")
        second = Line(self.width).gap(INDENT + 9)
        if counts is None and not ctx.read_connections:
            second.add("connection table not read (--no-connections)", second.rest(), "dim")
        else:
            second.markup += state_markup(counts)
        third = Line(self.width).gap(INDENT + 9).add(rates_text(service.rates)).gap(2)
        history = snapshot.service_history.get(key, ())
        third.add(sparkline(history, min(third.rest(), 30)), None, "spark")
        return join_lines([first, second, third])
