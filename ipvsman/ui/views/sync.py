"""View 5, Sync and kernel: IPVS version, table size, timeouts, sync daemons, what the sync monitor
hears, the configuration files and their errors, the poll's own timing and errors, and the recent
status messages."""

from __future__ import annotations

import os
import time

from ipvsman.model import STATE_LABELS, Snapshot, Timeouts, daemons_known, join_host_port
from ipvsman.ui.views import KeyedListView, ViewContext
from ipvsman.ui.tabletext import budget_words, extent_words, interval_words, read_words
from ipvsman.ui.widgets import Line, fmt_count

LABEL = 22
MONITOR_LATEST = 5  # latest decoded entries listed


def latest_entry(received) -> str:
    """One received sync entry (ipvsman.sync.monitor.ReceivedConn) in a line: who sent it, and the
    connection as the connection view would show it."""
    conn = received.conn
    state = "template" if conn.is_template else STATE_LABELS.get(conn.state_name, conn.state_name)
    timeout = f" {conn.timeout}s" if conn.timeout else ""
    return (
        f"{received.sender} #{received.syncid}  {conn.protocol_name} {join_host_port(conn.client, conn.client_port)}"
        f" -> {join_host_port(conn.virtual, conn.virtual_port)} -> {join_host_port(conn.dest, conn.dest_port)}"
        f"  {state}{timeout}"
    )


def unread_reason(snapshot: Snapshot) -> str:
    """Why the kernel's settings are unknown: the poll's error (nothing read yet), else the backend's
    first warning (the kernel backend's says that it lacks CAP_NET_ADMIN)."""
    if snapshot.error:
        return snapshot.error
    return snapshot.state.warnings[0] if snapshot.state.warnings else "not read"


class SyncView(KeyedListView):
    name = "sync"
    title = "Sync & kernel"
    short_title = "Sync"
    context = "global"

    def header(self, ctx: ViewContext):
        return [" SYNC AND KERNEL"]

    def build(self, snapshot: Snapshot, ctx: ViewContext):
        state = snapshot.state
        unknown = f"unknown ({unread_reason(snapshot)})"
        yield from self._section("kernel", "Kernel")
        info = state.info
        yield self._field("version", "IPVS version", info.version if info.version is not None else unknown,
                          None if info.version is not None else "status.warn")  # fmt: skip
        size = info.conn_table_size
        yield self._field("table", "Connection table", f"{fmt_count(size)} buckets" if size is not None else unknown,
                          None if size is not None else "status.warn")  # fmt: skip
        timeouts = state.timeouts
        if timeouts == Timeouts():
            yield self._field("timeouts", "Timeouts", unknown, "status.warn")
        else:
            shown = "   ".join(
                f"{name} {'unknown' if value is None else f'{value}s'}"
                for name, value in (("tcp", timeouts.tcp), ("tcp-fin", timeouts.tcp_fin), ("udp", timeouts.udp))
            )
            yield self._field("timeouts", "Timeouts", shown, None if timeouts.known else "status.warn")
        sync_version = "unknown" if state.sync_version is None else str(state.sync_version)
        yield self._field("sync_version", "sync_version sysctl", sync_version)

        yield from self._section("daemons", "Sync daemons")
        if not daemons_known(state.daemons):
            yield ("daemon", "unknown"), [("status.warn", f"   {unknown}")], False
        elif not state.daemons:
            yield ("daemon", "none"), [("dim", "   no sync daemon running")], False
        for daemon in state.daemons:
            text = (
                f"{daemon.state:<7} interface {daemon.interface}   syncid {daemon.syncid}   "
                f"group {daemon.group}:{daemon.port}   ttl {daemon.ttl}   maxlen {daemon.maxlen or 'auto'}"
            )
            yield ("daemon", daemon.state, daemon.interface, daemon.syncid), ["   ", ("service", text)], False

        yield from self._section("monitor", "Sync monitor")
        yield from self._monitor(ctx)

        yield from self._section("config", "Configuration")
        yield from self._configuration(ctx)

        yield from self._section("poll", "Polling")
        yield self._field("backend", "Backend", f"{snapshot.backend}" + ("" if snapshot.writable else " (read-only)"))
        paused = "   (paused)" if snapshot.paused else ""
        stretched = interval_words(snapshot, ctx.interval)
        yield self._field("interval", "Interval", f"{ctx.interval:g} s{paused}" + (f"   ({stretched})" if stretched else ""),
                          "status.warn" if stretched else None)  # fmt: skip
        taken = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
        yield self._field(
            "last", "Last poll", f"#{snapshot.seq} at {taken}, took {snapshot.poll_seconds * 1000:.0f} ms"
        )
        table = snapshot.table
        if state.connections is None and table.read is None and not ctx.read_connections:
            yield self._field("conns", "Connection table", "not read (--no-connections; C reads it)")
        else:
            yield self._field("conns", "Connection table", read_words(table, snapshot.taken_at))
            extent = extent_words(table)
            if extent:
                estimated = "" if table.current else "   counts by state ~estimated"
                yield self._field("conns_extent", "", extent + estimated)
            yield self._field("conns_budget", "", budget_words(table, snapshot.taken_at))
        yield self._field("error", "Poll error", snapshot.error or "none", "error" if snapshot.error else "dim")
        skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(state.skipped.items()) if count)
        yield self._field("skipped", "Skipped", skipped or "nothing", None if skipped else "dim")
        for index, warning in enumerate(state.warnings):
            yield self._field(("warning", index), "Warning" if index == 0 else "", warning, "status.warn")

        yield from self._section("messages", "Messages (newest first)")
        if not ctx.messages:
            yield ("message", "none"), [("dim", "   none")], False
        for message in reversed(ctx.messages):
            stamp = time.strftime("%H:%M:%S", time.localtime(message.at))
            yield (
                ("message", id(message)),
                ["   ", ("dim", f"{stamp} "), (f"status.{message.level}", f"{message.level:<5}"), f" {message.text}"],
                False,
            )

    def _monitor(self, ctx: ViewContext):
        stats = ctx.sync_monitor
        if stats is None or isinstance(stats, str):
            yield ("monitor", "off"), [("dim", f"   {stats or 'off'}")], False
            return
        yield self._field(
            "listening",
            "Listening",
            f"{stats.listening}" + ("" if stats.running else " (stopped)"),
            None if stats.running else "status.warn",
        )
        totals = (
            f"{fmt_count(stats.messages)} messages, {fmt_count(stats.connections)} connections, "
            f"{fmt_count(stats.malformed)} malformed, {fmt_count(stats.rejected)} entries rejected"
        )
        yield self._field("totals", "Received", totals)
        if not stats.flowing:
            yield self._field("flowing", "Traffic", f"no sync message in the last {stats.window:g} s", "status.warn")
        for syncid in stats.by_syncid:
            senders = ", ".join(syncid.senders) or "?"
            version = "?" if syncid.version is None else syncid.version
            ago = max(0.0, ctx.now - syncid.last_seen)
            text = (
                f"{syncid.messages_per_second:.1f} messages/s  {syncid.connections_per_second:.1f} connections/s"
                f"  (v{version} from {senders}, last {ago:.0f} s ago)"
            )
            yield self._field(("syncid", syncid.syncid), f"syncid {syncid.syncid}", text)
        if stats.last_error:
            yield self._field("monitor-error", "Last error", stats.last_error, "error")
        if stats.latest:
            yield self._field("latest", "Latest entries", f"newest first, {min(len(stats.latest), MONITOR_LATEST)} shown")
        for index, received in enumerate(stats.latest[:MONITOR_LATEST]):
            yield ("latest", index), f"     {latest_entry(received)}", False

    def _configuration(self, ctx: ViewContext):
        if not ctx.configs:
            yield ("config", "none"), [("dim", "   no topology or keepalived.conf (--topology, --keepalived)")], False
        for config in ctx.configs:
            name = os.path.basename(config.path)
            count = f"{config.services} service" + ("s" if config.services != 1 else "")
            errors = f"; {len(config.errors)} error" + ("s" if len(config.errors) != 1 else "") if config.errors else ""
            text = f"{name}: {count}, for {config.used_for}{errors}"
            yield self._field(("config", config.label), config.label, text, "status.warn" if config.errors else None)
            if config.path != name:
                yield self._field(("config-path", config.label), "", config.path, "dim")
            for index, error in enumerate(config.errors):
                # The file's name is enough here: its full path is on the line above.
                shown = error[len(config.path) - len(name):] if error.startswith(config.path) else error
                yield ("config-error", config.label, index), ["     ", ("error", shown)], False
        if ctx.drift is not None:
            count = len(ctx.drift)
            text = (
                f"{count} difference{'s' if count != 1 else ''} against {ctx.drift_source} (D in views 1-3: drift only)"
                if count
                else f"none: the kernel agrees with {ctx.drift_source}"
            )
            yield self._field("drift", "Drift", text, "status.warn" if count else None)
        names = ctx.names
        if not names.show:
            text = "numbers (n shows names)"
        else:
            resolver = names.resolver
            dns = "reverse DNS on" if resolver is not None and resolver.dns_enabled else "no reverse DNS"
            pending = f", {resolver.pending()} lookups pending" if resolver is not None and resolver.pending() else ""
            text = f"shown (n shows numbers); {dns}{pending}"
        yield self._field("names", "Names", text)

    def _section(self, key: str, title: str):
        if key != "kernel":
            yield ("gap", key), [""], False
        yield ("section", key), [" ", ("overlay.title", title)], False

    def _field(self, key, label: str, value: str, attr: str | None = None):
        line = Line(self.width).add("   ").add(label, LABEL, "dim").add(value, None, attr)
        return ("field", key), line.markup, False
