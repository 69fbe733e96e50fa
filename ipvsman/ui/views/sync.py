"""View 5, Sync and kernel: IPVS version, table size, timeouts, sync daemons, the poll's own timing
and errors, and the recent status messages."""

from __future__ import annotations

import time

from ipvsman.model import Snapshot
from ipvsman.ui.views import KeyedListView, ViewContext
from ipvsman.ui.widgets import Line, fmt_count

LABEL = 22


class SyncView(KeyedListView):
    name = "sync"
    title = "Sync & kernel"
    short_title = "Sync"
    context = "global"

    def header(self):
        return [" SYNC AND KERNEL"]

    def build(self, snapshot: Snapshot, ctx: ViewContext):
        state = snapshot.state
        yield from self._section("kernel", "Kernel")
        yield self._field("version", "IPVS version", state.info.version or "unknown")
        size = state.info.conn_table_size
        yield self._field("table", "Connection table", f"{fmt_count(size)} buckets" if size else "unknown")
        timeouts = state.timeouts
        yield self._field(
            "timeouts", "Timeouts", f"tcp {timeouts.tcp}s   tcp-fin {timeouts.tcp_fin}s   udp {timeouts.udp}s"
        )
        sync_version = "unknown" if state.sync_version is None else str(state.sync_version)
        yield self._field("sync_version", "sync_version sysctl", sync_version)

        yield from self._section("daemons", "Sync daemons")
        if not snapshot.daemons:
            yield ("daemon", "none"), [("dim", "   no sync daemon running")], False
        for daemon in snapshot.daemons:
            text = (
                f"{daemon.state:<7} interface {daemon.interface}   syncid {daemon.syncid}   "
                f"group {daemon.group}:{daemon.port}   ttl {daemon.ttl}   maxlen {daemon.maxlen or 'auto'}"
            )
            yield ("daemon", daemon.state, daemon.interface, daemon.syncid), ["   ", ("service", text)], False

        # ---- SYNC MONITOR PANEL: filled by ipvsman.sync.monitor.SyncMonitor (another helper) ----
        yield from self._section("monitor", "Sync monitor")
        if ctx.sync_panel is None:
            yield ("monitor", "missing"), [("dim", "   not available yet (ipvsman.sync.monitor)")], False
        else:
            for index, text in enumerate(ctx.sync_panel):
                yield ("monitor", index), f"   {text}", False
        # ---- end of the sync monitor panel ----

        yield from self._section("poll", "Polling")
        yield self._field("backend", "Backend", f"{snapshot.backend}" + ("" if snapshot.writable else " (read-only)"))
        paused = "   (paused)" if snapshot.paused else ""
        yield self._field("interval", "Interval", f"{ctx.interval:g} s{paused}")
        taken = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
        yield self._field(
            "last", "Last poll", f"#{snapshot.seq} at {taken}, took {snapshot.poll_seconds * 1000:.0f} ms"
        )
        if state.connections is None:
            conns = "not read" + (" (--no-connections)" if not ctx.read_connections else "")
        else:
            conns = f"{fmt_count(len(state.connections))} entries read"
        yield self._field("conns", "Connection table", conns)
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

    def _section(self, key: str, title: str):
        if key != "kernel":
            yield ("gap", key), [""], False
        yield ("section", key), [" ", ("overlay.title", title)], False

    def _field(self, key, label: str, value: str, attr: str | None = None):
        line = Line(self.width).add("   ").add(label, LABEL, "dim").add(value, None, attr)
        return ("field", key), line.markup, False
