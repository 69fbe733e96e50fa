"""View 3, Real servers: each real server address with its total, and under it every service it serves
(and every configured one it is missing from), with a DRIFT line where the configuration disagrees."""

from __future__ import annotations

from ipvsman.model import FORWARD_LABELS, Dest, DestKey, Service, Snapshot
from ipvsman.topology import ConfiguredDest
from ipvsman.ui.views import (
    KeyedListView,
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

    def header(self, ctx: ViewContext):
        width = self.width
        return Line(width).add(" REAL SERVER / VIRTUAL SERVICE", width - 14).add("CONNECTIONS", 13, align=">").markup

    def build(self, snapshot: Snapshot, ctx: ViewContext):
        report = ctx.drift
        drift_only = ctx.drift_only and report is not None
        servers: dict[str, list[tuple[Service, Dest | ConfiguredDest]]] = {}
        for service in sorted(snapshot.services, key=lambda s: service_sort_key(s.key)):
            entries = list(service.dests)
            if report is not None:
                entries += report.missing_dests.get(service.key, ())
            for dest in entries:
                key = DestKey(service.key, dest.address, dest.port)
                if drift_only and not report.kinds(key):
                    continue
                servers.setdefault(dest.address, []).append((service, dest))
        if not servers:
            text = " no real server drifts" if drift_only else " no real servers"
            yield ("empty",), [("dim", text)], False
            return
        for index, address in enumerate(sorted(servers, key=address_sort_key)):
            entries = servers[address]
            if index:
                yield ("gap", address), [""], False
            yield ("rs", address), self._server_line(address, entries, snapshot, ctx), True
            for service, dest in entries:
                key = DestKey(service.key, dest.address, dest.port)
                if isinstance(dest, ConfiguredDest):
                    yield ("missing", key), self._missing_line(key, dest, ctx), True
                else:
                    yield key, self._service_lines(service, dest, snapshot, ctx), True

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
