"""The dashboard's cluster concern: which node views 1-5 show, "all nodes" mode, view 6, R and T on the VIP holder.

The Dashboard delegates to a ClusterControl: it adds view 6 and its commands, feeds the selected
node's snapshot to the dashboard as a poller would, and takes the dashboard's changes (as the
poller's submit) to the selected node, or after a y/n naming them to every node. Cluster updates
arrive from a worker thread and are compared there (pure functions); widgets are touched only in
the loop's thread. With --sync-probe it runs the probe (ipvsman.cluster.synctest.SyncProbe), whose
figures view 6 and the header read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ipvsman.cluster import synctest
from ipvsman.cluster.compare import ClusterReport, compare_cluster, fold_nodes
from ipvsman.cluster.nodebackend import NodeBackend
from ipvsman.cluster.state import ClusterSnapshot, ClusterSource, Command, CommandReply
from ipvsman.cluster.syncprobe import ProbeSummary
from ipvsman.backend import BackendError
from ipvsman.model import DestKey, ServiceKey
from ipvsman.poller import Command as PollerCommand
from ipvsman.poller import CommandResult
from ipvsman.ui.dialogs import ConfirmDialog
from ipvsman.ui.health import DirectorSample
from ipvsman.ui.views.cluster import ClusterView

NOT_A_CLUSTER = "one director watched: --nodes NODESET watches several (view 6, N, A)"


class ClusterControl:
    """What the Dashboard asks of the cluster; inactive (no source) for a single director."""

    def __init__(self, source: ClusterSource | None = None, names: Sequence[str] = (), configuration=None,
                 probe_period: float | None = None, clock: Callable[[], float] = time.time):  # fmt: skip
        self.source = source
        self.names = tuple(names)
        self.configuration = configuration  # keepalived.conf: the vrrp_instance of each VIP
        self.selected: str | None = self.names[0] if self.names else None
        self.all_nodes = False
        self.paused = False
        self.cluster: ClusterSnapshot | None = None
        self.report: ClusterReport | None = None
        self.dashboard = None
        self._lock = threading.Lock()
        self._latest: tuple[ClusterSnapshot, ClusterReport] | None = None
        self._scheduled = False
        self._handed = None  # the node snapshot last handed to the dashboard
        self.worker: threading.Thread | None = None  # the newest change being sent to nodes
        self.probe = (synctest.SyncProbe(source, probe_period, self.probe_roles, clock)
                      if self.active and probe_period else None)  # fmt: skip
        self.view = ClusterView(lambda: self.report, lambda: self.selected, self.probe_summary) if self.active else None

    @property
    def active(self) -> bool:
        return self.source is not None

    # -- what the Dashboard takes at its construction -------------------------------------------------
    def views(self) -> list:
        return [self.view] if self.view is not None else []

    def commands(self, dashboard) -> dict[str, Callable[[], None]]:
        """The cluster's keys; when inactive each says in one line that there is no cluster."""
        self.dashboard = dashboard
        if self.configuration is None:
            self.configuration = getattr(dashboard.configs, "keepalived", None)
        if not self.active:
            refuse = lambda: dashboard.status.post(NOT_A_CLUSTER, "warn")  # noqa: E731
            return {"view.cluster": refuse, "node.next": refuse, "node.all": refuse, "node.select": refuse}
        return {
            "node.next": lambda: self.step_node(1),
            "node.all": self.toggle_all_nodes,
            "node.select": self.select_from_view,
            "sync.resync": lambda: self.sync_action("resync"),
            "sync.test": lambda: self.sync_action("sync-test"),
        }

    def mode_words(self) -> list[tuple[str, str]]:
        report = self.report
        if not self.active:
            return []
        words = []
        if self.all_nodes:
            words.append(("header.paused", "ALL NODES"))
        if report is not None:
            down = [node.name for node in report.nodes if not node.reachable]
            if down:
                words.append(("header.error", f"DOWN {fold_nodes(down)}"))
            if report.drift:
                words.append(("header.drift", f"NODE DRIFT {len(report.drift)}"))
            if report.sync_problems:
                words.append(("header.error", "SYNC WARN"))
            if any(vip.warning for vip in report.vips):
                words.append(("header.error", "VIP WARN"))
        probe = self.probe_summary()
        if probe is not None and probe.stopped:
            words.append(("header.error", f"SYNC STOPPED {fold_nodes(probe.stopped)}"))
        return words

    # -- the sync probe ---------------------------------------------------------------------------------
    def probe_summary(self) -> ProbeSummary | None:
        """The probe's figures now, None without --sync-probe (any thread)."""
        return self.probe.summary() if self.probe is not None else None

    def probe_roles(self) -> tuple[str | None, list[str], str | None]:
        """(the sync master, every other reachable node, why there is no master) from the newest comparison:
        the only reachable node running a master daemon, or of several the only one holding VIPs."""
        report = self.report
        if report is None:
            return None, [], "no answer from the nodes yet"
        reachable = [node for node in report.nodes if node.reachable]
        masters = [node for node in reachable if "master" in node.role]
        holding = [node for node in masters if node.held]
        if len(masters) > 1 and len(holding) == 1:
            masters = holding  # every node runs both daemons: the VIP holder is the one that sends
        if len(masters) != 1:
            why = (f"{fold_nodes(node.name for node in masters)} all run a master sync daemon" if masters
                   else "no reachable node runs a master sync daemon")  # fmt: skip
            return None, [], f"no probe sent: {why}"
        master = masters[0].name
        return master, [node.name for node in reachable if node.name != master], None

    # -- from the cluster's worker thread ---------------------------------------------------------------
    def on_update(self, cluster: ClusterSnapshot) -> None:
        """Compare here, in the worker thread, then have at most one apply waiting in the loop."""
        if self.paused:
            return
        report = compare_cluster(cluster, self.configuration)
        with self._lock:
            self._latest = (cluster, report)
            loop = self.dashboard.loop if self.dashboard is not None else None
            if self._scheduled or loop is None:
                return
            self._scheduled = True
        try:
            loop.call_from_thread(self.apply_latest)
        except RuntimeError:  # the loop has stopped
            with self._lock:
                self._scheduled = False

    # -- in the loop's thread -----------------------------------------------------------------------------
    def apply_latest(self) -> None:
        with self._lock:
            latest, self._latest, self._scheduled = self._latest, None, False
        if latest is not None:
            self.apply(*latest)

    def apply(self, cluster: ClusterSnapshot, report: ClusterReport) -> None:
        """A new look at every node: the selected node's snapshot and addresses go to views 1-5."""
        self.cluster, self.report = cluster, report
        self._feed_selected()

    def _feed_selected(self) -> None:
        dashboard = self.dashboard
        node = self.cluster.node(self.selected) if self.cluster is not None else None
        self._label_dashboard()
        if node is not None and node.addresses is not None:
            dashboard.apply_director(DirectorSample(dashboard.health, dict((a, i) for a, i in node.addresses)))
        if node is not None and node.snapshot is not None and node.snapshot is not self._handed:
            self._handed = node.snapshot
            dashboard.apply_snapshot(node.snapshot)
        else:
            dashboard.refresh()

    def _label_dashboard(self) -> None:
        """The header names the node and its role; the audit log names it on every line."""
        dashboard = self.dashboard
        summary = self.report.node(self.selected) if self.report is not None else None
        role = f" ({summary.header_role})" if summary is not None and summary.header_role else ""
        dashboard.hostname = f"{self.selected}{role}"
        base = getattr(dashboard.audit, "cluster_base", None)
        if base is None:
            base = dashboard.audit.cluster_base = dashboard.audit.backend
        target = fold_nodes(self.names) if self.all_nodes else self.selected
        dashboard.audit.backend = f"{base} node={target}"

    def selected_addresses(self) -> list[tuple[str, str]]:
        """The selected node's addresses, for the dashboard's watcher (any thread: values are immutable)."""
        cluster, selected = self.cluster, self.selected
        node = cluster.node(selected) if cluster is not None and selected is not None else None
        return list(node.addresses or ()) if node is not None else []

    def step_node(self, step: int) -> None:
        index = self.names.index(self.selected) if self.selected in self.names else 0
        self.select(self.names[(index + step) % len(self.names)])

    def select(self, name: str) -> None:
        if name not in self.names:
            return
        self.selected = name
        self._handed = None
        node = self.cluster.node(name) if self.cluster is not None else None
        if node is not None and node.snapshot is not None:
            self._feed_selected()
        else:
            self._label_dashboard()
            self.dashboard.refresh()
        self.dashboard.status.post(f"views 1-5 show {self.dashboard.hostname}")

    def select_from_view(self) -> None:
        selection = self.view.selection() if self.view is not None else None
        if isinstance(selection, tuple) and selection[:1] == ("node",):
            self.select(selection[1])

    def toggle_all_nodes(self) -> None:
        self.all_nodes = not self.all_nodes
        if self.all_nodes:
            self.dashboard.status.post(f"changes go to every node ({fold_nodes(self.names)}), after y/n; A again: "
                                       f"only {self.selected}")  # fmt: skip
        else:
            self.dashboard.status.post(f"changes go to {self.selected} only")
        self._label_dashboard()
        self.dashboard.refresh_header()

    # -- R and T: on the node that holds the VIP ------------------------------------------------------------
    def sync_target(self) -> tuple[str | None, ServiceKey | None]:
        """The node R and T run on: the VIP holder of the selected service, else the node running the
        master sync daemon, else none; and that service (None: the whole table)."""
        report = self.report
        selection = self.dashboard.view.selection() if self.dashboard.view.context == "servers" else None
        service = selection.service if isinstance(selection, DestKey) else selection
        service = service if isinstance(service, ServiceKey) else None
        if report is None:
            return None, service
        if service is not None and service in report.masters:
            holder = next((vip.holder for vip in report.vips if vip.address == service.address), None)
            if holder is not None:
                return holder, service
        masters = [node.name for node in report.nodes if node.reachable and "master" in node.role]
        return (masters[0] if len(masters) == 1 else None), service

    def sync_action(self, kind: str) -> None:
        label = "resync" if kind == "resync" else "sync test"
        reason = self.dashboard.read_only_reason()
        if reason:
            self.dashboard.status.post(f"{label} disabled: {reason}", "warn")
            return
        node, service = self.sync_target()
        if node is None:
            self.dashboard.status.post(f"{label}: no single node holds the VIP or runs the master daemon", "warn")
            return
        args = {"service": str(service)} if service is not None else {}
        self.dashboard.status.post(f"{label}: asked of {node}" + (f" for {service}" if service else ""))
        on_reply = self._on_sync_test_reply if kind == "sync-test" else self._on_sync_reply
        self.source.command(node, Command(kind, args), on_reply)

    def _on_sync_test_reply(self, reply: CommandReply) -> None:
        """The holder sent its test connection: now every other reachable node is asked for it."""
        self._on_sync_reply(reply)
        key, sent_at = reply.data.get("key"), reply.data.get("sent_at")
        report = self.report
        if not reply.ok or key is None or sent_at is None or report is None:
            return  # the demo's agentless test answers for every node itself
        others = [node.name for node in report.nodes if node.name != reply.node and node.reachable]
        synctest.check_nodes(self.source, others, key, sent_at, self._on_sync_test_done)

    def _on_sync_test_done(self, lines: list[str]) -> None:
        def post() -> None:
            for line in lines:
                self.dashboard.status.post(f"sync test: {line}", "info" if line.endswith(": Success") else "error")

        self._in_loop(post)

    def _on_sync_reply(self, reply: CommandReply) -> None:
        self._in_loop(lambda: self.dashboard.status.post(
            f"{reply.node}: {reply.message}" if not reply.message.startswith(reply.node) else reply.message,
            "info" if reply.ok else "error"))  # fmt: skip

    def _in_loop(self, function: Callable[[], None]) -> None:
        loop = self.dashboard.loop if self.dashboard is not None else None
        if loop is None:
            function()
            return
        try:
            loop.call_from_thread(function)
        except RuntimeError:
            pass

    # -- the dashboard's poller: changes to the selected node, or to all of them ------------------------------
    def submit(self, command: PollerCommand) -> None:
        if not self.all_nodes:
            self._run_on([self.selected], command)
            return
        nodes = fold_nodes(self.names)
        # `n` still answers the command: its pending change and its audit line settle.
        answered_no = CommandResult(command, False, f"{command.describe()}: not sent: answered no")
        self.dashboard.open_dialog(ConfirmDialog(
            "Every node", f"{command.describe()} on {nodes}? y/n", "\n".join(f"  {name}" for name in self.names),
            on_yes=lambda: self._run_on(list(self.names), command),
            no_message=f"{command.describe()}: not sent to {nodes}",
            on_no=lambda: self._deliver(answered_no, nodes)))  # fmt: skip

    def _run_on(self, nodes: list[str], command: PollerCommand) -> None:
        label = fold_nodes(nodes)

        def work() -> None:
            done, refused = [], []
            for node in nodes:
                try:
                    command.run(NodeBackend(self.source, node))
                    done.append(node)
                except BackendError as exc:
                    refused.append(str(exc))
            if refused:
                ok_part = f"done on {fold_nodes(done)}; " if done else ""
                result = CommandResult(command, False, f"{command.describe()}: refused: {ok_part}{'; '.join(refused)}")
            else:
                result = CommandResult(command, True, f"{command.describe()} on {label}")
            self._in_loop(lambda: self._deliver(result, label))

        self.worker = threading.Thread(target=work, name="ipvsman-node-change", daemon=True)
        self.worker.start()

    def _deliver(self, result: CommandResult, nodes: str) -> None:
        """The result's audit line names the node(s) the change went to, whichever is selected now."""
        audit = self.dashboard.audit
        shown = audit.backend
        audit.backend = f"{getattr(audit, 'cluster_base', shown)} node={nodes}"
        try:
            self.dashboard.apply_result(result)
        finally:
            audit.backend = shown

    # what the dashboard asks of its poller besides submit
    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def poll_now(self) -> None:
        pass

    def read_table_now(self) -> None:
        self.source.command(self.selected, Command("read-table"), self._on_sync_reply)

    def start(self) -> None:
        self.source.start(self.on_update)
        if self.probe is not None:
            self.probe.start()

    def stop(self, timeout: float | None = None) -> None:
        if self.probe is not None:
            self.probe.stop()
        self.source.stop()


def run_cluster(options, source: ClusterSource) -> int:
    """The dashboard over a cluster (--nodes): views 1-5 show one node at a time, view 6 all of them."""
    from ipvsman.ui.app import run

    probe = getattr(options, "sync_probe", None)
    return run(options, source, cluster=ClusterControl(source, source.names, probe_period=probe))
