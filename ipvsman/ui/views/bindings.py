"""View 2, Bindings: virtual to real servers, one line per real server under its service
(the layout of the LVS plugin's `show loadbalancer lvs binding`), with a DRIFT column when a
configuration is compared with the kernel."""

from __future__ import annotations

from ipvsman.model import FORWARD_LABELS, DestKey, Service, ServiceKey, Snapshot
from ipvsman.topology import ConfiguredDest, ConfiguredService
from ipvsman.ui.views import (
    READY,
    IndexedBlocks,
    KeyedListView,
    RowKind,
    ViewContext,
    VipGroups,
    dest_state,
    drift_text,
    drift_words,
    held_markup,
    labels_key,
    server_label,
    service_label,
    verdict_markup,
    vip_title,
    weight_markup,
)
from ipvsman.ui.widgets import Line, Markup, fmt_count, short_origin

# Column widths; the service column fits its labels, the real server column takes what is left.
SERVICE_MIN, SERVICE_MAX = 8, 17
SCHED, ARROW, FORWARD, STATE, ACTIVE, INACTIVE, WEIGHT, DRIFT = 6, 3, 7, 8, 7, 7, 8, 10
VERDICT = 12  # ipvsmand's word, with --ipvsmand-state: "falling 1/3"


class BindingsView(KeyedListView):
    name = "bindings"
    title = "Bindings"
    short_title = "Bindings"
    context = "servers"
    filters_drift = True

    def __init__(self):
        super().__init__()
        self.service_width = 10
        self._groups = VipGroups()
        self._width_for: tuple | None = None  # what service_width was worked out for
        self._arranged: tuple | None = None  # (model.Arrangement, its blocks) while the layout holds

    def _fixed(self, ctx: ViewContext) -> int:
        drift = DRIFT if _drift_column(ctx) else 0
        verdict = VERDICT if ctx.verdicts is not None else 0
        return 2 + self.service_width + SCHED + ARROW + FORWARD + STATE + verdict + ACTIVE + INACTIVE + WEIGHT + drift

    def header(self, ctx: ViewContext):
        line = Line(self.width).add("  ").col("SERVICE", self.service_width).col("SCHED", SCHED).add("", ARROW)
        line.col("REAL SERVER", max(1, self.width - self._fixed(ctx))).col("METHOD", FORWARD).col("STATE", STATE)
        if ctx.verdicts is not None:
            line.col("IPVSMAND", VERDICT)
        line.col("ACTIVE", ACTIVE, align=">").col("INACT", INACTIVE, align=">")
        line.add("WEIGHT", WEIGHT, align=">")
        if _drift_column(ctx):
            line.gap(1).add("DRIFT", DRIFT - 1)
        return line.markup

    def blocks(self, snapshot: Snapshot, ctx: ViewContext):
        arrangement = snapshot.arrangement if ctx.drift is None else None
        if arrangement is not None and arrangement.binding_payloads:
            # Worked out by the polling thread for this layout: the same blocks every snapshot of
            # it, a service's rows resolved in the snapshot shown when drawn.
            self._fit_service_column(snapshot, ctx, snapshot.services)
            if self._arranged is None or self._arranged[0] is not arrangement:
                kind = ArrangedRows(self, arrangement.binding_index)
                blocks = IndexedBlocks(arrangement.binding_rows, kind, arrangement.binding_payloads,
                                       arrangement.binding_starts, kind.block_of)  # fmt: skip
                self._arranged = (arrangement, blocks)
            blocks = self._arranged[1]
            blocks.kind.show(snapshot, ctx, max(1, self.width - self._fixed(ctx)))
            return blocks
        self._arranged = None
        groups = self._groups.shown(snapshot, ctx)
        if not groups:
            text = " no drift: the kernel and the configuration agree" if ctx.drift_only else " no virtual services"
            return [(1, READY, (("empty",), [("dim", text)], False))]
        self._fit_service_column(snapshot, ctx, [s for _, group in groups for s in group])
        server_width = max(1, self.width - self._fixed(ctx))
        vip_rows, service_rows = VipTitleRows(self, ctx), ServiceRows(self, ctx, server_width)
        report = ctx.drift
        blocks = []
        for index, (address, services) in enumerate(groups):
            blocks.append((1 + (index > 0), vip_rows, (index > 0, address)))
            for service in services:
                if isinstance(service, ConfiguredService):
                    blocks.append((1, service_rows, (service, (), (), True)))
                    continue
                own = report.for_service(service.key) if report is not None else ()
                lacking = report.missing_dests.get(service.key, ()) if report is not None else ()
                head = bool(own) or not (service.dests or lacking)
                blocks.append((head + len(service.dests) + len(lacking), service_rows, (service, own, lacking, head)))
        return blocks

    def _let_go(self) -> None:
        if self._arranged is not None:
            self._arranged[1].kind.forget()

    def _fit_service_column(self, snapshot: Snapshot, ctx: ViewContext, services) -> None:
        """Make the service column fit the labels of `services` (what is shown), once a labels_key."""
        width_for = labels_key(snapshot, ctx)
        if width_for is None or width_for != self._width_for:
            labels = [len(service_label(s.key, ctx.names)) + 1 for s in services]
            self.service_width = max(SERVICE_MIN, min(SERVICE_MAX, max(labels)))
            self._width_for = width_for
        self.column_header.set_text(self.header(ctx))

    def _configured_row(self, service: ConfiguredService, ctx: ViewContext) -> Markup:
        line = self._service_cells(service, ctx).add(" MISSING ", None, "drift").gap(1)
        where = f" ({short_origin(service.origin)})" if service.origin else ""
        line.add(f"configured{where}, not in the kernel", line.rest(), "drift.text")
        return line.markup

    def _head_row(self, service: Service, own, ctx: ViewContext) -> Markup:
        line = self._service_cells(service, ctx)
        if own:
            line.add(" DRIFT ", None, "drift").gap(1)
            line.add("; ".join(drift_text(d, ctx.names) for d in own), line.rest(), "drift.text")
        else:
            line.add("no real servers", None, "dim")
        return line.markup

    def _dest_row(self, service: Service, dest, ctx: ViewContext, server_width: int, first: bool) -> Markup:
        report = ctx.drift
        key = service.dest_key(dest)
        line = self._lead(service, ctx, first)
        line.col(server_label(key, ctx.names, server_width - 1), server_width)
        line.col(FORWARD_LABELS.get(dest.forward, dest.forward), FORWARD)
        word, attr = dest_state(key, dest, ctx)
        line.col(word, STATE, attr)
        if ctx.verdicts is not None:
            verdict, verdict_attr = verdict_markup(key, ctx)
            line.col(verdict, VERDICT, verdict_attr)
        line.col(fmt_count(dest.active_conns), ACTIVE, align=">")
        line.col(fmt_count(dest.inactive_conns), INACTIVE, align=">")
        weight, weight_attr = weight_markup(key, dest, ctx)
        line.add(weight, WEIGHT, weight_attr, align=">")
        self._drift_cell(line, report.kinds(key) if report is not None else set(), ctx, key)
        return line.markup

    def _service_cells(self, service: Service | ConfiguredService, ctx: ViewContext) -> Line:
        line = Line(self.width).add("  ").col(service_label(service.key, ctx.names), self.service_width, "service")
        return line.col(service.scheduler, SCHED).add("-> ", ARROW)

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
        line.col("absent", STATE, "dim")
        if ctx.verdicts is not None:
            word, attr = verdict_markup(key, ctx)
            line.col(word, VERDICT, attr)
        line.col("", ACTIVE).col("", INACTIVE)
        line.add(str(dest.weight), WEIGHT, "dim", align=">")
        self._drift_cell(line, {"missing"}, ctx, key)
        return line.markup

    @staticmethod
    def _drift_cell(line: Line, kinds, ctx: ViewContext, key: DestKey) -> None:
        """The DRIFT column: the configuration's kinds, and "ipvsmand" where the daemon disagrees."""
        if not _drift_column(ctx):
            return
        line.gap(1)
        words = [drift_words(kinds)] if kinds else []
        if key in ctx.verdict_drift:
            words.append("ipvsmand")
        if words:
            line.add(",".join(words), DRIFT - 1, "drift")


def _drift_column(ctx: ViewContext) -> bool:
    """Whether view 2 has a DRIFT column: a configuration or ipvsmand to disagree with the kernel."""
    return ctx.drift is not None or ctx.verdicts is not None


class VipTitleRows(RowKind):
    """A VIP's title in view 2, after a blank line but for the first VIP; payload (gap, address)."""

    def __init__(self, view: BindingsView, ctx: ViewContext):
        self.view, self.ctx = view, ctx

    def key(self, payload, offset):
        gap, address = payload
        return ("gap", address) if offset < gap else ("vip", address)

    def selectable(self, payload, offset):
        return offset >= payload[0]

    def markup(self, payload, offset):
        gap, address = payload
        if offset < gap:
            return [""]
        held, held_attr = held_markup(address, self.ctx)
        title = Line(self.view.width).add(" ").add(f"{vip_title(address, self.ctx)}:", 40, "vip").gap(2)
        return title.add(held, title.rest(), held_attr).markup


class ServiceRows(RowKind):
    """A service in view 2 and its real servers, a row each. Payload (service, own drifts, configured
    servers the kernel lacks, head): head is a row for the service itself (its drift, or that it has
    no real servers); a configured service the kernel lacks is (configured, (), (), True)."""

    def __init__(self, view: BindingsView, ctx: ViewContext, server_width: int):
        self.view, self.ctx, self.server_width = view, ctx, server_width

    def key(self, payload, offset):
        service, own, lacking, head = payload
        if isinstance(service, ConfiguredService):
            return ("missing", service.key)
        if offset < head:
            return service.key
        offset -= head
        if offset < len(service.dests):
            return service.dest_key(service.dests[offset])
        configured = lacking[offset - len(service.dests)]
        return ("missing", DestKey(service.key, configured.address, configured.port))

    def markup(self, payload, offset):
        service, own, lacking, head = payload
        view, ctx = self.view, self.ctx
        if isinstance(service, ConfiguredService):
            return view._configured_row(service, ctx)
        if offset < head:
            return view._head_row(service, own, ctx)
        offset -= head
        first = offset == 0 and not own
        if offset < len(service.dests):
            return view._dest_row(service, service.dests[offset], ctx, self.server_width, first)
        configured = lacking[offset - len(service.dests)]
        return view._missing_dest_row(service, configured, ctx, self.server_width, first)

    def find(self, payload, count, key):
        service, own, lacking, head = payload
        if isinstance(key, tuple) and len(key) == 2 and key[0] == "missing":
            missing, key = True, key[1]
        else:
            missing = False
        if isinstance(key, ServiceKey):
            if key != service.key:
                return None
            if isinstance(service, ConfiguredService):
                return 0 if missing else None
            return 0 if head and not missing else None
        if not isinstance(key, DestKey) or isinstance(service, ConfiguredService) or key.service != service.key:
            return None
        if missing:
            for index, configured in enumerate(lacking):
                if configured.address == key.address and configured.port == key.port:
                    return head + len(service.dests) + index
            return None
        for index, dest in enumerate(service.dests):
            if dest.address == key.address and dest.port == key.port:
                return head + index
        return None


class ArrangedRows(RowKind):
    """View 2's rows over model.Arrangement's blocks: a payload is a VIP's (gap, address), shown by
    VipTitleRows, or a service's position in the snapshot shown, by ServiceRows (without a
    configuration compared: no drifts, no configured servers)."""

    def __init__(self, view: BindingsView, index: dict):
        self.view, self.index = view, index
        self.snapshot: Snapshot | None = None
        self.titles: VipTitleRows | None = None
        self.services: ServiceRows | None = None

    def show(self, snapshot: Snapshot, ctx: ViewContext, server_width: int) -> None:
        self.snapshot = snapshot
        self.titles, self.services = VipTitleRows(self.view, ctx), ServiceRows(self.view, ctx, server_width)

    def forget(self) -> None:
        """The view is hidden: no snapshot kept (show() gives the next one)."""
        self.snapshot = self.titles = self.services = None

    def _resolved(self, payload) -> tuple[RowKind, object]:
        if isinstance(payload, int):
            service = self.snapshot.services[payload]
            return self.services, (service, (), (), not service.dests)
        return self.titles, payload

    def key(self, payload, offset):
        kind, payload = self._resolved(payload)
        return kind.key(payload, offset)

    def selectable(self, payload, offset):
        kind, payload = self._resolved(payload)
        return kind.selectable(payload, offset)

    def markup(self, payload, offset):
        kind, payload = self._resolved(payload)
        return kind.markup(payload, offset)

    def find(self, payload, count, key):
        kind, payload = self._resolved(payload)
        return kind.find(payload, count, key)

    def block_of(self, key) -> int | None:
        """The block that may hold a row key (IndexedBlocks.block_of)."""
        if isinstance(key, DestKey):
            return self.index.get(key.service)
        if isinstance(key, ServiceKey):
            return self.index.get(key)
        if isinstance(key, tuple) and len(key) == 2 and key[0] in ("gap", "vip"):
            return self.index.get(("vip", key[1]))
        return None
