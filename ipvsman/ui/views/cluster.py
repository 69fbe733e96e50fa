"""View 6, Cluster: every director side by side: nodes, VIP holders, drift between nodes, sync and tables."""

from __future__ import annotations

from collections.abc import Callable

from ipvsman.cluster.compare import ClusterReport, NodeSummary
from ipvsman.cluster.syncprobe import BackupFigures, ProbeSummary, format_delay
from ipvsman.model import RawState, Snapshot, service_sort_key
from ipvsman.ui.views import KeyedListView, ViewContext, port_label, service_title
from ipvsman.ui.widgets import fmt_age

# What the view is drawn with when the selected node has sent nothing yet: view 6 shows the others.
NO_SNAPSHOT = Snapshot(seq=0, taken_at=0.0, poll_seconds=0.0, backend="cluster", writable=False, state=RawState())


def node_line(node: NodeSummary, now: float, selected: bool) -> list:
    mark = "▸" if selected else " "
    if not node.reachable:
        since = f" for {fmt_age(now - node.since)}" if node.since is not None else ""
        return [f" {mark} ", ("status.error", f" {node.name} "), ("status.warn", f" unreachable{since}: "
                f"{node.error or 'no answer'}")]  # fmt: skip
    age = f"poll {fmt_age(node.poll_age)} ago" if node.poll_age is not None else "no poll yet"
    held = f"{len(node.held)} VIP{'s' if len(node.held) != 1 else ''}" if node.held else "no VIP"
    services = f"{node.services} services" if node.services is not None else ""
    versions = f"ipvsman {node.agent_version or '?'}, {node.kernel or 'kernel ?'}"
    return [f" {mark} ", ("header.live", f" {node.name} "), f" {node.role:<10} {held:<8} {services:<12} ",
            ("dim", f"{age:<14} {versions}")]  # fmt: skip


def probe_figures(figures: BackupFigures) -> list:
    """One backup's probe figures: "median 1.5 ms  worst 3.1 ms   lost 0 of 29 (0%)", or that it stopped."""
    parts: list = []
    if figures.checked:
        delay = (f"median {format_delay(figures.median)}  worst {format_delay(figures.worst)}" if figures.arrived
                 else "none arrived")  # fmt: skip
        loss = f"lost {figures.lost} of {figures.checked} ({figures.loss * 100:.0f}%)"
        parts += [f"{delay:<34} ", ("status.warn" if figures.lost else "status.info", f"{loss:<22}")]
    if figures.stopped:
        parts += ["  ", ("status.error", " STOPPED RECEIVING ")]
    elif not figures.checked and figures.pending:
        parts.append(("dim", "waiting for the first answer"))
    if figures.note:
        parts.append(("status.warn", f"   not asked: {figures.note}"))
    return parts


class ClusterView(KeyedListView):
    name = "cluster"
    title = "Cluster"
    short_title = "Cluster"
    context = "cluster"

    def __init__(self, report: Callable[[], ClusterReport | None], selected: Callable[[], str | None],
                 probe: Callable[[], ProbeSummary | None] = lambda: None):  # fmt: skip
        super().__init__()
        self._report = report
        self._selected = selected
        self._probe = probe  # --sync-probe's figures; None without it, and then no section

    def header(self, ctx: ViewContext):
        return [" CLUSTER: every director side by side"]

    def update(self, snapshot: Snapshot | None, ctx: ViewContext) -> None:
        # Not the selected node's snapshot but the comparison of all of them: shown once there is one.
        super().update(NO_SNAPSHOT if self._report() is not None else None, ctx)

    def build(self, snapshot: Snapshot, ctx: ViewContext):
        report = self._report()
        selected = self._selected()
        yield from self._section("nodes", f"Nodes ({len(report.nodes)})")
        for node in report.nodes:
            yield ("node", node.name), node_line(node, ctx.now, node.name == selected), True

        yield from self._section("vips", "VIPs: which node holds each")
        if not report.vips:
            yield ("vip", ""), [("dim", "   no VIP: no service with an address on any node")], False
        for vip in report.vips:
            if vip.holders:
                where = ", ".join(f"{node} on {interface}" for node, interface in vip.holders)
            else:
                where = "no node" if not vip.unknown else f"unknown ({', '.join(vip.unknown)}: addresses not read)"
            instance = f"  vrrp_instance {vip.vrrp_instance}" if vip.vrrp_instance else ""
            services = ", ".join(port_label(key, ctx.names) for key in vip.services)
            shown_where = ("status.warn", where) if vip.warning else where
            yield ("vip", vip.address), [f"   {vip.address:<18} ", shown_where, ("dim", f"{instance}   {services}")], False
            if vip.warning:
                yield ("vip-warning", vip.address), [("status.warn", f"     ! {vip.warning}")], False

        drift = report.drift
        yield from self._section("drift", f"Drift between nodes ({len(drift)})" if drift else "Drift between nodes")
        if not drift:
            yield ("drift", "none"), [("dim", "   the nodes compared agree on every service")], False
        for number, row in enumerate(drift):
            yield ("drift", number), [("header.drift", " DRIFT "), f" {row.text}"], True

        yield from self._section("sync", "Sync daemons")
        for item in report.sync:
            if item.daemons is None:
                text = [("dim", "unknown")]
            elif not item.daemons:
                text = [("dim", "no sync daemon")]
            else:
                text = ["   ".join(f"{d.state} on {d.interface} syncid {d.syncid} group {d.group}:{d.port}"
                                   for d in item.daemons)]  # fmt: skip
            yield ("sync", item.node), [f"   {item.node:<12} ", *text], False
        for problem in report.sync_problems:
            yield ("sync-problem", problem), [("status.warn", f"   ! {problem}")], False
        probe = self._probe()
        if probe is not None:
            yield from self._probe_rows(probe)

        yield from self._section("tables", "Connections: the VIP holder against each backup")
        if not report.tables:
            yield ("table", "none"), [("dim", "   nothing to compare: one node, or no service with a VIP")], False
        last = None
        for diff in sorted(report.tables, key=lambda diff: (service_sort_key(diff.service), diff.backup)):
            if diff.service != last:
                last = diff.service
                yield ("table", str(diff.service)), [
                    f"   {service_title(diff.service, ctx.names)}  ",
                    ("dim", f"{diff.master} has {diff.master_count}"),
                ], False
            count = "lacks the service" if diff.backup_count is None else f"has {diff.backup_count}"
            if diff.missing is None:
                attr = "dim"
            else:
                attr = "status.warn" if diff.missing else "status.info"
            extra = f", {diff.extra} it alone has" if diff.extra else ""
            label = "" if diff.exact or diff.missing is None else f"  ({diff.note})"
            yield ("table", str(diff.service), diff.backup), [
                f"     {diff.backup:<12} {count:<12} ", (attr, diff.text.split(": ", 1)[1] + extra), ("dim", label)
            ], False

    def _probe_rows(self, probe: ProbeSummary):
        sender = f" from {probe.master}" if probe.master else ""
        yield from self._section("probe", f"Sync probe: one every {probe.period:g} s{sender}, the last "
                                          f"{probe.window:g} s: delay and loss per backup")  # fmt: skip
        if probe.note:
            yield ("probe-note", ""), [("status.warn", f"   ! {probe.note}")], False
        if probe.send_failures:
            yield ("probe-send", ""), [("status.warn", f"   ! {probe.send_failures} not sent by {probe.master}: "
                                                       f"{probe.last_send_error}")], False  # fmt: skip
        if not probe.backups and not probe.note:
            yield ("probe", ""), [("dim", "   the first probe goes out once the nodes have answered")], False
        for figures in probe.backups:
            yield ("probe", figures.node), [f"   {figures.node:<12} ", *probe_figures(figures)], False

    @staticmethod
    def _section(key: str, title: str):
        yield ("gap", key), "", False
        yield ("section", key), [("colhead", f" {title}")], False
