"""The dashboard's controller: owns the MainLoop, the views and the commands the keymap names.

Snapshots come from the polling thread through MainLoop.call_from_thread; only the newest
waiting one is drawn when the screen falls behind. Keys become commands (poller.SetWeight and
friends) submitted to the poller; no widget is touched outside the loop's thread.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import urwid

from ipvsman import keepalived, topology, vips
from ipvsman import names as names_module
from ipvsman.model import WEIGHT_MAX, DestKey, ServiceKey, Snapshot, join_host_port
from ipvsman.poller import Command, CommandResult, SetWeight
from ipvsman.ui.audit import AuditLog
from ipvsman.ui.health import DirectorSample, DirectorWatcher, HealthSampler, describe
from ipvsman.ui.help import HelpOverlay
from ipvsman.ui.keymap import KEYMAP, key_label
from ipvsman.ui.palette import PALETTE, color_depth
from ipvsman.ui.status import FilterPrompt, Header, StatusBar
from ipvsman.ui.views import Names, View, ViewContext
from ipvsman.ui.views.bindings import BindingsView
from ipvsman.ui.views.connections import ConnectionsView
from ipvsman.ui.views.realservers import RealServersView
from ipvsman.ui.views.sync import SyncView
from ipvsman.ui.views.virtual import VirtualServersView
from ipvsman.ui.widgets import fmt_age

MIN_COLS, MIN_ROWS = 80, 24
WIDE_COLS = 100  # from here on the tab bar has room for the views' full titles
TICK_SECONDS = 1.0
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


def _option(options: argparse.Namespace, name: str, default):
    return getattr(options, name, default)


def load_names(options: argparse.Namespace, demo: bool, on_update: Callable[[], None]) -> tuple[Names | None, list[str]]:
    """Names from ipvsman.names (configuration, /etc/hosts, reverse DNS), and what went wrong.

    The demo's addresses are made up, so the demo never asks DNS about them.
    """
    try:
        resolver = names_module.NameResolver(lookup=None if demo else names_module.reverse_dns, on_update=on_update)
        labels = names_module.Names(resolver)
    except Exception as exc:  # names are a comfort: the dashboard runs numeric without them
        return None, [f"names: {exc}"]
    errors = []
    sources = [
        (_option(options, "topology", None), topology.read_topology),
        (_option(options, "keepalived", None) or keepalived.default_path(), keepalived.read_keepalived),
    ]
    for path, read in sources:
        if not path:
            continue
        try:
            labels.add_configuration(read(path))
        except Exception as exc:  # a file that does not parse must not stop the dashboard
            errors.append(f"names from {path}: {exc}")
    return ResolverNames(labels), errors


class ResolverNames(Names):
    """Adapts ipvsman.names.Names to what the views ask: a name, or None when there is none."""

    def __init__(self, names):
        self.names = names

    def address(self, address: str) -> str | None:
        host = self.names.host(address)
        return None if host == address else host

    def service(self, key: ServiceKey) -> str | None:
        return self.names.service_name(key)

    def dest(self, key: DestKey) -> str | None:
        name = self.names.dest_name(key)
        return None if name in (None, key.address) else name

    def close(self) -> None:
        if self.names.resolver is not None:
            self.names.resolver.close()


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


# ---- HOOK: sync monitor panel (ipvsman.sync.monitor.SyncMonitor, written by another helper) ----
def sync_monitor_lines() -> list[str] | None:
    """Lines for the sync view's monitor panel; None until ipvsman.sync.monitor is wired in here."""
    return None


@dataclass
class PendingChange:
    old: int
    new: int
    outstanding: int = 1  # commands sent and not answered yet


class DashboardWidget(urwid.WidgetWrap):
    """The top widget: hands keys and mouse events to the controller, and draws a one-line
    notice instead of the dashboard when the terminal is too small (nothing is lost)."""

    def __init__(self, controller: Dashboard, body: urwid.Widget):
        self.controller = controller
        super().__init__(body)

    def set_body(self, body: urwid.Widget) -> None:
        self._w = body

    @property
    def body(self) -> urwid.Widget:
        return self._w

    def selectable(self) -> bool:
        return True

    def render(self, size, focus=False):
        cols, rows = size
        if cols < MIN_COLS or rows < MIN_ROWS:
            notice = urwid.Text(("toosmall", f"terminal too small: need {MIN_COLS}x{MIN_ROWS}, have {cols}x{rows}"),
                                wrap="clip")
            return urwid.Filler(notice, valign="top").render(size, focus)
        self.controller.set_width(cols)
        return super().render(size, focus)

    def keypress(self, size, key):
        return self.controller.keypress(size, key)

    def mouse_event(self, size, event, button, col, row, focus):
        return self.controller.mouse_event(size, event, button, col, row, focus)


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
    ):
        self.options = options
        self.poller = poller
        self.backend = backend
        self.clock = clock
        self.hostname = hostname or socket.gethostname()
        if _option(options, "netns", None):
            self.hostname += f" netns {options.netns}"
        self.watcher = watcher
        self.resolver = names
        self.names_on = not _option(options, "no_resolve", False)
        self.audit = audit if audit is not None else AuditLog(_option(options, "audit_log", None))
        self.weight_step = _option(options, "weight_step", 1)
        self.keymap = KEYMAP
        self.loop: urwid.MainLoop | None = None

        self.views: list[View] = [cls() for cls in VIEW_CLASSES]
        self.view = self.views[0]
        self.snapshot: Snapshot | None = None
        self.data_taken_at = 0.0  # when the state on screen was read (not when a paused snapshot came)
        self.pending: dict[DestKey, PendingChange] = {}
        self.drained: dict[DestKey, int] = {}
        self.held: dict[str, str] | None = None
        self.health = None
        self.width = 100
        self._director_errors: set[str] = set()
        self._last_error: str | None = None
        self._size: tuple[int, int] = (100, 30)

        self.header = Header()
        self.status = StatusBar(clock)
        self.prompt: FilterPrompt | None = None
        self.job = None  # the running resync or sync test (ipvsman.sync.resync.SyncJob)
        self.help: HelpOverlay | None = None
        self.frame = urwid.Frame(self.view.widget, header=self.header, footer=self.status)
        self.top = DashboardWidget(self, self.frame)
        self.commands = self._register_commands()

        self._lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._apply_scheduled = False
        self._names_scheduled = False
        self._results: collections.deque[CommandResult] = collections.deque()
        self.refresh()

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
                "sync.resync": lambda: self.run_sync_hook("sync.resync"),
                "sync.test": lambda: self.run_sync_hook("sync.test"),
                "help.toggle": self.toggle_help,
                "help.close": self.close_help,
                "app.cancel": self.cancel,
                "app.quit": self.quit,
                "weight.up": lambda: self.change_weight(+self.weight_step),
                "weight.down": lambda: self.change_weight(-self.weight_step),
                "weight.drain": self.toggle_drain,
                "connections.of_selection": self.connections_of_selection,
                "connections.filter": self.open_filter,
                "connections.sort_next": lambda: self.step_sort(1),
                "connections.sort_previous": lambda: self.step_sort(-1),
                "connections.sort_reverse": self.reverse_sort,
                "filter.apply": self.apply_filter,
                "filter.cancel": self.close_filter,
            }
        )
        return commands

    def contexts(self) -> list[str]:
        if self.prompt is not None:
            return ["filter"]
        if self.help is not None:
            return ["help", "global"]
        return [self.view.context, "global"] if self.view.context != "global" else ["global"]

    def keypress(self, size, key: str) -> str | None:
        self._size = size
        command = self.keymap.lookup(key, self.contexts())
        if command is None:
            if self.prompt is not None:
                return self.prompt.edit.keypress((max(1, size[0] - 2),), key)
            return key
        if self.help is not None and not command.startswith(("nav.", "help.")):
            self.close_help()
        self.commands[command]()
        return None

    def mouse_event(self, size, event, button, col, row, focus) -> bool:
        self._size = size
        if event == "mouse press" and button in WHEEL_BUTTONS:
            return self.keypress(size, WHEEL_BUTTONS[button]) is None
        return bool(self.top.body.mouse_event(size, event, button, col, row, focus))

    def navigate(self, key: str) -> None:
        self.top.body.keypress(self._size, key)

    # -- views --------------------------------------------------------------------------------
    def show_view(self, view: View) -> None:
        if self.prompt is not None:
            self.close_filter()
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
            self.refresh_view()

    def context(self) -> ViewContext:
        return ViewContext(
            now=self.clock(),
            names=self.resolver if (self.resolver is not None and self.names_on) else Names(),
            held=self.held,
            pending={key: (change.old, change.new) for key, change in self.pending.items()},
            drained=dict(self.drained),
            interval=_option(self.options, "interval", 1.0),
            read_connections=_option(self.options, "connections", True),
            messages=tuple(self.status.history),
            sync_panel=sync_monitor_lines(),
        )

    def refresh_view(self) -> None:
        self.view.width = self.width
        self.view.update(self.snapshot, self.context())

    def refresh(self) -> None:
        self.refresh_header()
        self.refresh_hint()
        self.refresh_view()

    def refresh_hint(self) -> None:
        markup = []
        for commands, text in HINTS.get(self.view.context, []) + COMMON_HINTS:
            keys = "/".join(key_label(self.keymap.keys_for(command)[0]) for command in commands)
            markup += [("key", f" {keys}"), ("hint", f" {text} ")]
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
                # A poll overdue by several intervals (a slow kernel, a stuck netlink call) stands out.
                late = seconds > max(5.0, 3 * _option(self.options, "interval", 1.0))
                attr = "header.error" if late else "header.dim"
                self.header.set_poll((attr, f"poll #{snapshot.seq} {age} ago{took}{' (late)' if late else ''} "))
        self.header.set_health(describe(self.health, max_interfaces=2 if self.width >= WIDE_COLS else 1))
        wide = self.width >= WIDE_COLS
        keys = f"{key_label(self.keymap.keys_for('help.toggle')[0])} help " if wide else ""
        tabs = [(view.name, view.title if wide else view.short_title) for view in self.views]
        self.header.set_tabs(tabs, self.view.name, keys)

    # -- from the polling thread --------------------------------------------------------------
    def attach(self, loop: urwid.MainLoop) -> None:
        self.loop = loop
        loop.set_alarm_in(TICK_SECONDS, self._on_tick)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Polling thread: keep the newest snapshot and have at most one apply waiting in the loop."""
        with self._lock:
            self._latest = snapshot
            if self._apply_scheduled or self.loop is None:
                return
            self._apply_scheduled = True
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
        if self.names_on:
            self.refresh_view()

    def _apply_latest(self) -> None:
        with self._lock:
            snapshot, self._apply_scheduled = self._latest, False
        if snapshot is not None and snapshot is not self.snapshot:
            self.apply_snapshot(snapshot)

    def drain_results(self) -> None:
        while self._results:
            self.apply_result(self._results.popleft())

    # -- in the loop's thread -------------------------------------------------------------------
    def apply_snapshot(self, snapshot: Snapshot) -> None:
        if self.snapshot is None or snapshot.state is not self.snapshot.state:
            self.data_taken_at = snapshot.taken_at  # paused snapshots repeat the last state: its age grows
        self.snapshot = snapshot
        if snapshot.error and snapshot.error != self._last_error:
            self.status.post(f"poll: {snapshot.error}", "error")
        self._last_error = snapshot.error
        self._settle_pending(snapshot)
        if self.watcher is not None:
            self.watcher.interfaces = tuple(self.vip_interfaces())
        self.refresh()

    def _settle_pending(self, snapshot: Snapshot) -> None:
        for key, change in list(self.pending.items()):
            if change.outstanding:
                continue
            dest = snapshot.find_dest(key)
            del self.pending[key]
            self.status.set_pending(key, None)
            if dest is None:
                self.status.post(f"{key}: real server gone, weight {change.new} not confirmed", "warn")
            elif dest.weight == change.new:
                self.status.post(f"confirmed: weight of {key} is {change.new}")
            else:
                self.status.post(f"weight of {key} is {dest.weight}, not {change.new} as set", "warn")
        for key in list(self.drained):
            dest = snapshot.find_dest(key)
            if (dest is None or dest.weight != 0) and key not in self.pending:
                del self.drained[key]  # gone, or raised since: nothing to restore any more

    def apply_result(self, result: CommandResult) -> None:
        command = result.command
        if isinstance(command, SetWeight):
            outcome = "ok" if result.ok else f"refused: {result.message}"
            error = self.audit.record(command.dest, command.old_weight, command.new_weight, outcome)
            if error:
                self.status.post(error, "warn")
            change = self.pending.get(command.dest)
            if change is not None:
                change.outstanding = max(0, change.outstanding - 1)
                if not result.ok:
                    del self.pending[command.dest]
                    self.status.set_pending(command.dest, None)
        if result.ok:
            if not isinstance(command, SetWeight):
                self.status.post(result.message)
        else:
            self.status.post(result.message, "error")
        self.refresh()

    def tick(self) -> None:
        """Once a second: poll age, expiring messages, connection countdowns."""
        self.status.refresh()
        self.refresh_header()
        if isinstance(self.view, (ConnectionsView, SyncView)):
            self.refresh_view()

    def _on_tick(self, loop, _data=None) -> None:
        self.tick()
        loop.set_alarm_in(TICK_SECONDS, self._on_tick)

    def on_director_sample(self, sample: DirectorSample) -> None:
        """Watcher thread: hand the sample to the loop."""
        if self.loop is None:
            return
        try:
            self.loop.call_from_thread(self.apply_director, sample)
        except RuntimeError:
            pass  # the loop has stopped

    def apply_director(self, sample: DirectorSample) -> None:
        held_changed = sample.held != self.held
        self.health = sample.health
        self.held = sample.held
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
        key = self.selected_dest()
        if key is None:
            self.status.post(f"{action}: select a real server first (views 2 and 3 list them)", "warn")
            return None
        reason = self.read_only_reason()
        if reason:
            self.status.post(f"{action} disabled: {reason}", "warn")
            return None
        dest = self.snapshot.find_dest(key) if self.snapshot else None
        if dest is None:
            self.status.post(f"{action}: {key} is no longer there", "warn")
            return None
        change = self.pending.get(key)
        return key, change.new if change else dest.weight

    def set_weight(self, key: DestKey, old: int, new: int) -> None:
        change = self.pending.get(key)
        if change is None:
            self.pending[key] = PendingChange(old, new)
        else:
            change.new = new
            change.outstanding += 1
        pending = self.pending[key]
        self.status.set_pending(key, f"weight of {key} {pending.old} -> {pending.new}")
        self.submit(SetWeight(key, old, new))
        self.refresh_view()

    def change_weight(self, step: int) -> None:
        target = self._weight_target("weight change")
        if target is None:
            return
        key, current = target
        new = max(0, min(WEIGHT_MAX, current + step))
        if new == current:
            self.status.post(f"weight of {key} is already {current} (0..{WEIGHT_MAX})", "warn")
            return
        self.set_weight(key, current, new)

    def toggle_drain(self) -> None:
        target = self._weight_target("drain")
        if target is None:
            return
        key, current = target
        if current > 0:
            self.drained[key] = current
            self.set_weight(key, current, 0)
        elif key in self.drained:
            self.set_weight(key, 0, self.drained[key])
        else:
            self.status.post(f"{key} has weight 0 but was not drained here: nothing to restore (+ raises it)", "warn")

    def run_sync_hook(self, command: str) -> None:
        """R and T: a resync or sync test in its own thread (ipvsman.sync.resync.SyncJob); Esc cancels."""
        label = SYNC_LABELS[command]
        reason = self.read_only_reason()
        if reason:
            self.status.post(f"{label} disabled: {reason}", "warn")
            return
        resync = load_resync()
        if resync is None:
            self.status.post(f"{label}: not available yet", "warn")
            return
        if getattr(self.backend, "name", "") == "demo" or (self.snapshot and self.snapshot.backend == "demo"):
            self.status.post(f"{label}: not in the demo (it would send to the real network)", "warn")
            return
        if self.snapshot is None:
            self.status.post(f"{label}: wait for the first poll", "warn")
            return
        if self.job is not None and self.job.is_alive():
            self.status.post(f"{self.job.label} still running (Esc cancels it)", "warn")
            return
        state, netns = self.snapshot.state, _option(self.options, "netns", None)
        try:
            settings = resync.sync_test_settings(state)  # the master daemon's; raises when there is none
        except resync.SyncConfigError as exc:
            self.status.post(f"{label}: {exc}", "error")
            return
        if command == "sync.resync":

            def work(cancel):
                plan = resync.plan_resync(state, netns=netns)
                report = plan.run(cancel=cancel)
                return resync.JobOutcome(report.complete, plan.summary(report), report=report)

            self.job = resync.SyncJob(work, self.on_job_done, "resync")
        else:
            self.job = resync.SyncJob.sync_test(
                settings, self.on_job_done, services=state.services, daemons=state.daemons, netns=netns
            )
        self.job.start()
        self.status.post(f"{label}: started ({settings.describe()}); Esc cancels")

    def on_job_done(self, outcome) -> None:
        """The sync job's thread: hand the outcome to the loop."""
        if self.loop is None:
            return
        try:
            self.loop.call_from_thread(self.apply_job_outcome, outcome)
        except RuntimeError:
            pass

    def apply_job_outcome(self, outcome) -> None:
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
        if self.resolver is None:
            self.status.post("names: not available yet (numeric addresses only)", "warn")
            return
        self.names_on = not self.names_on
        self.status.post("names shown" if self.names_on else "numeric addresses")
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
        if self.job is not None and self.job.is_alive() and not self.job.cancelled:
            self.job.cancel()
            self.status.post(f"{self.job.label}: cancelling")
            return
        view = self.view
        if isinstance(view, ConnectionsView) and view.filter:
            view.set_filter("")
            self.status.post("filter cleared")

    def quit(self) -> None:
        raise urwid.ExitMainLoop()

    # -- connections --------------------------------------------------------------------------
    def connections_of_selection(self) -> None:
        selection = self.view.selection()
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


def run(options: argparse.Namespace, backend) -> int:
    """Run the dashboard until `q`; returns the exit status."""
    from ipvsman.poller import Poller

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("ipvsman: the dashboard needs a terminal (use --once for scripts)", file=sys.stderr)
        return 2
    dashboard = Dashboard(options, backend=backend, audit=AuditLog(_option(options, "audit_log", None)))
    names, errors = load_names(options, getattr(backend, "name", "") == "demo", dashboard.on_names_update)
    dashboard.resolver = names
    for error in errors:
        dashboard.status.post(error, "warn")
    watcher = DirectorWatcher(dashboard.on_director_sample, load_local_addresses(options), HealthSampler())
    dashboard.watcher = watcher
    poller = Poller(
        backend,
        dashboard.on_snapshot,
        dashboard.on_result,
        interval=_option(options, "interval", 1.0),
        connections=_option(options, "connections", True),
    )
    dashboard.poller = poller
    screen = urwid.display.raw.Screen()
    screen.set_terminal_properties(colors=color_depth(_option(options, "colors", None), screen.colors))
    loop = urwid.MainLoop(dashboard.top, PALETTE, screen=screen, handle_mouse=True)
    dashboard.attach(loop)
    # The threads start once the loop runs: call_from_thread refuses calls before that.
    loop.set_alarm_in(0, lambda *_: (poller.start(), watcher.start()))
    status = 0
    try:
        loop.run()
    except KeyboardInterrupt:
        status = 130
    finally:
        if dashboard.job is not None:
            dashboard.job.cancel()
        watcher.stop()
        poller.stop()
        if names is not None:
            names.close()
        dashboard.drain_results()  # results that arrived as the loop stopped still reach the audit log
    return status

