"""ipvsmand's verdicts as the dashboard reads them: its state file checked field by field into immutable values."""

from __future__ import annotations

import json
import math
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ipvsman.model import WEIGHT_MAX, DestKey, Service, ServiceKey
from ipvsman.threadnames import name_this_thread

SCHEMA = 1
DEFAULT_PATH = "/run/ipvsman/ipvsmand.json"
MAX_BYTES = 64 * 1024 * 1024  # what ipvsmand may write (about 200,000 real servers); more is not its file
STALE_HEARTBEATS = 3  # a file not rewritten for this many heartbeats is stale
READ_EVERY = 1.0  # seconds between looks at the file's mtime
TEXT_LIMIT = 200  # characters kept of any text the file gives (a reason, a path)

UP, DOWN, SUSPENDED, RISING, FALLING, UNKNOWN = "up", "down", "suspended", "rising", "falling", "unknown"
STATES = (UP, DOWN, SUSPENDED, RISING, FALLING, UNKNOWN)
IN_SERVICE = frozenset((UP, FALLING))  # what ipvsmand keeps in the kernel at its configured weight
TAKEN_OUT = frozenset((DOWN, RISING, SUSPENDED))  # what it holds at weight 0, or removed
ACTIONS = ("quiesce", "remove")


class VerdictsError(Exception):
    """The state file cannot be used; the message is one line naming the file and why."""


def clean_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """Text from the file made safe for one line of a terminal: control characters (escape
    sequences, newlines) become '?', and it is cut at `limit` characters."""
    if len(text) <= limit and text.isprintable():  # nearly always: no character to look at one by one
        return text
    cleaned = "".join("?" if ord(char) < 32 or 127 <= ord(char) < 160 else char for char in text[:limit])
    return cleaned + ("…" if len(text) > limit else "")


def clock_time(when: float) -> str:
    """14:02:11 in local time."""
    return time.strftime("%H:%M:%S", time.localtime(when))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ipvsmand says about one real server."""

    dest: DestKey
    state: str  # one of STATES
    since: float
    good: int
    rise: int
    bad: int
    fall: int
    check: str
    last_check_at: float | None
    last_ok: bool | None
    reason: str  # why the last check failed, "" when it passed
    latency_ms: float | None
    configured_weight: int
    applied_weight: int | None  # None: ipvsmand removed it from the kernel
    action: str  # "quiesce" or "remove"

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
class Verdicts:
    """One read of ipvsmand's state file."""

    path: str
    version: str
    pid: int
    topology: str
    applied_at: float
    written_at: float
    heartbeat: float
    errors: tuple[str, ...] = ()
    by_dest: Mapping[DestKey, Verdict] = field(default_factory=lambda: MappingProxyType({}))

    def age(self, now: float) -> float:
        return max(0.0, now - self.written_at)

    def stale(self, now: float) -> bool:
        return self.age(now) > STALE_HEARTBEATS * self.heartbeat

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


# -- parsing ----------------------------------------------------------------------------------------
def read_verdicts(path: str, max_bytes: int = MAX_BYTES) -> Verdicts:
    """Read and check the state file at `path`; VerdictsError (one line) when it cannot be used."""
    where = f"ipvsmand state {path}"
    try:
        # O_NONBLOCK: a FIFO put in its place must not hang the reader; only a regular file is read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise VerdictsError(f"{where}: missing (is ipvsmand running?)") from None
    except OSError as exc:
        raise VerdictsError(f"{where}: not readable: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise VerdictsError(f"{where}: not a regular file")
        if info.st_size > max_bytes:
            raise VerdictsError(f"{where}: {info.st_size} bytes, more than the {max_bytes} bytes read")
        chunks, total = [], 0
        while total <= max_bytes:  # the size may grow between fstat and read
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise VerdictsError(f"{where}: not readable: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if total > max_bytes:
        raise VerdictsError(f"{where}: more than the {max_bytes} bytes read")
    return parse_verdicts(b"".join(chunks), path)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_verdicts(data: bytes, path: str = "ipvsmand.json") -> Verdicts:
    """The state file's bytes as Verdicts; VerdictsError (one line) for anything off the contract."""
    where = f"ipvsmand state {path}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise VerdictsError(f"{where}: not UTF-8 text") from None
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise VerdictsError(f"{where}: not JSON: nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, NaN, an integer of thousands of digits
        raise VerdictsError(f"{where}: not JSON: {clean_text(str(exc).splitlines()[0], 80)}") from None
    if not isinstance(document, dict):
        raise VerdictsError(f"{where}: not a JSON object")
    schema = document.get("ipvsmand")
    if type(schema) is not int:
        raise VerdictsError(f"{where}: no schema version (\"ipvsmand\": {SCHEMA}): not ipvsmand's state file")
    if schema != SCHEMA:
        raise VerdictsError(f"{where}: schema version {schema}, this ipvsman reads {SCHEMA}: update one of them")
    try:
        return _verdicts(document, path)
    except _Bad as exc:
        raise VerdictsError(f"{where}: {exc}") from None


class _Bad(Exception):
    """A field off the contract: "real_servers[3].port: must be 0-65535, got 70000"."""


def _show(value: object) -> str:
    return clean_text(json.dumps(value)[:40], 40)


def _field(document: dict, name: str, where: str = ""):
    if name not in document:
        raise _Bad(f"{where}{name}: missing")
    return document[name]


def _number(document: dict, name: str, where: str = "", *, optional: bool = False, low: float = 0.0) -> float | None:
    value = document.get(name) if optional else _field(document, name, where)
    if value is None and optional:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or value < low:
        raise _Bad(f"{where}{name}: must be a number of at least {low:g}, got {_show(value)}")
    return float(value)


def _integer(document: dict, name: str, where: str = "", low: int = 0, high: int | None = None,
             optional: bool = False) -> int | None:  # fmt: skip
    value = document.get(name) if optional else _field(document, name, where)
    if value is None and optional:
        return None
    if type(value) is not int or value < low or (high is not None and value > high):
        bounds = f"{low}-{high}" if high is not None else f"at least {low}"
        raise _Bad(f"{where}{name}: must be a whole number {bounds}, got {_show(value)}")
    return value


def _text(document: dict, name: str, where: str = "", default: str | None = None) -> str:
    value = document.get(name, default) if default is not None else _field(document, name, where)
    if not isinstance(value, str):
        raise _Bad(f"{where}{name}: must be text, got {_show(value)}")
    return clean_text(value)


def _choice(document: dict, name: str, choices: tuple[str, ...], where: str) -> str:
    value = _field(document, name, where)
    if value not in choices:
        raise _Bad(f"{where}{name}: must be one of {', '.join(choices)}, got {_show(value)}")
    return value


def _verdicts(document: dict, path: str) -> Verdicts:
    heartbeat = _number(document, "heartbeat")
    if heartbeat <= 0:
        raise _Bad(f"heartbeat: must be more than 0, got {_show(document['heartbeat'])}")
    errors = _field(document, "errors")
    if not isinstance(errors, list) or not all(isinstance(error, str) for error in errors):
        raise _Bad("errors: must be a list of text")
    entries = _field(document, "real_servers")
    if not isinstance(entries, list):
        raise _Bad(f"real_servers: must be a list, got {_show(entries)}")
    by_dest: dict[DestKey, Verdict] = {}
    services: dict[str, ServiceKey] = {}  # a service's text is parsed once, however many servers it has
    for index, entry in enumerate(entries):
        verdict = _verdict(entry, f"real_servers[{index}].", services)
        if verdict.dest in by_dest:
            raise _Bad(f"real_servers[{index}]: {verdict.dest} is named twice")
        by_dest[verdict.dest] = verdict
    return Verdicts(
        path=path,
        version=_text(document, "version", default="?"),
        pid=_integer(document, "pid", low=1),
        topology=_text(document, "topology"),
        applied_at=_number(document, "applied_at"),
        written_at=_number(document, "written_at"),
        heartbeat=heartbeat,
        errors=tuple(clean_text(error) for error in errors[:100]),
        by_dest=MappingProxyType(by_dest),
    )


def _verdict(entry: object, where: str, services: dict[str, ServiceKey]) -> Verdict:
    if not isinstance(entry, dict):
        raise _Bad(f"{where[:-1]}: must be an object, got {_show(entry)}")
    service_text = _field(entry, "service", where)
    if not isinstance(service_text, str):
        raise _Bad(f"{where}service: must be text, got {_show(service_text)}")
    service = services.get(service_text)
    if service is None:
        try:
            service = services[service_text] = parse_service_key(service_text)
        except ValueError as exc:
            raise _Bad(f"{where}service: {exc}") from None
    address = _field(entry, "address", where)
    parsed = _address(address) if isinstance(address, str) else None
    if parsed is None:
        raise _Bad(f"{where}address: must be an IP address, got {_show(address)}")
    last_ok = entry.get("last_ok")
    if last_ok is not None and not isinstance(last_ok, bool):
        raise _Bad(f"{where}last_ok: must be true, false or null, got {_show(last_ok)}")
    return Verdict(
        dest=DestKey(service, parsed, _integer(entry, "port", where, 0, 65535)),
        state=_choice(entry, "state", STATES, where),
        since=_number(entry, "since", where),
        good=_integer(entry, "good", where),
        rise=_integer(entry, "rise", where, low=1),
        bad=_integer(entry, "bad", where),
        fall=_integer(entry, "fall", where, low=1),
        check=_text(entry, "check", where),
        last_check_at=_number(entry, "last_check_at", where, optional=True),
        last_ok=last_ok,
        reason=_text(entry, "reason", where, default=""),
        latency_ms=_number(entry, "latency_ms", where, optional=True),
        configured_weight=_integer(entry, "configured_weight", where, 0, WEIGHT_MAX),
        applied_weight=_integer(entry, "applied_weight", where, 0, WEIGHT_MAX, optional=True),
        action=_choice(entry, "action", ACTIONS, where),
    )


def _address(text: str) -> str | None:
    """The address as the kernel backend writes it (IPv6 compressed), or None when it is none."""
    for family in (socket.AF_INET, socket.AF_INET6):  # inet_pton: ten times faster than ipaddress
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except (OSError, ValueError):  # ValueError: a NUL in the text
            pass
    return None


def parse_service_key(text: str) -> ServiceKey:
    """str(ServiceKey) read back: "tcp 10.0.0.1:80", "udp [fd00::1]:53", "fwmark 12", "fwmark 12 (IPv6)"."""
    words = text.split(" ")
    if words[0] == "fwmark":
        inet6 = words[2:] == ["(IPv6)"]
        if len(words) not in (2, 3) or (len(words) == 3 and not inet6) or not words[1].isdigit():
            raise ValueError(f"expected 'fwmark N', got {clean_text(text, 40)!r}")
        mark = int(words[1])
        if not 0 < mark < 2**32:
            raise ValueError(f"a firewall mark must be 1-4294967295, got {mark}")
        return ServiceKey("inet6" if inet6 else "inet", None, "", 0, fwmark=mark)
    if len(words) != 2 or words[0] not in ("tcp", "udp", "sctp"):
        raise ValueError(f"expected 'tcp|udp|sctp ADDRESS:PORT' or 'fwmark N', got {clean_text(text, 40)!r}")
    from ipvsman.model import split_host_port

    address, port = split_host_port(words[1])
    return ServiceKey("inet6" if ":" in address else "inet", words[0], address, port)


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


def demo_verdicts(services: Iterable[Service], now: float) -> Verdicts:
    """What an ipvsmand watching the demo director might say: written just now, never stale."""
    found = {}
    for service in services:
        check = "http" if service.key.port in (80, 443) else "dns" if service.key.protocol == "udp" else "tcp"
        for dest in service.dests:
            key = DestKey(service.key, dest.address, dest.port)
            state, age, good, bad, reason, latency = DEMO_STATES.get((dest.address, dest.port),
                                                                     (UP, 3600.0, 3, 0, "", 1.2))  # fmt: skip
            configured = dest.weight or 50
            applied = configured if state in IN_SERVICE else 0
            found[key] = Verdict(key, state, now - age, good, 3, bad, 3, check, now - 0.5, state in (UP, RISING),
                                 reason, latency, configured, applied, "quiesce")  # fmt: skip
    return Verdicts(path="(demo)", version="demo", pid=DEMO_PID, topology=DEMO_TOPOLOGY, applied_at=now - 3600.0,
                    written_at=now, heartbeat=5.0, by_dest=MappingProxyType(found))  # fmt: skip


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
