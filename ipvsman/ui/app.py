"""The dashboard's controller: owns the MainLoop, the views and the commands the keymap names.

Snapshots come from the polling thread through MainLoop.call_from_thread; only the newest
waiting one is drawn when the screen falls behind. Keys become commands (poller.SetWeight,
AddDest, RemoveDest) submitted to the poller; no widget is touched outside the loop's thread.
The configuration files (topology, keepalived.conf) are read once at start; drift against them
is worked out for every snapshot.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable

import urwid

from ipvsman import collector, vips
from ipvsman.conntable import DEFAULT_BUDGET
from ipvsman.drift import DriftReport, find_drift, reload_restores_weight
from ipvsman.model import FORWARD_LABELS, DestKey, ServiceKey, Snapshot, join_host_port
from ipvsman.names import Names
from ipvsman.poller import Command, CommandResult
from ipvsman.ui.audit import AuditLog, AuditLogError, backend_label
from ipvsman.ui.tableread import TableReadKey
from ipvsman.ui.tabletext import interval_words
from ipvsman.ui.audit import for_backend as audit_log_for
from ipvsman.ui.cluster import ClusterControl
from ipvsman.ui.changes import Changes, PendingChange
from ipvsman.ui.config import Configurations, load_configurations, make_names
from ipvsman.ui.dialogs import ChoiceDialog, ConfirmDialog, DetailsDialog, Dialog
from ipvsman.ui.drain import Drains
from ipvsman.ui.health import DirectorSample, DirectorWatcher, HealthSampler, describe
from ipvsman.ui.help import HelpOverlay
from ipvsman.ui.ipvsmand import IpvsmandLink
from ipvsman.ui.keymap import KEYMAP, key_label
from ipvsman.ui.palette import PALETTE, color_depth
from ipvsman.ui.status import FilterPrompt, Header, StatusBar
from ipvsman.ui.syncpanel import SyncPanel
from ipvsman.ui.views import (
    View,
    ViewContext,
    drift_text,
    host_label,
    numeric_names,
    server_label,
    service_title,
)
from ipvsman.ui.views.bindings import BindingsView
from ipvsman.ui.views.connections import ConnectionsView
from ipvsman.ui.views.realservers import RealServersView
from ipvsman.ui.views.sync import SyncView
from ipvsman.ui.views.virtual import VirtualServersView
from ipvsman.ui.widgets import DashboardWidget, fmt_age, fmt_count

WIDE_COLS = 100  # from here on the tab bar has room for the views' full titles
TICK_SECONDS = 1.0
KEY_QUIET_SECONDS = 1.0  # no scheduled garbage collection this soon after a key
PROGRESS_SECONDS = 60.0  # a progress line stays this long unless the next one or the outcome replaces it
VIEW_CLASSES = (VirtualServersView, BindingsView, RealServersView, ConnectionsView, SyncView)
NAV_KEYS = {
    "nav.up": "up",
    "nav.down": "down",
    "nav.page_up": "page up",
    "nav.page_down": "page down",
    "nav.top": "home",
    "nav.bottom": "end",
}
WHEEL_BUTTONS = {4: "wheel up", 5: "wheel down"}
# Footer hints per view context: (commands whose keys are shown together, what they do).
HINTS = {
    "servers": [
        (("weight.up", "weight.down"), "weight"),
        (("weight.drain",), "drain/restore"),
        (("connections.of_selection",), "connections"),
    ],
    "connections": [
        (("connections.filter",), "filter"),
        (("connections.sort_next",), "sort"),
        (("connections.sort_reverse",), "reverse"),
        (("app.cancel",), "clear filter"),
    ],
    "global": [(("sync.resync",), "resync"), (("sync.test",), "sync test")],
}
COMMON_HINTS = [(("poll.pause",), "pause"), (("help.toggle",), "help"), (("app.quit",), "quit")]
# Hints of views 1-3 shown while the footer has room: drift when there is a configuration to compare
# with, add when a topology lists real servers.
DRIFT_HINT = (("drift.toggle",), "drift only")
ADD_HINT = (("servers.add",), "add")
DETAILS_HINT = (("details.show",), "details")
DIALOG_COMMANDS = ("choose.", "confirm.", "details.")
DEMO_MONITOR_OFF = "monitor off in the demo: its sync interface eth0 is made up, there is nothing to listen to"


def _option(options: argparse.Namespace, name: str, default):
    return getattr(options, name, default)


def load_local_addresses(options: argparse.Namespace) -> Callable[[], Iterable[tuple[str, str]]]:
    """The function that lists (address, interface) of the watched director's namespace."""
    netns = _option(options, "netns", None)
    return lambda: vips.local_addresses(netns=netns)


# ---- HOOK: resync and sync test (ipvsman/sync/resync.py, written by another helper) ------------
SYNC_LABELS = {"sync.resync": "resync", "sync.test": "sync test"}


def load_resync():
    """The ipvsman.sync.resync module, or None while it does not exist."""
    try:
        return importlib.import_module("ipvsman.sync.resync")
    except ModuleNotFoundError as exc:
        if exc.name in ("ipvsman.sync", "ipvsman.sync.resync"):
            return None
        raise


def _is_missing(selection) -> bool:
    """Whether a row stands for a configured service or real server the kernel lacks."""
    return isinstance(selection, tuple) and len(selection) == 2 and selection[0] == "missing"


class Dashboard:
    """The controller: snapshots in, commands out, and every view and overlay in between."""

    def __init__(
        self,
        options: argparse.Namespace,
        poller=None,
        backend=None,
        *,
        hostname: str | None = None,
        clock: Callable[[], float] = time.time,
        watcher: DirectorWatcher | None = None,
        names: Names | None = None,
        audit: AuditLog | None = None,
        configs: Configurations | None = None,
        sync_panel: SyncPanel | None = None,
        cluster: ClusterControl | None = None,
    ):
        self.options = options
        self.poller = poller
        self.backend = backend
        self.clock = clock
        self.hostname = hostname or socket.gethostname()
        if _option(options, "netns", None):
            self.hostname += f" netns {options.netns}"
        self.watcher = watcher
        self.names = names if names is not None else numeric_names()
        self.configs = configs if configs is not None else Configurations()
        self.sync_panel = sync_panel if sync_panel is not None else SyncPanel(None, off_reason="sync monitor off")
        if audit is None:
            netns = getattr(backend, "netns", None) or _option(options, "netns", None)
            label = backend_label(getattr(backend, "name", None), netns)
            audit = AuditLog(_option(options, "audit_log", None), backend=label)
        self.audit = audit
        self.weight_step = _option(options, "weight_step", 1)
        self.table_key = TableReadKey(lambda *args, **kwargs: self.status.post(*args, **kwargs))
        self.keymap = KEYMAP
        self.loop: urwid.MainLoop | None = None
        # run() starts it: full collections between frames, none in the middle of one (ipvsman.collector)
        self.collector = collector.Schedule()
        self._last_key_at = float("-inf")  # time.monotonic() of the last key or mouse event

        self.cluster = cluster if cluster is not None else ClusterControl()  # several directors (ipvsman.ui.cluster)
        self.views: list[View] = [cls() for cls in VIEW_CLASSES] + self.cluster.views()
        self.view = self.views[0]
        self.snapshot: Snapshot | None = None
        self.data_taken_at = 0.0  # when the state on screen was read (not when a paused snapshot came)
        self.held: dict[str, str] | None = None
        self.owners: dict[str, vips.VipOwner] | None = None  # VIP -> where it is held, while `held` is known
        self._owners_for: tuple | None = None  # what `owners` were worked out from
        self.drift: DriftReport | None = None  # against configs.drift_source, for the snapshot on screen
        self.drift_only = False
        self.health = None
        self.width = 100
        self._director_errors: set[str] = set()
        self._last_error: str | None = None
        self._size: tuple[int, int] = (100, 30)

        self.header = Header()
        self.status = StatusBar(clock)
        self.prompt: FilterPrompt | None = None
        self.job = None  # the running resync or sync test (ipvsman.sync.resync.SyncJob)
        self._progress = None  # the newest SendProgress not drawn yet (guarded by _lock)
        self._progress_scheduled = False
        self._progress_message = None  # the progress line in the status history, replaced by the next one
        self._showing_progress = False  # a resync runs and its outcome is not shown yet
        self._planning = None  # the token of the resync being planned for R's question, None when none is
        self._planner: threading.Thread | None = None
        self.help: HelpOverlay | None = None
        self.dialog: Dialog | None = None
        self._choice_service: ServiceKey | None = None  # the service a ChoiceDialog adds to
        self.changes = Changes(
            self.audit,
            self.status,
            poller=lambda: self.poller,
            snapshot=lambda: self.snapshot,
            configs=lambda: self.configs,
            read_only_reason=self.read_only_reason,
            names=lambda: self.names,
        )
        self.drains = Drains(self.audit, self.status)  # the guided drain after `0` (ipvsman.ui.drain)
        self.ipvsmand = IpvsmandLink(_option(options, "ipvsmand_state", None), self.status, self.audit, clock,
                                     self.read_only_reason)  # fmt: skip
        self.frame = urwid.Frame(self.view.widget, header=self.header, footer=self.status)
        self.top = DashboardWidget(self, self.frame)
        self.commands = self._register_commands()

        self._lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._tick_alarm = None
        self._pending_sample: DirectorSample | None = None  # from the watcher, not applied yet
        self._sample_scheduled = False
        self._held_reported: dict | None = None  # what the watcher last reported (watcher side)
        self._errors_reported: set[str] = set()
        self._apply_scheduled = False
        self._names_scheduled = False
        self._names_drawn = -1  # names.version on screen
        self._results: collections.deque[CommandResult] = collections.deque()
        self.refresh()
        self._report_configuration_errors()

    def _report_configuration_errors(self) -> None:
        """One status line per file with errors (view 5 lists every one); the dashboard goes on."""
        for summary in self.configs.summaries():
            if summary.errors:
                count = len(summary.errors)
                more = f" (+{count - 1} more, view 5 lists them)" if count > 1 else ""
                self.status.post(f"{summary.errors[0]}{more}", "warn", seconds=30.0)

    # -- commands -----------------------------------------------------------------------------
    def _register_commands(self) -> dict[str, Callable[[], None]]:
        commands: dict[str, Callable[[], None]] = {}
        for view in self.views:
            commands[f"view.{view.name}"] = lambda view=view: self.show_view(view)
        for name in NAV_KEYS:
            commands[name] = lambda name=name: self.navigate(NAV_KEYS[name])
        commands.update(
            {
                "view.next": lambda: self.step_view(1),
                "view.previous": lambda: self.step_view(-1),
                "poll.pause": self.toggle_pause,
                "names.toggle": self.toggle_names,
                "table.read": lambda: self.table_key.request(self.poller, self.snapshot, self._confirm_table_read),
                "drift.toggle": self.toggle_drift_only,
                "details.show": self.show_details,
                "details.close": self.close_dialog,
                "servers.add": self.add_dest,
                "servers.remove": self.remove_dest,
                "choose.apply": self.apply_choice,
                "choose.cancel": lambda: self.close_dialog("nothing added"),
                "confirm.yes": self.confirm_yes,
                "confirm.no": self.confirm_no,
                "sync.resync": lambda: self.run_sync_hook("sync.resync"),
                "sync.test": lambda: self.run_sync_hook("sync.test"),
                "help.toggle": self.toggle_help,
                "help.close": self.close_help,
                "app.cancel": self.cancel,
                "app.quit": self.quit,
                "weight.up": lambda: self.change_weight(+self.weight_step),
                "weight.down": lambda: self.change_weight(-self.weight_step),
                "weight.drain": self.toggle_drain,
                "ipvsmand.reload": self.reload_ipvsmand,
                "connections.of_selection": self.connections_of_selection,
                "connections.filter": self.open_filter,
                "connections.sort_next": lambda: self.step_sort(1),
                "connections.sort_previous": lambda: self.step_sort(-1),
                "connections.sort_reverse": self.reverse_sort,
                "filter.apply": self.apply_filter,
                "filter.cancel": self.close_filter,
            }
        )
        commands.update(self.cluster.commands(self))
        return commands

    def contexts(self) -> list[str]:
        if self.prompt is not None:
            return ["filter"]
        if self.help is not None:
            return ["help", "global"]
        if self.dialog is not None:
            return [self.dialog.context, "global"]
        return [self.view.context, "global"] if self.view.context != "global" else ["global"]

    def keypress(self, size, key: str) -> str | None:
        self._size = size
        self._last_key_at = time.monotonic()
        command = self.keymap.lookup(key, self.contexts())
        if command is None:
            if self.prompt is not None:
                return self.prompt.edit.keypress((max(1, size[0] - 2),), key)
            return key
        if self.help is not None and not command.startswith(("nav.", "help.")):
            self.close_help()
        if self.dialog is not None and not command.startswith(("nav.", *DIALOG_COMMANDS)):
            if self.dialog.modal:  # a question or a choice waits for its answer
                self.status.post(f"{self.dialog.title}: {self.dialog.hint} first", "warn")
                return None
            self.close_dialog()
        self.commands[command]()
        return None

    def mouse_event(self, size, event, button, col, row, focus) -> bool:
        self._size = size
        self._last_key_at = time.monotonic()
        if event == "mouse press" and button in WHEEL_BUTTONS:
            return self.keypress(size, WHEEL_BUTTONS[button]) is None
        return bool(self.top.body.mouse_event(size, event, button, col, row, focus))

    def navigate(self, key: str) -> None:
        self.top.body.keypress(self._size, key)

    # -- views --------------------------------------------------------------------------------
    def show_view(self, view: View) -> None:
        if self.prompt is not None:
            self.close_filter()
        if view is not self.view:
            self.view.hide()  # keeps no old snapshot alive (see apply_snapshot)
        self.view = view
        self.frame.body = view.widget
        self.refresh()

    def step_view(self, step: int) -> None:
        index = self.views.index(self.view)
        self.show_view(self.views[(index + step) % len(self.views)])

    def view_named(self, name: str) -> View:
        return next(view for view in self.views if view.name == name)

    def set_width(self, cols: int) -> None:
        if cols != self.width:
            self.width = cols
            self.refresh_header()
            self.refresh_hint()
            self.refresh_view()

    def context(self) -> ViewContext:
        source = self.configs.drift_source
        return ViewContext(
            now=self.clock(),
            names=self.names,
            owners=self.owners,
            pending={key: (change.old, change.new) for key, change in self.pending.items()},
            drained=dict(self.drained),
            interval=_option(self.options, "interval", 1.0),
            read_connections=_option(self.options, "connections", True),
            messages=tuple(self.status.history),
            drift=self.drift,
            drift_source=os.path.basename(source.path) if source is not None else "",
            drift_only=self.drift_only and self.drift is not None,
            sync_monitor=self.sync_panel.state() if isinstance(self.view, SyncView) else None,
            configs=tuple(self.configs.summaries()),
            verdicts=self.ipvsmand.shown(),
            verdict_drift=self.ipvsmand.drift,
            drains=self.drains.statuses,
        )

    def refresh_view(self) -> None:
        self.view.width = self.width
        self._names_drawn = self.names.version
        self.view.update(self.snapshot, self.context())

    def refresh(self) -> None:
        self.refresh_header()
        self.refresh_hint()
        self.refresh_view()

    def refresh_hint(self) -> None:
        """Key hints for the view; the optional ones (details, drift, add) only while they fit."""
        hints = list(HINTS.get(self.view.context, []))
        optional = []
        if self.view.context == "servers":
            if self.configs.drift_source is not None:
                optional.append(DRIFT_HINT)
            if self.configs.topology is not None:
                optional.append(ADD_HINT)
            optional.append(DETAILS_HINT)

        def markup_of(entries):
            markup = []
            for commands, text in entries:
                keys = "/".join(key_label(self.keymap.keys_for(command)[0]) for command in commands)
                markup += [("key", f" {keys}"), ("hint", f" {text} ")]
            return markup

        while True:
            markup = markup_of(hints + optional + COMMON_HINTS)
            if not optional or sum(len(text) for _, text in markup) <= self.width:
                break
            optional.pop()
        self.status.set_hint(markup)

    def mode_words(self) -> list[tuple[str, str]]:
        snapshot = self.snapshot
        words = []
        if snapshot is None:
            words.append(("header.dim", "starting"))
        elif snapshot.backend == "demo":
            words.append(("header.demo", "DEMO"))
        else:
            words.append(("header.live", "LIVE"))
        if self.read_only_reason():
            words.append(("header.readonly", "READ-ONLY"))
        if (snapshot is not None and snapshot.paused) or (self.poller is not None and self.poller.paused):
            words.append(("header.paused", "PAUSED"))
        if snapshot is not None and snapshot.error:
            words.append(("header.error", "POLL ERROR"))
        if self.drift:
            words.append(("header.drift", f"DRIFT {len(self.drift)}" + (" ONLY" if self.drift_only else "")))
        words += self.ipvsmand.header_words(self.clock())
        words += self.cluster.mode_words()
        return words

    def refresh_header(self) -> None:
        self.header.set_identity(self.hostname, self.mode_words())
        snapshot = self.snapshot
        if snapshot is None:
            self.header.set_poll(("header.dim", "waiting for the first poll "))
        else:
            seconds = max(0.0, self.clock() - self.data_taken_at)
            age = fmt_age(seconds)
            if snapshot.paused:
                self.header.set_poll(("header.dim", f"paused: data from {age} ago "))
            else:
                took = f", took {snapshot.poll_seconds * 1000:.0f} ms"
                stretched = interval_words(snapshot, _option(self.options, "interval", 1.0))
                if stretched:
                    took += f", {stretched}"
                # A poll overdue by several intervals (a slow kernel, a stuck netlink call) stands out.
                late = seconds > max(5.0, 3 * _option(self.options, "interval", 1.0))
                attr = "header.error" if late else "header.dim"
                self.header.set_poll((attr, f"poll #{snapshot.seq} {age} ago{took}{' (late)' if late else ''} "))
        self.header.set_health(describe(self.health, max_interfaces=2 if self.width >= WIDE_COLS else 1))
        wide = self.width >= WIDE_COLS
        keys = f"{key_label(self.keymap.keys_for('help.toggle')[0])} help " if wide else ""
        tabs = [(view.name, view.title if wide else view.short_title) for view in self.views]
        if wide and sum(len(title) + 5 for _, title in tabs) - 1 + len(keys) > self.width:  # view 6 in a cluster
            tabs = [(view.name, view.short_title) for view in self.views]
        self.header.set_tabs(tabs, self.view.name, keys)

    # -- from the polling thread --------------------------------------------------------------
    def attach(self, loop: urwid.MainLoop) -> None:
        self.loop = loop
        self._tick_alarm = loop.set_alarm_in(TICK_SECONDS, self._on_tick)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Polling thread: keep the newest snapshot and have at most one apply waiting in the loop."""
        with self._lock:
            replaced, self._latest = self._latest, snapshot
            schedule = not self._apply_scheduled and self.loop is not None
            if schedule:
                self._apply_scheduled = True
        self.collector.release(replaced)  # one never applied would be freed here, whole, at once
        del replaced
        if not schedule:
            return
        try:
            self.loop.call_from_thread(self._apply_latest)
        except RuntimeError:  # the loop has stopped: nothing left to draw on
            with self._lock:
                self._apply_scheduled = False

    def on_result(self, result: CommandResult) -> None:
        """Polling thread: queue the result (never dropped: the audit log needs it) and wake the loop."""
        self._results.append(result)
        if self.loop is None:
            return
        try:
            self.loop.call_from_thread(self.drain_results)
        except RuntimeError:
            pass  # run() drains what is left once the poller has stopped

    def on_names_update(self) -> None:
        """A resolver thread learnt a name: redraw once, however many names arrive meanwhile."""
        with self._lock:
            if self._names_scheduled or self.loop is None:
                return
            self._names_scheduled = True
        try:
            self.loop.call_from_thread(self._apply_names)
        except RuntimeError:
            pass

    def _apply_names(self) -> None:
        with self._lock:
            self._names_scheduled = False
        if self.names.version != self._names_drawn:
            self.refresh_view()

    def _apply_latest(self) -> None:
        with self._lock:
            snapshot, self._apply_scheduled = self._latest, False
        if snapshot is not None and snapshot is not self.snapshot:
            self._apply_pending_sample()
            self.apply_snapshot(snapshot)
            self.status.refresh()
            self.collect_garbage_if_idle()
            self._postpone_tick()

    def _postpone_tick(self) -> None:
        """A snapshot was just drawn: the next tick comes a second from now. Each redraw of a
        200x60 screen costs a few ms; ticks between snapshots would double them for nothing."""
        if self.loop is None or self._tick_alarm is None:
            return
        self.loop.remove_alarm(self._tick_alarm)
        self._tick_alarm = self.loop.set_alarm_in(TICK_SECONDS, self._on_tick)

    def drain_results(self) -> None:
        while self._results:
            self.apply_result(self._results.popleft())

    # -- in the loop's thread -------------------------------------------------------------------
    def apply_snapshot(self, snapshot: Snapshot) -> None:
        if self.snapshot is None or snapshot.state is not self.snapshot.state:
            self.data_taken_at = snapshot.taken_at  # paused snapshots repeat the last state: its age grows
        # The old snapshot is freed in the collector's thread once the view has let go of it
        # (hidden views keep none): over a million objects at 10,000 x 10, 25-45 ms in this thread.
        if snapshot is not self.snapshot:
            self.collector.release(self.snapshot)
        self.snapshot = snapshot
        if snapshot.error and snapshot.error != self._last_error:
            self.status.post(f"poll: {snapshot.error}", "error")
        self._last_error = snapshot.error
        source = self.configs.drift_source
        self.drift = find_drift(snapshot, source) if source is not None else None
        self._settle_pending(snapshot)
        self.drains.follow(snapshot, self.changes.drained)
        self.ipvsmand.follow(snapshot)
        self._update_owners()
        if self.watcher is not None:
            self.watcher.interfaces = tuple(self.vip_interfaces())
        self.sync_panel.follow(snapshot.daemons)
        self.table_key.on_snapshot(snapshot)
        self.refresh()

    def _update_owners(self) -> None:
        """Where each VIP (of the kernel's services and the configured ones it lacks) is held, and for
        which vrrp_instance: from the watcher's address list, so no netlink in this thread."""
        if self.held is None:
            self.owners = self._owners_for = None
            return
        layout = self.snapshot.layout if self.snapshot is not None else None
        # The same services and addresses held give the same owners: kept until one changes. Not
        # with a configuration compared: its missing services come from each poll's drift report.
        owners_for = (layout, dict(self.held)) if layout is not None and self.drift is None else None
        if owners_for is not None and owners_for == self._owners_for:
            return
        services = list(self.snapshot.services) if self.snapshot is not None else []
        if self.drift is not None:
            services += [configured.key for configured in self.drift.missing_services]
        owners = vips.vip_owners(services, self.held.items(), self.configs.vrrp_instances)
        self.owners = {owner.address: owner for owner in owners.values()}
        self._owners_for = owners_for

    def _settle_pending(self, snapshot: Snapshot) -> None:
        self.changes.settle(snapshot)

    @property
    def pending(self) -> dict[DestKey, PendingChange]:
        return self.changes.pending

    @property
    def drained(self) -> dict[DestKey, int]:
        return self.changes.drained

    def apply_result(self, result: CommandResult) -> None:
        self.changes.apply_result(result)
        self.refresh()

    def tick(self) -> None:
        """Once a second: poll age, expiring messages, connection countdowns."""
        self.ipvsmand.tick(self.clock())
        self.status.refresh()
        self.refresh_header()
        if isinstance(self.view, (ConnectionsView, SyncView)):
            self.refresh_view()

    def _on_tick(self, loop, _data=None) -> None:
        self._apply_pending_sample()
        self.tick()
        self.collect_garbage_if_idle()
        self._tick_alarm = loop.set_alarm_in(TICK_SECONDS, self._on_tick)

    def collect_garbage_if_idle(self) -> float | None:
        """A scheduled full collection, unless a key came within the last second (the user is busy)."""
        if time.monotonic() - self._last_key_at < KEY_QUIET_SECONDS:
            return None
        return self.collector.collect_if_due()

    def on_director_sample(self, sample: DirectorSample) -> None:
        """Watcher thread: keep the newest sample. The loop is woken only when VIP ownership or an
        error is new; health figures ride along with the next snapshot or tick (a redraw a
        second saved)."""
        with self._lock:
            self._pending_sample = sample
            news = sample.held != self._held_reported or not self._errors_reported.issuperset(sample.errors)
            self._held_reported = sample.held
            self._errors_reported.update(sample.errors)
            if not news or self._sample_scheduled or self.loop is None:
                return
            self._sample_scheduled = True
        try:
            self.loop.call_from_thread(self._apply_pending_sample)
        except RuntimeError:
            pass  # the loop has stopped

    def _apply_pending_sample(self) -> None:
        with self._lock:
            sample, self._pending_sample, self._sample_scheduled = self._pending_sample, None, False
        if sample is not None:
            self.apply_director(sample)

    def apply_director(self, sample: DirectorSample) -> None:
        held_changed = sample.held != self.held
        self.health = sample.health
        self.held = sample.held
        if held_changed:
            self._update_owners()
        for error in sample.errors:
            if error not in self._director_errors:  # said once, not every second
                self._director_errors.add(error)
                self.status.post(error, "warn")
        if held_changed:
            if self.watcher is not None:
                self.watcher.interfaces = tuple(self.vip_interfaces())
            self.refresh_view()
        self.refresh_header()

    def vip_interfaces(self) -> list[str]:
        if not self.held or self.snapshot is None:
            return []
        return sorted({self.held[s.key.address] for s in self.snapshot.services if s.key.address in self.held})

    # -- state-changing commands ------------------------------------------------------------------
    def read_only_reason(self) -> str | None:
        if _option(self.options, "read_only", False):
            return "read-only mode (--read-only)"
        if self.snapshot is not None and not self.snapshot.writable:
            reason = getattr(self.backend, "read_only_reason", None) if self.backend is not None else None
            return reason or "changes are not permitted"
        return None

    def submit(self, command: Command) -> None:
        if self.poller is None:
            self.status.post(f"{command.describe()}: not connected to a poller", "error")
            return
        self.poller.submit(command)

    def selected_dest(self) -> DestKey | None:
        selection = self.view.selection()
        return selection if isinstance(selection, DestKey) else None

    def _weight_target(self, action: str) -> tuple[DestKey, int] | None:
        """The selected real server and its weight (as last requested), or None after saying why not."""
        return self.changes.weight_target(self.view.selection(), action)

    def set_weight(self, key: DestKey, old: int, new: int) -> None:
        if self.changes.set_weight(key, old, new):
            self.refresh_view()

    def change_weight(self, step: int) -> None:
        if self.changes.change_weight(self.view.selection(), step):
            self.refresh_view()

    def toggle_drain(self) -> None:
        if self.changes.toggle_drain(self.view.selection()):
            self.refresh_view()

    # -- real servers from the topology: add (a) and remove (x), worked out in ipvsman.ui.changes ---
    def add_dest(self) -> None:
        """`a`: offer the real servers the topology lists for the selected service and the kernel lacks."""
        offer = self.changes.offer_add(self.view.selection())
        if offer is None:
            return
        dialog = ChoiceDialog(offer.title, list(offer.entries),
                              [("key", " Enter"), " adds   ", ("key", "Esc"), " adds nothing"])  # fmt: skip
        if offer.preselect is not None:
            dialog.select(offer.preselect)
        self._choice_service = offer.service
        self.open_dialog(dialog)

    def apply_choice(self) -> None:
        dialog = self.dialog
        if not isinstance(dialog, ChoiceDialog):
            return
        dest = dialog.chosen()
        key = self._choice_service
        self.close_dialog()
        self.changes.add(key, dest)

    def remove_dest(self) -> None:
        """`x`: remove the selected real server once the operator says y."""
        removal = self.changes.ask_remove(self.view.selection())
        if removal is None:
            return
        self.open_dialog(ConfirmDialog("Remove a real server", removal.question, removal.details,
                                       on_yes=lambda: self._submit_remove(removal.key)))  # fmt: skip

    def _submit_remove(self, key: DestKey) -> None:
        self.changes.remove(key)

    def _confirm_table_read(self, title: str, question: str, go: Callable[[], None]) -> None:
        self.open_dialog(ConfirmDialog(title, question, on_yes=go, no_message="connection table not read"))

    def confirm_no(self) -> None:
        """`n` (or Esc) to a ConfirmDialog: its no_message, then its on_no; the question carries both."""
        dialog = self.dialog
        confirm = dialog if isinstance(dialog, ConfirmDialog) else None
        self.close_dialog(confirm.no_message if confirm else "nothing changed")
        if confirm is not None and confirm.on_no is not None:
            confirm.on_no()

    def confirm_yes(self) -> None:
        dialog = self.dialog
        self.close_dialog()
        if isinstance(dialog, ConfirmDialog) and dialog.on_yes is not None:
            dialog.on_yes()

    # -- dialogs ----------------------------------------------------------------------------------
    def open_dialog(self, dialog: Dialog) -> None:
        if self.help is not None:
            self.close_help()
        self.dialog = dialog
        cols, rows = self._size
        width = min(cols - 2, max(60, cols * 4 // 5))
        overlay = urwid.Overlay(dialog, self.frame, "center", width, "middle", dialog.height(width, rows))
        self.top.set_body(overlay)

    def close_dialog(self, message: str | None = None) -> None:
        was_open = self.dialog is not None
        self.dialog = None
        self.top.set_body(self.frame)
        if message and was_open:
            self.status.post(message)

    # -- drift and details ------------------------------------------------------------------------
    def toggle_drift_only(self) -> None:
        source = self.configs.drift_source
        if source is None or self.drift is None:
            self.status.post("drift: nothing to compare the kernel with (--keepalived FILE or --topology FILE)", "warn")
            return
        self.drift_only = not self.drift_only
        if self.drift_only:
            count = len(self.drift.affected_services)
            self.status.post(f"drift only: {count} service{'s' if count != 1 else ''} differ from {source.path}")
        else:
            self.status.post("all services shown")
        self.refresh_header()
        self.refresh_view()

    def show_details(self) -> None:
        selection = self.view.selection()
        if selection is None:
            self.status.post("details: select a row first", "warn")
            return
        title, lines = self.details_of(selection)
        self.open_dialog(DetailsDialog(title, lines))

    def details_of(self, selection) -> tuple[str, list]:
        """The title and lines of the `i` overlay for a row of views 1-3."""
        names, report = self.names, self.drift
        lines: list = []
        if isinstance(selection, tuple) and len(selection) == 2 and selection[0] in ("vip", "rs"):
            kind, address = selection
            if kind == "rs":
                return f"Real server {host_label(address, names)}", self._server_details(address)
            if not address:
                return "Firewall-mark services", ["Firewall-mark services have no virtual address."]
            return f"VIP {host_label(address, names)}", self._vip_details(address)
        key = selection[1] if _is_missing(selection) else selection
        service_key = key.service if isinstance(key, DestKey) else key
        if isinstance(key, DestKey):
            title = f"Real server {server_label(key, names)} of {service_title(service_key, names)}"
            dest = self.snapshot.find_dest(key) if self.snapshot is not None else None
            if dest is not None:
                method = FORWARD_LABELS.get(dest.forward, dest.forward)
                lines.append(f"kernel: weight {dest.weight}, {method}, {fmt_count(dest.active_conns)} active, "
                             f"{fmt_count(dest.inactive_conns)} inactive connections")  # fmt: skip
                restored = reload_restores_weight(self.configs.keepalived, key, dest.weight)
                if restored is not None:
                    lines.append(f"keepalived's next reload sets it back to weight {restored}")
            else:
                lines.append("kernel: not there")
            for config in self.configs.loaded():
                configured = config.find_dest(key)
                if configured is not None:
                    method = FORWARD_LABELS.get(configured.forward, configured.forward)
                    named = f"named {configured.name}, " if configured.name else ""
                    lines.append(f"{os.path.basename(config.path)}: {named}weight {configured.weight}, {method}"
                                 f" ({configured.origin})")  # fmt: skip
            lines += self.ipvsmand.details(key)
            drain = self.drains.statuses.get(key)
            lines += [drain.describe()] if drain is not None else []
            drifts = report.for_dest(key) if report is not None else ()
        else:
            title = f"Service {service_title(service_key, names)}"
            service = self.snapshot.find_service(service_key) if self.snapshot is not None else None
            if service is not None:
                persistence = f"persistent {service.persistent}s" if service.persistent is not None else "not persistent"
                lines.append(f"kernel: {service_key}, scheduler {service.scheduler}, {persistence}, "
                             f"{len(service.dests)} real servers")  # fmt: skip
            else:
                lines.append(f"kernel: {service_key} is not there")
            for config in self.configs.loaded():
                configured = config.find_service(service_key)
                if configured is not None:
                    named = f"named {configured.name}, " if configured.name else ""
                    lines.append(f"{os.path.basename(config.path)}: {named}scheduler {configured.scheduler}, "
                                 f"{len(configured.dests)} real servers ({configured.origin})")  # fmt: skip
            owner = self.owners.get(service_key.address) if self.owners is not None else None
            if owner is not None:
                lines.append(f"VIP: {owner}")
            drifts = []
            if report is not None:
                drifts = list(report.for_service(service_key))
                drifts += [d for d in report.drifts if d.service == service_key and d.dest is not None]
        lines.append("")
        if report is None:
            lines.append("drift: no configuration to compare with (--keepalived, --topology)")
        elif not drifts:
            lines.append(f"no drift: the kernel agrees with {os.path.basename(self.configs.drift_source.path)}")
        else:
            lines.append(("drift.text", f"DRIFT against {os.path.basename(self.configs.drift_source.path)}:"))
            lines += [f"  {drift}" for drift in drifts]
        return title, lines

    def _vip_details(self, address: str) -> list:
        owner = self.owners.get(address) if self.owners is not None else None
        if owner is None:
            lines = ["held here: unknown (the local addresses are not read yet, or could not be)"]
        else:
            where = f"held here on {owner.interface}" if owner.interface else "not held here"
            vrrp = f", VRRP instance {owner.vrrp_instance}" if owner.vrrp_instance else ""
            lines = [f"{where}{vrrp}"]
        services = [s for s in (self.snapshot.services if self.snapshot is not None else ()) if s.key.address == address]
        lines += [f"{service_title(s.key, self.names)}: {s.scheduler}, {len(s.dests)} real servers" for s in services]
        missing = [c for c in (self.drift.missing_services if self.drift is not None else ()) if c.key.address == address]
        lines += [f"{service_title(c.key, self.names)}: MISSING, configured ({c.origin})" for c in missing]
        return lines

    def _server_details(self, address: str) -> list:
        lines = []
        for service in self.snapshot.services if self.snapshot is not None else ():
            for dest in service.dests:
                if dest.address == address:
                    key = service.dest_key(dest)
                    drifts = self.drift.for_dest(key) if self.drift is not None else ()
                    marks = "; ".join(drift_text(d, self.names, subject=False) for d in drifts)
                    lines.append(f"{service_title(service.key, self.names)} -> :{dest.port} weight {dest.weight}"
                                 + (f"  DRIFT {marks}" if marks else ""))  # fmt: skip
        return lines or ["in no service of the kernel"]

    def run_sync_hook(self, command: str) -> None:
        """R and T: a resync (after y/n) or a sync test in its own thread (ipvsman.sync.resync.SyncJob); Esc cancels."""
        label = SYNC_LABELS[command]
        reason = self._sync_refusal(label)
        if reason:
            self.status.post(reason, "warn")
            return
        resync = load_resync()
        state, netns = self.snapshot.state, _option(self.options, "netns", None)
        if command == "sync.resync":
            self.offer_resync(resync, state, netns)
            return
        try:
            settings = resync.sync_test_settings(state)  # the master daemon's; raises when there is none
        except resync.SyncConfigError as exc:
            self.status.post(f"{label}: {exc}", "error")
            return
        self._start_job(
            resync.SyncJob.sync_test(
                settings, self.on_job_done, services=state.services, daemons=state.daemons, netns=netns
            ),
            f"{label}: started ({settings.describe()}); Esc cancels",
        )

    def _sync_refusal(self, label: str) -> str | None:
        """Why R or T cannot run now (one line for the status bar), or None."""
        reason = self.read_only_reason()
        if reason:
            return f"{label} disabled: {reason}"
        if load_resync() is None:
            return f"{label}: not available yet"
        if getattr(self.backend, "name", "") == "demo" or (self.snapshot and self.snapshot.backend == "demo"):
            return f"{label}: not in the demo (it would send to the real network)"
        if self.snapshot is None:
            return f"{label}: wait for the first poll"
        if self.job is not None and self.job.is_alive():
            return f"{self.job.label} still running (Esc cancels it)"
        if self._planning is not None:
            return "resync: still reading the connection table (Esc cancels it)"
        return None

    def resync_target(self) -> tuple[ServiceKey | None, DestKey | None]:
        """The service or real server whose connections R sends: the selected row of views 1-3, else all."""
        if self.view.context != "servers":
            return None, None
        selection = self.view.selection()
        if isinstance(selection, DestKey):
            return None, selection
        if isinstance(selection, ServiceKey):
            return selection, None
        return None, None  # a VIP or real-server host row (several services): the whole table

    def offer_resync(self, resync, state, netns: str | None) -> None:
        """`R`: work out what would be sent (in a thread: packing a large table takes seconds), then ask y/n."""
        selection = self.view.selection() if self.view.context == "servers" else None
        if _is_missing(selection):
            self.status.post(f"resync: {selection[1]} is not in the kernel: it has no connections", "warn")
            return
        service, real_server = self.resync_target()
        try:  # the quick refusals (no master daemon, no connection table) at once, without the table
            resync.sync_test_settings(state)
            if state.connections is None:
                resync.plan_resync(state)  # says why
        except resync.SyncConfigError as exc:
            self.status.post(f"resync: {exc}", "error")
            return
        hint = service is None and real_server is None and self.view.context == "servers"

        def work():
            try:
                return resync.plan_resync(state, service=service, real_server=real_server, netns=netns), None
            except resync.SyncConfigError as exc:
                return None, f"resync: {exc}"
            except Exception as exc:  # the answer must always come back, or R would stay busy
                return None, f"resync: cannot plan it: {type(exc).__name__}: {exc}"

        token = object()
        self._planning = token
        if self.loop is None:  # no loop to hand a thread's result to (tests, --once): plan here
            self.ask_resync(token, *work(), hint)
            return
        self.status.post(f"resync: reading {len(state.connections)} connections; Esc cancels")

        def plan_in_thread():
            plan, error = work()
            try:
                self.loop.call_from_thread(self.ask_resync, token, plan, error, hint)
            except RuntimeError:
                pass  # the loop has stopped: nobody to ask

        self._planner = threading.Thread(target=plan_in_thread, name="ipvsman-resync-plan", daemon=True)
        self._planner.start()

    def ask_resync(self, token, plan, error: str | None, hint: bool) -> None:
        """The plan is ready: ask y/n with the count, selection, group, port, interface and syncid."""
        if token is not self._planning:  # cancelled (Esc) while it was planned
            return
        self._planning = None
        if error is not None:
            self.status.post(error, "error")
            return
        if plan.connections == 0:
            left_out = f"; {plan.skipped_text()}" if plan.skipped else ""
            self.status.post(f"resync: nothing to resync: no connections ({plan.selection}){left_out}", "warn")
            return
        if self.dialog is not None or self.help is not None or self.prompt is not None:
            self.status.post("resync: close what is open and press R again", "warn")  # it would be hidden under
            return
        plural = "s" if plan.connections != 1 else ""
        question = f"send {plan.connections} connection{plural} ({plan.selection}) to the backup directors? y/n"
        detail = [plan.describe()]
        if hint:
            detail.append("select a service or real server first to send only its connections")
        detail.append("Esc cancels the send while it runs")
        self.open_dialog(ConfirmDialog("Resync", question, "\n".join(detail), on_yes=lambda: self.start_resync(plan),
                                       no_message="resync: nothing sent"))  # fmt: skip

    def start_resync(self, plan) -> None:
        """`y` on the resync question: send the plan in a job of its own, progress in the status bar."""
        reason = self._sync_refusal("resync")  # the answer may have taken a while: look again
        if reason:
            self.status.post(reason, "warn")
            return
        resync = load_resync()
        with self._lock:
            self._progress, self._progress_scheduled = None, False
        self._progress_message, self._showing_progress = None, True
        job = resync.SyncJob.resync(plan, on_progress=self.on_job_progress, on_done=self.on_job_done)
        self._start_job(job, f"resync: sending {plan.connections} connections ({plan.selection}); Esc cancels")

    def _start_job(self, job, message: str) -> None:
        self.job = job
        job.start()
        self.status.post(message)

    def on_job_progress(self, progress) -> None:
        """The sync job's thread: keep the newest progress and have at most one repaint waiting in the loop."""
        with self._lock:
            self._progress = progress
            if self._progress_scheduled or self.loop is None:
                return
            self._progress_scheduled = True
        try:
            self.loop.call_from_thread(self._apply_progress)
        except RuntimeError:  # the loop has stopped: nothing left to draw on
            with self._lock:
                self._progress_scheduled = False

    def _apply_progress(self) -> None:
        with self._lock:
            progress, self._progress, self._progress_scheduled = self._progress, None, False
        if progress is not None:
            self.show_progress(progress)

    def show_progress(self, progress) -> None:
        """One status line per send; the previous progress line leaves the history, so it keeps real messages."""
        job = self.job
        if job is None or not self._showing_progress:  # the outcome is on the line already
            return
        text = progress.describe() + ("; cancelling" if job.cancelled else "; Esc cancels")
        history = self.status.history
        if self._progress_message is not None and history and history[-1] is self._progress_message:
            history.pop()
        self.status.post(text, seconds=PROGRESS_SECONDS)
        self._progress_message = history[-1]

    def on_job_done(self, outcome) -> None:
        """The sync job's thread: hand the outcome to the loop."""
        if self.loop is None:
            return
        try:
            self.loop.call_from_thread(self.apply_job_outcome, outcome)
        except RuntimeError:
            pass

    def apply_job_outcome(self, outcome) -> None:
        with self._lock:
            self._progress = None  # a repaint still waiting has nothing left to show
        history = self.status.history
        if self._progress_message is not None and history and history[-1] is self._progress_message:
            history.pop()  # the outcome says how far it came
        self._progress_message, self._showing_progress = None, False
        self.status.post(outcome.message, "info" if outcome.ok else "error")

    # -- other commands -------------------------------------------------------------------------
    def toggle_pause(self) -> None:
        if self.poller is None:
            return
        if self.poller.paused:
            self.poller.resume()
            self.status.post("polling resumed")
        else:
            self.poller.pause()
            self.status.post(f"polling paused ({key_label(self.keymap.keys_for('poll.pause')[0])} resumes)")
        self.refresh_header()

    def toggle_names(self) -> None:
        shown = self.names.toggle()
        self.status.post("names shown" if shown else "numeric addresses")
        self.refresh_view()

    def toggle_help(self) -> None:
        if self.help is not None:
            self.close_help()
            return
        self.help = HelpOverlay(self.keymap)
        overlay = urwid.Overlay(
            self.help, self.frame, "center", ("relative", 90), "middle", ("relative", 85), min_width=60
        )
        self.top.set_body(overlay)

    def close_help(self) -> None:
        self.help = None
        self.top.set_body(self.frame)

    def cancel(self) -> None:
        if self._planning is not None:
            self._planning = None  # its plan is dropped when it comes
            self.status.post("resync: cancelled, nothing sent")
            return
        if self.job is not None and self.job.is_alive() and not self.job.cancelled:
            self.job.cancel()
            self.status.post(f"{self.job.label}: cancelling")
            return
        view = self.view
        if isinstance(view, ConnectionsView) and view.filter:
            view.set_filter("")
            self.status.post("filter cleared")

    def reload_ipvsmand(self) -> None:
        """`H`: SIGHUP to ipvsmand after y/n naming its pid and topology (ipvsman.ui.ipvsmand)."""
        question = self.ipvsmand.ask_reload()
        if question is not None:
            self.open_dialog(ConfirmDialog("Reload ipvsmand", *question, on_yes=self.ipvsmand.reload,
                                           no_message="ipvsmand not reloaded"))  # fmt: skip

    def quit(self) -> None:
        raise urwid.ExitMainLoop()

    # -- connections --------------------------------------------------------------------------
    def connections_of_selection(self) -> None:
        selection = self.view.selection()
        if _is_missing(selection):
            self.status.post(f"{selection[1]} is not in the kernel: it has no connections", "warn")
            return
        text = self.filter_for(selection)
        if text is None:
            self.status.post("select a VIP, service or real server first", "warn")
            return
        view = self.view_named("connections")
        view.set_filter(text)
        self.show_view(view)

    def filter_for(self, selection) -> str | None:
        """The connection filter that shows what a row of views 1-3 stands for."""
        services = self.snapshot.services if self.snapshot else ()
        if isinstance(selection, DestKey):
            server = join_host_port(selection.address, selection.port)
            if selection.service.fwmark:
                return f"r={server}"
            return f"proto={selection.service.protocol} v={selection.service.endpoint} r={server}"
        if isinstance(selection, ServiceKey):
            if selection.fwmark:
                service = next((s for s in services if s.key == selection), None)
                servers = [f"r={d.endpoint}" for d in (service.dests if service else ())]
                return " ".join(servers) or None
            return f"proto={selection.protocol} v={selection.endpoint}"
        if isinstance(selection, tuple) and len(selection) == 2 and selection[0] in ("vip", "rs"):
            kind, address = selection
            if kind == "rs":
                return f"r={address}"
            if address:
                return f"v={address}"
            servers = {f"r={d.endpoint}" for s in services if s.key.fwmark for d in s.dests}
            return " ".join(sorted(servers)) or None
        return None

    def open_filter(self) -> None:
        view = self.view
        if not isinstance(view, ConnectionsView):
            return
        self.prompt = FilterPrompt()
        self.prompt.start(view.filter.text)
        self.frame.footer = self.prompt

    def apply_filter(self) -> None:
        view = self.view_named("connections")
        text = self.prompt.value if self.prompt else ""
        try:
            view.set_filter(text)
        except ValueError as exc:
            self.status.post(f"filter: {exc}", "error")  # the prompt stays open with the text
            return
        self.close_filter()
        self.status.post(f"filter: {text.strip()}" if text.strip() else "filter cleared")

    def close_filter(self) -> None:
        self.prompt = None
        self.frame.footer = self.status

    def step_sort(self, step: int) -> None:
        self.view_named("connections").step_sort(step)

    def reverse_sort(self) -> None:
        self.view_named("connections").reverse_sort()


def run(options: argparse.Namespace, backend, cluster: ClusterControl | None = None) -> int:
    """Run the dashboard until `q`; returns the exit status. With `cluster`, `backend` is its ClusterSource."""
    from ipvsman.poller import Poller

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("ipvsman: the dashboard needs a terminal (use --once for scripts)", file=sys.stderr)
        return 2
    demo = getattr(backend, "name", "") == "demo"
    try:
        audit = audit_log_for(_option(options, "audit_log", None), backend, _option(options, "netns", None))
    except AuditLogError as exc:
        print(f"ipvsman: {exc}", file=sys.stderr)
        return 2
    configs = load_configurations(options, demo)
    if demo:
        sync_panel = SyncPanel(None, off_reason=DEMO_MONITOR_OFF)
    else:
        sync_panel = SyncPanel(netns=_option(options, "netns", None))
    dashboard = Dashboard(
        options,
        backend=backend,
        audit=audit,
        configs=configs,
        sync_panel=sync_panel,
        cluster=cluster,
    )
    names = make_names(options, demo, dashboard.on_names_update, configs)
    dashboard.names = names
    dashboard.refresh()
    addresses = load_local_addresses(options) if cluster is None else cluster.selected_addresses
    watcher = DirectorWatcher(dashboard.on_director_sample, addresses, HealthSampler())
    dashboard.watcher = watcher
    poller = cluster or Poller(
        backend,
        dashboard.on_snapshot,
        dashboard.on_result,
        interval=_option(options, "interval", 1.0),
        connections=_option(options, "connections", True),
        conn_budget=_option(options, "conn_budget", DEFAULT_BUDGET),
    )
    dashboard.poller = poller
    screen = urwid.display.raw.Screen()
    screen.set_terminal_properties(colors=color_depth(_option(options, "colors", None), screen.colors))
    loop = urwid.MainLoop(dashboard.top, PALETTE, screen=screen, handle_mouse=True)
    dashboard.attach(loop)
    # The threads start once the loop runs: call_from_thread refuses calls before that.
    if demo:
        dashboard.ipvsmand.use_demo()
    loop.set_alarm_in(0, lambda *_: (poller.start(), watcher.start(), dashboard.ipvsmand.start(loop)))
    status = 0
    dashboard.collector.start()
    try:
        loop.run()
    except KeyboardInterrupt:
        status = 130
    finally:
        dashboard.collector.stop()
        if dashboard.job is not None:
            dashboard.job.cancel()
        watcher.stop()
        poller.stop()
        sync_panel.stop()
        dashboard.ipvsmand.stop()
        if names.resolver is not None:
            names.resolver.close()
        dashboard.drain_results()  # results that arrived as the loop stopped still reach the audit log
        audit.release()  # lines held for stderr while the dashboard had the terminal
    return status

