"""Keeps the sync monitor (ipvsman.sync.monitor) listening where the director's sync daemon is, for view 5.

The monitor is opened in a short-lived thread of its own, so joining the group (and entering a
network namespace) never holds up the screen; what goes wrong becomes the panel's one line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from ipvsman.model import Daemon

log = logging.getLogger(__name__)

# daemons, netns -> a monitor not yet started (SyncMonitor.for_daemons)
MonitorFactory = Callable[[Iterable[Daemon], "str | None"], object]


def default_factory(daemons: Iterable[Daemon], netns: str | None):
    from ipvsman.sync.monitor import SyncMonitor

    return SyncMonitor.for_daemons(daemons, netns=netns)


def listen_target(daemons: Iterable[Daemon]) -> tuple[str, str, int] | None:
    """(interface, group, port) the monitor listens on: the backup daemon's, else the master's
    (the choice SyncMonitor.for_daemons makes); None without a daemon."""
    daemons = list(daemons)
    chosen = next((d for d in daemons if d.state == "backup"), None) or next(
        (d for d in daemons if d.state == "master"), None
    )
    if chosen is None:
        return None
    return chosen.interface, chosen.group, chosen.port


class SyncPanel:
    """What view 5 shows of the sync monitor: its stats, or a line saying why there are none.

    `follow(daemons)` is called with every snapshot (in the UI thread): it starts a monitor on
    the first daemon's interface, and a new one when the daemons move. `factory` None means no
    monitor at all (tests, or a caller that does not want one) and `off_reason` says why.
    """

    def __init__(
        self,
        factory: MonitorFactory | None = default_factory,
        netns: str | None = None,
        off_reason: str = "off",
    ):
        self.factory = factory
        self.netns = netns
        self.off_reason = off_reason
        self.monitor = None
        self.target: tuple[str, str, int] | None = None
        self.error: str | None = None
        self._lock = threading.Lock()
        self._generation = 0
        self._opener: threading.Thread | None = None
        self._closed = False

    def follow(self, daemons: Iterable[Daemon]) -> None:
        if self.factory is None or self._closed:
            return
        daemons = tuple(daemons)
        target = listen_target(daemons)
        if target == self.target:
            return
        with self._lock:
            self._generation += 1
            generation = self._generation
            old, self.monitor = self.monitor, None
            self.target = target
            self.error = None
        if target is None and old is None:
            return
        self._opener = threading.Thread(
            target=self._reopen, args=(old, daemons if target else (), generation), name="ipvsman-sync-monitor-open",
            daemon=True,
        )  # fmt: skip
        self._opener.start()

    def _reopen(self, old, daemons: tuple[Daemon, ...], generation: int) -> None:
        if old is not None:
            _stop(old)
        if not daemons:
            return
        try:
            monitor = self.factory(daemons, self.netns)
            monitor.start()
        except Exception as exc:  # SyncConfigError, OSError: a line in the panel, never a crash
            message = str(exc) or type(exc).__name__
            with self._lock:
                if generation == self._generation:
                    self.error = message
            return
        with self._lock:
            if generation == self._generation and not self._closed:
                self.monitor = monitor
                return
        _stop(monitor)  # the daemons moved, or the dashboard closed, while it opened

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the opening thread (tests, and stop())."""
        if self._opener is not None:
            self._opener.join(timeout)

    def state(self):
        """MonitorStats while listening, else one line: why not, or what is happening."""
        if self.factory is None:
            return self.off_reason
        with self._lock:
            monitor, error, target = self.monitor, self.error, self.target
        if error:
            return f"not listening: {error}"
        if target is None:
            return "no sync daemon runs here: nothing to listen on"
        if monitor is None:
            return f"opening {target[1]}:{target[2]} on {target[0]}…"
        try:
            return monitor.stats()
        except Exception as exc:
            log.debug("sync monitor stats failed", exc_info=True)
            return f"sync monitor failed: {exc}"

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the monitor; one still opening stops itself when it is done (waited for `timeout`)."""
        with self._lock:
            self._closed = True
            self._generation += 1
            monitor, self.monitor = self.monitor, None
        if monitor is not None:
            _stop(monitor)
        self.wait(timeout)


def _stop(monitor) -> None:
    try:
        monitor.stop()
    except Exception:
        log.debug("sync monitor stop failed", exc_info=True)
