"""View 2, Bindings: virtual to real servers, one line per real server under its service
(the layout of the LVS plugin's `show loadbalancer lvs binding`)."""

from __future__ import annotations

from ipvsman.model import FORWARD_LABELS, Snapshot, join_host_port
from ipvsman.ui.views import (
    KeyedListView,
    ViewContext,
    dest_state,
    group_by_vip,
    held_markup,
    service_label,
    vip_title,
    weight_markup,
)
from ipvsman.ui.widgets import Line, fmt_count

# Column widths; the real server column takes what is left.
SERVICE, SCHED, ARROW, FORWARD, STATE, ACTIVE, INACTIVE, WEIGHT = 10, 6, 3, 7, 8, 7, 7, 8
FIXED = 2 + SERVICE + SCHED + ARROW + FORWARD + STATE + ACTIVE + INACTIVE + WEIGHT


class BindingsView(KeyedListView):
    name = "bindings"
    title = "Bindings"
    short_title = "Bindings"
    context = "servers"

    def header(self):
        line = Line(self.width).add("  ").col("SERVICE", SERVICE).col("SCHED", SCHED).add("", ARROW)
        line.col("REAL SERVER", max(1, self.width - FIXED)).col("METHOD", FORWARD).col("STATE", STATE)
        line.col("ACTIVE", ACTIVE, align=">").col("INACT", INACTIVE, align=">")
        return line.add("WEIGHT", WEIGHT, align=">").markup

    def build(self, snapshot: Snapshot, ctx: ViewContext):
        groups = group_by_vip(snapshot.services)
        if not groups:
            yield ("empty",), [("dim", " no virtual services")], False
            return
        server_width = max(1, self.width - FIXED)
        for index, (address, services) in enumerate(groups):
            if index:
                yield ("gap", address), [""], False
            held, held_attr = held_markup(address, ctx)
            title = Line(self.width).add(" ").add(f"{vip_title(address, ctx)}:", 40, "vip").gap(2)
            yield ("vip", address), title.add(held, title.rest(), held_attr).markup, True
            for service in services:
                if not service.dests:
                    line = Line(self.width).add("  ").col(service_label(service.key), SERVICE, "service")
                    line.col(service.scheduler, SCHED).add("-> ", ARROW).add("no real servers", None, "dim")
                    yield service.key, line.markup, True
                    continue
                for position, dest in enumerate(service.dests):
                    key = service.dest_key(dest)
                    line = Line(self.width).add("  ")
                    if position == 0:
                        line.col(service_label(service.key), SERVICE, "service").col(service.scheduler, SCHED)
                    else:
                        line.gap(SERVICE + SCHED)
                    name = ctx.names.dest(key)
                    endpoint = join_host_port(dest.address, dest.port)
                    line.add("-> ", ARROW).col(f"{name} {endpoint}" if name else endpoint, server_width)
                    line.col(FORWARD_LABELS.get(dest.forward, dest.forward), FORWARD)
                    word, attr = dest_state(key, dest, ctx)
                    line.col(word, STATE, attr)
                    line.col(fmt_count(dest.active_conns), ACTIVE, align=">")
                    line.col(fmt_count(dest.inactive_conns), INACTIVE, align=">")
                    weight, weight_attr = weight_markup(key, dest, ctx)
                    line.add(weight, WEIGHT, weight_attr, align=">")
                    yield key, line.markup, True
