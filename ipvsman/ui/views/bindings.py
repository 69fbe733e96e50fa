"""View 2, Bindings: virtual to real servers, one line per real server under its service
(the layout of the LVS plugin's `show loadbalancer lvs binding`), with a DRIFT column when a
configuration is compared with the kernel."""

from __future__ import annotations

from ipvsman.model import FORWARD_LABELS, DestKey, Service, Snapshot
from ipvsman.topology import ConfiguredDest, ConfiguredService
from ipvsman.ui.views import (
    KeyedListView,
    ViewContext,
    dest_state,
    drift_text,
    drift_words,
    group_by_vip,
    held_markup,
    missing_by_vip,
    server_label,
    service_label,
    shown_services,
    vip_title,
    weight_markup,
)
from ipvsman.ui.widgets import Line, fmt_count, short_origin

# Column widths; the service column fits its labels, the real server column takes what is left.
SERVICE_MIN, SERVICE_MAX = 8, 17
SCHED, ARROW, FORWARD, STATE, ACTIVE, INACTIVE, WEIGHT, DRIFT = 6, 3, 7, 8, 7, 7, 8, 10


class BindingsView(KeyedListView):
    name = "bindings"
    title = "Bindings"
    short_title = "Bindings"
    context = "servers"
    filters_drift = True

    def __init__(self):
        super().__init__()
        self.service_width = 10

    def _fixed(self, ctx: ViewContext) -> int:
        drift = DRIFT if ctx.drift is not None else 0
        return 2 + self.service_width + SCHED + ARROW + FORWARD + STATE + ACTIVE + INACTIVE + WEIGHT + drift

    def header(self, ctx: ViewContext):
        line = Line(self.width).add("  ").col("SERVICE", self.service_width).col("SCHED", SCHED).add("", ARROW)
        line.col("REAL SERVER", max(1, self.width - self._fixed(ctx))).col("METHOD", FORWARD).col("STATE", STATE)
        line.col("ACTIVE", ACTIVE, align=">").col("INACT", INACTIVE, align=">")
        line.add("WEIGHT", WEIGHT, align=">")
        if ctx.drift is not None:
            line.gap(1).add("DRIFT", DRIFT - 1)
        return line.markup

    def build(self, snapshot: Snapshot, ctx: ViewContext):
        missing = missing_by_vip(ctx.drift)
        groups = group_by_vip(shown_services(snapshot, ctx) + [s for group in missing.values() for s in group])
        if not groups:
            text = " no drift: the kernel and the configuration agree" if ctx.drift_only else " no virtual services"
            yield ("empty",), [("dim", text)], False
            return
        labels = [len(service_label(s.key, ctx.names)) + 1 for _, group in groups for s in group]
        self.service_width = max(SERVICE_MIN, min(SERVICE_MAX, max(labels)))
        self.column_header.set_text(self.header(ctx))
        server_width = max(1, self.width - self._fixed(ctx))
        for index, (address, services) in enumerate(groups):
            if index:
                yield ("gap", address), [""], False
            held, held_attr = held_markup(address, ctx)
            title = Line(self.width).add(" ").add(f"{vip_title(address, ctx)}:", 40, "vip").gap(2)
            yield ("vip", address), title.add(held, title.rest(), held_attr).markup, True
            for service in services:
                if isinstance(service, ConfiguredService):
                    line = self._service_cells(service, ctx).add(" MISSING ", None, "drift").gap(1)
                    where = f" ({short_origin(service.origin)})" if service.origin else ""
                    line.add(f"configured{where}, not in the kernel", line.rest(), "drift.text")
                    yield ("missing", service.key), line.markup, True
                    continue
                yield from self._service_rows(service, ctx, server_width)

    def _service_cells(self, service: Service | ConfiguredService, ctx: ViewContext) -> Line:
        line = Line(self.width).add("  ").col(service_label(service.key, ctx.names), self.service_width, "service")
        return line.col(service.scheduler, SCHED).add("-> ", ARROW)

    def _service_rows(self, service: Service, ctx: ViewContext, server_width: int):
        report = ctx.drift
        own = report.for_service(service.key) if report is not None else ()
        missing = report.missing_dests.get(service.key, ()) if report is not None else ()
        if own or not (service.dests or missing):
            line = self._service_cells(service, ctx)
            if own:
                line.add(" DRIFT ", None, "drift").gap(1)
                line.add("; ".join(drift_text(d, ctx.names) for d in own), line.rest(), "drift.text")
            else:
                line.add("no real servers", None, "dim")
            yield service.key, line.markup, True
        first = not own
        for dest in service.dests:
            key = service.dest_key(dest)
            line = self._lead(service, ctx, first)
            first = False
            line.col(server_label(key, ctx.names, server_width - 1), server_width)
            line.col(FORWARD_LABELS.get(dest.forward, dest.forward), FORWARD)
            word, attr = dest_state(key, dest, ctx)
            line.col(word, STATE, attr)
            line.col(fmt_count(dest.active_conns), ACTIVE, align=">")
            line.col(fmt_count(dest.inactive_conns), INACTIVE, align=">")
            weight, weight_attr = weight_markup(key, dest, ctx)
            line.add(weight, WEIGHT, weight_attr, align=">")
            self._drift_cell(line, report.kinds(key) if report is not None else None)
            yield key, line.markup, True
        for configured in missing:
            yield self._missing_dest_row(service, configured, ctx, server_width, first)
            first = False

    def _lead(self, service: Service, ctx: ViewContext, first: bool) -> Line:
        """The service and scheduler cells on a service's first row, blank under it."""
        if first:
            return self._service_cells(service, ctx)
        return Line(self.width).add("  ").gap(self.service_width + SCHED).add("-> ", ARROW)

    def _missing_dest_row(self, service: Service, dest: ConfiguredDest, ctx, server_width: int, first: bool):
        key = DestKey(service.key, dest.address, dest.port)
        line = self._lead(service, ctx, first)
        line.col(server_label(key, ctx.names, server_width - 1), server_width, "dim")
        line.col(FORWARD_LABELS.get(dest.forward, dest.forward), FORWARD, "dim")
        line.col("absent", STATE, "dim").col("", ACTIVE).col("", INACTIVE)
        line.add(str(dest.weight), WEIGHT, "dim", align=">")
        self._drift_cell(line, {"missing"})
        return ("missing", key), line.markup, True

    @staticmethod
    def _drift_cell(line: Line, kinds) -> None:
        if kinds is None:
            return
        line.gap(1)
        if kinds:
            line.add(drift_words(kinds), DRIFT - 1, "drift")
