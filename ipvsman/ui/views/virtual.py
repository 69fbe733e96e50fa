"""View 1, Virtual servers: each VIP (is it held here, on which interface, for which VRRP instance)
and its services, with a DRIFT line under each service the configuration disagrees with."""

from __future__ import annotations

from ipvsman.model import SCHEDULER_NAMES, Service, ServiceKey, Snapshot, connection_total, join_host_port
from ipvsman.topology import ConfiguredService
from ipvsman.ui.views import (
    READY,
    IndexedBlocks,
    KeyedListView,
    RowKind,
    ViewContext,
    VERDICT_ATTRS,
    VipGroups,
    drift_text,
    held_markup,
    labels_key,
    port_label,
    rates_text,
    server_label,
    service_drifts,
    state_markup,
    states_markup,
    vip_title,
)
from ipvsman.ui.widgets import Line, fmt_count, join_lines, short_origin, sparkline
from ipvsman.verdicts import DOWN, FALLING, RISING, STATES

INDENT = 2
LABEL_MIN, LABEL_MAX = 10, 32
SCHED, LONG_SCHED, PERSISTENCE, CONNS = 6, 28, 16, 14


class VirtualServersView(KeyedListView):
    name = "virtual"
    title = "Virtual servers"
    short_title = "Virtual"
    context = "servers"
    filters_drift = True
    shows_states = True

    def __init__(self):
        super().__init__()
        self.label_width = LABEL_MIN
        self._labels: dict = {}  # service key -> label
        self._labels_for: tuple | None = None  # what _labels were worked out for
        self._groups = VipGroups()
        self._arranged: tuple | None = None  # (model.Arrangement, its blocks) while the layout holds

    def header(self, ctx: ViewContext):
        width = self.width
        return Line(width).add(" VIRTUAL SERVER / SERVICE", width - 14).add("CONNECTIONS", 13, align=">").markup

    def blocks(self, snapshot: Snapshot, ctx: ViewContext):
        arrangement = snapshot.arrangement if ctx.drift is None else None
        if arrangement is not None and arrangement.vip_payloads:
            # Worked out by the polling thread for this layout: the same blocks every snapshot of
            # it, a VIP's services resolved in the snapshot shown when its rows are drawn.
            self._fit_labels(snapshot, ctx, snapshot.services)
            if self._arranged is None or self._arranged[0] is not arrangement:
                kind = ArrangedVipRows(self, arrangement.vip_index)
                blocks = IndexedBlocks(arrangement.vip_rows, kind, arrangement.vip_payloads, arrangement.vip_starts,
                                       kind.block_of)  # fmt: skip
                self._arranged = (arrangement, blocks)
            blocks = self._arranged[1]
            blocks.kind.show(snapshot, ctx)
            return blocks
        self._arranged = None
        groups = self._groups.shown(snapshot, ctx)
        if not groups:
            text = " no drift: the kernel and the configuration agree" if ctx.drift_only else " no virtual services"
            return [(1, READY, (("empty",), [("dim", text)], False))]
        self._fit_labels(snapshot, ctx, [s for _, group in groups for s in group])
        kind = VipRows(self, snapshot, ctx)
        # One block a VIP: a blank line before all but the first, its title, a row a service.
        return [(len(group) + 1 + (index > 0), kind, (index > 0, address, group)) for index, (address, group) in
                enumerate(groups)]  # fmt: skip

    def _fit_labels(self, snapshot: Snapshot, ctx: ViewContext, services) -> None:
        """The labels of `services` (what is shown) and the column that fits them, once a labels_key."""
        labels_for = labels_key(snapshot, ctx)
        if labels_for is None or labels_for != self._labels_for:
            self._labels = {s.key: self._label(s.key, ctx) for s in services}
            self._labels_for = labels_for
            self.label_width = max(LABEL_MIN, min(LABEL_MAX, 1 + max(map(len, self._labels.values()))))

    def _let_go(self) -> None:
        if self._arranged is not None:
            self._arranged[1].kind.show(None, None)

    @staticmethod
    def _label(key, ctx: ViewContext) -> str:
        configured = ctx.names.service_name(key)
        label = port_label(key, ctx.names)
        return f"{configured} {label}" if configured else label

    def _vip_line(self, address: str, services: list[Service], snapshot: Snapshot, ctx: ViewContext):
        total = sum(connection_total(s.dests) for s in services if isinstance(s, Service))
        held, held_attr = held_markup(address, ctx)
        line = Line(self.width).add(" ").add(vip_title(address, ctx), 34, "vip").gap(1)
        line.add(held, 36 if self.width >= 100 else 30, held_attr)
        line.add(f"{fmt_count(total)} conns", line.rest(), "number", align=">")
        return line.markup

    def _first_line(self, key, ctx: ViewContext) -> Line:
        return Line(self.width).gap(INDENT).add(self._labels[key], self.label_width, "service")

    def _service_lines(self, service: Service, snapshot: Snapshot, ctx: ViewContext):
        key = service.key
        counts = snapshot.service_states.get(key) if ctx.read_connections else None
        persistence = f"persistent {service.persistent}s" if service.persistent is not None else "not persistent"
        first = self._first_line(key, ctx)
        first.add(f"{service.scheduler} ", SCHED, "dim")
        long_room = self.width - first.used - PERSISTENCE - CONNS
        if long_room >= 10:
            first.col(SCHEDULER_NAMES.get(service.scheduler, service.scheduler), min(LONG_SCHED, long_room))
        first.add(persistence, PERSISTENCE, "dim" if service.persistent is None else None)
        first.add(f"{fmt_count(connection_total(service.dests))} conns", first.rest(), align=">")
        indent = INDENT + self.label_width
        second = Line(self.width).gap(indent)
        second.extend(states_markup(counts, connection_total(service.dests), snapshot))
        persistent = sum(dest.persist_conns for dest in service.dests)
        if persistent:
            second.add("  persistent ", None, "dim").add(fmt_count(persistent))
        third = Line(self.width).gap(indent).add(rates_text(service.rates)).gap(2)
        history = snapshot.service_history.get(key, ())
        third.add(sparkline(history, min(third.rest(), 30)), None, "spark")
        lines = [first, second]
        for group, states in snapshot.ambiguous_states.items():
            if key in group:
                # /proc names no firewall mark: these could be this service's or another's.
                others = " and ".join(f"FWM {other.fwmark}" for other in group)
                ambiguous = Line(self.width).gap(indent).add(f"ambiguous between {others}: ", None, "dim")
                lines.append(ambiguous.extend(state_markup(states)))
        lines.append(third)
        if ctx.verdicts is not None:
            lines.append(self._verdicts_line(service, ctx, indent))
        texts = [drift_text(d, ctx.names) for d in service_drifts(key, service, ctx.drift)]
        texts += [f"{server_label(dest_key, ctx.names)} {text}" for dest_key, text in ctx.verdict_drift.items()
                  if dest_key.service == key]  # fmt: skip
        if texts:
            drift = Line(self.width).gap(indent).add(" DRIFT ", None, "drift").gap(1)
            drift.add("; ".join(texts), drift.rest(), "drift.text")
            lines.append(drift)
        return join_lines(lines)

    def _verdicts_line(self, service: Service, ctx: ViewContext, indent: int) -> Line:
        """The daemon's verdicts on a service's servers: ipvsmand 3 UP, 1 DOWN  10.10.10.204:389 DOWN "refused"."""
        line = Line(self.width).gap(indent).add("ipvsmand ", None, "dim")
        verdicts = [ctx.verdicts.by_dest.get(service.dest_key(dest)) for dest in service.dests]
        named = [verdict for verdict in verdicts if verdict is not None]
        if not named:
            return line.add("names none of its real servers", None, "dim")
        counts: dict[str, int] = {}
        for verdict in named:
            counts[verdict.state] = counts.get(verdict.state, 0) + 1
        parts = []
        for state in STATES:
            if counts.get(state):
                word = "rising" if state == RISING else "falling" if state == FALLING else state.upper()
                parts.append((f"{counts[state]} {word}", VERDICT_ATTRS.get(state, "dim")))
        for index, (text, attr) in enumerate(parts):
            line.add(", " if index else "").add(text, None, attr)
        trouble = next((v for v in named if v.state in (DOWN, FALLING) and v.reason), None)
        if trouble is not None:
            server = join_host_port(trouble.dest.address, trouble.dest.port)
            line.add(f"  {server} {trouble.word} \"{trouble.reason}\"", line.rest(), "dim")
        return line

    def _missing_line(self, service: ConfiguredService, ctx: ViewContext):
        line = self._first_line(service.key, ctx).add(" MISSING ", None, "drift").gap(1)
        servers = f"{len(service.dests)} real server" + ("s" if len(service.dests) != 1 else "")
        where = f" ({short_origin(service.origin)})" if service.origin else ""
        text = f"configured{where}: {service.scheduler}, {servers}; not in the kernel"
        return line.add(text, line.rest(), "drift.text").markup


class VipRows(RowKind):
    """The rows of one VIP in view 1; payload (gap, address, services), gap: a blank line first."""

    def __init__(self, view: VirtualServersView, snapshot: Snapshot, ctx: ViewContext):
        self.view, self.snapshot, self.ctx = view, snapshot, ctx

    def key(self, payload, offset):
        gap, address, services = payload
        if offset < gap:
            return ("gap", address)
        if offset == gap:
            return ("vip", address)
        service = services[offset - gap - 1]
        return ("missing", service.key) if isinstance(service, ConfiguredService) else service.key

    def selectable(self, payload, offset):
        return offset >= payload[0]

    def markup(self, payload, offset):
        gap, address, services = payload
        if offset < gap:
            return [""]
        if offset == gap:
            kernel = [s for s in services if isinstance(s, Service)]
            return self.view._vip_line(address, kernel, self.snapshot, self.ctx)
        service = services[offset - gap - 1]
        if isinstance(service, ConfiguredService):
            return self.view._missing_line(service, self.ctx)
        return self.view._service_lines(service, self.snapshot, self.ctx)

    def find(self, payload, count, key):
        gap, address, services = payload
        if isinstance(key, ServiceKey):
            wanted, missing = key, False
        elif isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], ServiceKey) and key[0] == "missing":
            wanted, missing = key[1], True
        elif isinstance(key, tuple) and len(key) == 2 and key[0] in ("gap", "vip"):
            if key[1] != address or (key[0] == "gap" and not gap):
                return None
            return 0 if key[0] == "gap" else gap
        else:
            return None
        if wanted.address != address:
            return None
        for index, service in enumerate(services):
            if service.key == wanted and isinstance(service, ConfiguredService) == missing:
                return gap + 1 + index
        return None


class Resolved:
    """A VIP's services as positions in a snapshot's services, looked up when asked for."""

    __slots__ = ("services", "positions")

    def __init__(self, services, positions):
        self.services, self.positions = services, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index):
        return self.services[self.positions[index]]

    def __iter__(self):
        return map(self.services.__getitem__, self.positions)


class ArrangedVipRows(VipRows):
    """VipRows over model.Arrangement's blocks: payload (gap, address, positions of its services in
    the snapshot shown); without a configuration compared (so no configured services)."""

    def __init__(self, view: VirtualServersView, index: dict):
        super().__init__(view, None, None)
        self.index = index

    def show(self, snapshot: Snapshot | None, ctx: ViewContext | None) -> None:
        self.snapshot, self.ctx = snapshot, ctx

    def _resolved(self, payload):
        gap, address, positions = payload
        return gap, address, Resolved(self.snapshot.services, positions)

    def key(self, payload, offset):
        return super().key(self._resolved(payload), offset)

    def markup(self, payload, offset):
        return super().markup(self._resolved(payload), offset)

    def find(self, payload, count, key):
        return super().find(self._resolved(payload), count, key)

    def block_of(self, key) -> int | None:
        """The block that may hold a row key (IndexedBlocks.block_of)."""
        if isinstance(key, ServiceKey):
            return self.index.get(key)
        if isinstance(key, tuple) and len(key) == 2 and key[0] in ("gap", "vip"):
            return self.index.get(("vip", key[1]))
        return None
