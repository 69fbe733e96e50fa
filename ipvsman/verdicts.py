"""ipvsmand's verdicts as the dashboard shows them: its state file as daemon.statefile reads it, made terminal-safe."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

from ipvsman.daemon.health import IN_SERVICE, STATES
from ipvsman.daemon.health import DOWN, FALLING, RISING, SUSPENDED, UNKNOWN, UP  # noqa: F401 (the views' words)
from ipvsman.daemon.statefile import DEFAULT_PATH, MAX_BYTES, parse_service_key  # noqa: F401 (re-exported)
from ipvsman.daemon.statefile import SCHEMA, DaemonState, RealServerState, StateFileError, clean_text
from ipvsman.daemon.statefile import parse_state, read_state
from ipvsman.model import DestKey, Service, ServiceKey
from ipvsman.threadnames import name_this_thread

READ_EVERY = 1.0  # seconds between looks at the file's mtime
ERRORS_SHOWN = 100  # a reload's refusals kept, of however many the file lists
TAKEN_OUT = frozenset(STATES) - IN_SERVICE  # what ipvsmand holds at weight 0, or removed


class VerdictsError(Exception):
    """The state file cannot be used; the message is one line naming the file and why."""


def clock_time(when: float) -> str:
    """14:02:11 in local time; ??:??:?? for a time the platform cannot show."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(when))
    except (OverflowError, OSError, ValueError):  # a file's "since": 1e300 must not break a view
        return "??:??:??"


@dataclass(frozen=True, slots=True)
class Verdict(RealServerState):
    """What ipvsmand says about one real server, its text cleaned for a terminal."""

    dest: DestKey = field(init=False, repr=False, compare=False)  # the real server as the kernel backend's key

    def __post_init__(self) -> None:
        # Whoever made it (the file's reader, the demo), what it shows is one safe line.
        object.__setattr__(self, "check", clean_text(self.check))
        object.__setattr__(self, "reason", clean_text(self.reason))
        object.__setattr__(self, "dest", self.dest_key())

    @property
    def word(self) -> str:
        """UP, DOWN, SUSPENDED, rising 2/3, falling 1/3, unknown: the short form views 2 and 3 show."""
        if self.state == RISING:
            return f"rising {self.good}/{self.rise}"
        if self.state == FALLING:
            return f"falling {self.bad}/{self.fall}"
        if self.state == UNKNOWN:
            return "unknown"
        return self.state.upper()

    def describe(self) -> str:
        """DOWN since 14:02:11 "HTTP 503": the verdict with when it began and why."""
        text = f"{self.word} since {clock_time(self.since)}"
        if self.reason and self.state != UP:
            text += f' "{self.reason}"'
        return text

    def check_text(self) -> str:
        """http, 2.3 ms, weight 50, applied 0: the check and the weights."""
        parts = [self.check]
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms:.1f} ms")
        parts.append(f"weight {self.configured_weight}")
        parts.append("removed" if self.applied_weight is None else f"applied {self.applied_weight}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Verdicts(DaemonState):
    """One read of ipvsmand's state file, its text cleaned, its real servers by the kernel's key."""

    server_kind: ClassVar[type[RealServerState]] = Verdict
    by_dest: Mapping[DestKey, Verdict] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", clean_text(self.version))
        object.__setattr__(self, "topology", clean_text(self.topology))
        object.__setattr__(self, "errors", tuple(clean_text(error) for error in self.errors[:ERRORS_SHOWN]))
        # Indexed once per read: the views look a real server up on every render.
        object.__setattr__(self, "by_dest", MappingProxyType({verdict.dest: verdict for verdict in self.real_servers}))

    def age(self, now: float) -> float:
        return max(0.0, now - self.written_at)

    def stale_line(self, now: float) -> str | None:
        """One line when the file is stale, else None."""
        if not self.stale(now):
            return None
        return f"ipvsmand state {self.age(now):.0f} s old: the daemon stopped or froze"

    def counts(self, keys: Iterable[DestKey]) -> dict[str, int]:
        """How many of these real servers are in each state (those ipvsmand does not name left out)."""
        found: dict[str, int] = {}
        for key in keys:
            verdict = self.by_dest.get(key)
            if verdict is not None:
                found[verdict.state] = found.get(verdict.state, 0) + 1
        return found


NO_VERDICTS = Verdicts(SCHEMA, "", 0, "", 0.0, 0.0, 1.0, (), ())  # views 1-3 while the file cannot be used


# -- reading ---------------------------------------------------------------------------------------
def read_verdicts(path: str, max_bytes: int | None = None) -> Verdicts:
    """The state file at `path` for the views; VerdictsError (one line naming it) when it cannot be used."""
    try:
        return read_state(path, max_bytes, Verdicts)
    except StateFileError as exc:
        raise VerdictsError(f"ipvsmand state {exc}") from None


def parse_verdicts(data: bytes, path: str = "ipvsmand.json") -> Verdicts:
    """The state file's bytes for the views; VerdictsError (one line) for anything off the format."""
    try:
        return parse_state(data, path, Verdicts)
    except StateFileError as exc:
        raise VerdictsError(f"ipvsmand state {exc}") from None


# -- against the kernel -----------------------------------------------------------------------------
def verdict_drift(verdicts: Verdicts | None, services: Iterable[Service]) -> dict[DestKey, str]:
    """Where the kernel and ipvsmand disagree, per real server: one line each.

    The kernel has weight 0 where ipvsmand keeps the server in with a weight, or a weight where
    ipvsmand holds it out; or ipvsmand names a real server the kernel does not have (and did not
    remove it itself).
    """
    if verdicts is None or not verdicts.by_dest:
        return {}
    # Only the services ipvsmand names are indexed: beside keepalived's on a large director, the
    # daemon's few services must not cost a walk through every real server on each poll.
    by_key = {service.key: service for service in services}
    weights: dict[ServiceKey, dict[tuple[str, int], int]] = {}
    found = {}
    for key, verdict in verdicts.by_dest.items():
        kernel = weights.get(key.service)
        if kernel is None:
            service = by_key.get(key.service)
            dests = service.dests if service is not None else ()
            kernel = weights[key.service] = {(dest.address, dest.port): dest.weight for dest in dests}
        weight = kernel.get((key.address, key.port))
        applied = verdict.applied_weight
        if weight is None:
            if applied is not None:
                found[key] = f"ipvsmand has it at weight {applied}, the kernel does not"
        elif weight == 0 and verdict.state in IN_SERVICE and applied:
            found[key] = f"kernel weight 0, ipvsmand says {verdict.word} (weight {applied})"
        elif weight > 0 and verdict.state in TAKEN_OUT and not applied:
            found[key] = f"kernel weight {weight}, ipvsmand says {verdict.word} (weight 0)"
    return found


# -- reading it off the UI thread -------------------------------------------------------------------
VerdictsCallback = Callable[["Verdicts | VerdictsError"], None]


class VerdictReader(threading.Thread):
    """Looks at the state file's mtime every `every` seconds and reads it again when it changed,
    handing each result (Verdicts, or the VerdictsError saying why not) to `on_result`, which
    must pass it to the UI thread itself (MainLoop.call_from_thread)."""

    def __init__(self, path: str, on_result: VerdictsCallback, every: float = READ_EVERY):
        super().__init__(name="ipvsman-verdicts", daemon=True)
        self.path = path
        self.on_result = on_result
        self.every = every
        self._stop_event = threading.Event()
        self._seen: tuple | None = None

    def stop(self, timeout: float | None = 2.0) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def read_if_changed(self) -> Verdicts | VerdictsError | None:
        """The file read again when its identity, size or mtime changed since the last look; else None."""
        try:
            info = os.stat(self.path)
            seen: tuple = (info.st_ino, info.st_size, info.st_mtime_ns)
        except OSError as exc:
            seen = ("error", exc.errno)
        if seen == self._seen:
            return None
        self._seen = seen
        try:
            return read_verdicts(self.path)
        except VerdictsError as exc:
            return exc

    def run(self) -> None:
        name_this_thread()
        while not self._stop_event.is_set():
            result = self.read_if_changed()
            if result is not None:
                self.on_result(result)
            self._stop_event.wait(self.every)


# -- the demo's made-up daemon ----------------------------------------------------------------------
DEMO_PID = 4242
DEMO_TOPOLOGY = "/etc/ipvsman/topology"
# (address, port) -> (state, seconds in it, good, bad, reason, latency) for the demo director's real
# servers; the rest are UP. 10.10.10.203:389 is DOWN while the kernel still gives it weight: drift.
DEMO_STATES = {
    ("10.10.10.204", 389): (DOWN, 2710.0, 0, 3, "connection refused", None),
    ("10.10.10.204", 636): (RISING, 4.0, 2, 0, "", 1.9),
    ("10.10.10.203", 389): (DOWN, 95.0, 0, 3, "timed out after 2.0 s", None),
    ("10.10.20.13", 80): (FALLING, 2.0, 0, 1, "HTTP 503", 4.2),
}


def demo_verdicts(services: Iterable[Service], now: float, earlier: Verdicts | None = None) -> Verdicts:
    """What an ipvsmand watching the demo director might say: written just now, never stale.

    With `earlier` (made for the same real servers at the same weights), its verdicts are kept as
    they were, times included, as a daemon's stay while nothing changes state; only the time of
    writing moves on. Made again for each snapshot, the states' "since" crept forward every second,
    and 10,000 real servers took 111 ms of the loop's time (on the host)."""
    if earlier is not None:
        return Verdicts(SCHEMA, "demo", DEMO_PID, DEMO_TOPOLOGY, earlier.applied_at, now, 5.0, (),
                        earlier.real_servers)  # fmt: skip
    found = []
    for service in services:
        check = "http" if service.key.port in (80, 443) else "dns" if service.key.protocol == "udp" else "tcp"
        for dest in service.dests:
            state, age, good, bad, reason, latency = DEMO_STATES.get((dest.address, dest.port),
                                                                     (UP, 3600.0, 3, 0, "", 1.2))  # fmt: skip
            configured = dest.weight or 50
            found.append(Verdict(
                service=str(service.key), address=dest.address, port=dest.port, state=state, since=now - age,
                good=good, rise=3, bad=bad, fall=3, check=check, last_check_at=now - 0.5, last_ok=state in (UP, RISING),
                reason=reason, latency_ms=latency, configured_weight=configured,
                applied_weight=configured if state in IN_SERVICE else 0, action="quiesce",
            ))  # fmt: skip
    return Verdicts(SCHEMA, "demo", DEMO_PID, DEMO_TOPOLOGY, now - 3600.0, now, 5.0, (), tuple(found))


# -- reloading the daemon ---------------------------------------------------------------------------
def is_ipvsmand(cmdline: Iterable[str]) -> bool:
    """Whether a command line is ipvsmand's: its console script, or `python -m ipvsman.daemon[.main]`."""
    args = list(cmdline)[:3]
    modules = ("ipvsman.daemon", "ipvsman.daemon.main")
    return any(os.path.basename(arg) == "ipvsmand" or arg in modules for arg in args)


def reload_refusal(verdicts: Verdicts | None, process_of: Callable[[int], object] | None = None) -> str | None:
    """Why SIGHUP must not go to the pid the state file names (one line), or None when it may."""
    if verdicts is None:
        return "reload ipvsmand: no state file read (--ipvsmand-state PATH)"
    import psutil

    process_of = process_of or psutil.Process
    pid = verdicts.pid
    try:
        cmdline = process_of(pid).cmdline()
    except psutil.NoSuchProcess:
        return f"reload ipvsmand: pid {pid} is not running (the state file is {verdicts.age(time.time()):.0f} s old)"
    except psutil.AccessDenied:
        return f"reload ipvsmand: pid {pid}'s command line is not readable: cannot tell it is ipvsmand"
    except psutil.Error as exc:
        return f"reload ipvsmand: pid {pid}: {exc}"
    if not is_ipvsmand(cmdline):
        shown = clean_text(" ".join(cmdline), 60) or "a kernel thread"
        return f"reload ipvsmand: pid {pid} is not ipvsmand ({shown}): nothing sent"
    return None


def send_reload(pid: int, kill: Callable[[int, int], None] = os.kill) -> str:
    """SIGHUP to ipvsmand; the one line that says what was done. OSError when it could not be sent."""
    import signal

    kill(pid, signal.SIGHUP)
    return f"ipvsmand (pid {pid}) told to reload its topology (SIGHUP)"
