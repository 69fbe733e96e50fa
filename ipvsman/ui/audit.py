"""The audit log: two lines per change made from the dashboard (the attempt, then its result), naming the backend."""

from __future__ import annotations

import datetime
import getpass
import os
import re
import sys
from collections.abc import Callable
from typing import TextIO

from ipvsman.model import DestKey, ServiceKey, join_host_port

SYSTEM_PATH = "/var/log/ipvsman-audit.log"
STDERR = "-"
ATTEMPT = "attempt"  # the result of the line written before a change is submitted
_PLAIN = re.compile(r"[A-Za-z0-9_.:@+-]+")


class AuditLogError(Exception):
    """The audit log cannot be written; the message is one line: "audit log PATH not writable: REASON"."""


def default_path(demo: bool = False, euid: int | None = None, environ=None) -> str:
    """Where changes are logged without --audit-log: the system log as root, else a per-user one;
    the demo's pretend changes always go to a per-user demo log, never to the system's."""
    environ = os.environ if environ is None else environ
    if not demo and (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_PATH
    home = environ.get("HOME") or os.path.expanduser("~")
    state = environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return os.path.join(state, "ipvsman", "demo-audit.log" if demo else "audit.log")


def is_system_path(path: str | None) -> bool:
    return bool(path) and path != STDERR and os.path.realpath(path) == os.path.realpath(SYSTEM_PATH)


def backend_label(name: str | None, netns: str | None = None) -> str:
    """`kernel`, `kernel netns=NAME` or `demo`: what the backend field of each line says."""
    label = name or "kernel"
    if netns:
        label += f" netns={netns if _PLAIN.fullmatch(netns) else _quote(netns)}"
    return label


def for_backend(path: str | None, backend, netns: str | None = None) -> AuditLog:
    """The dashboard's audit log: `path` as given (--audit-log), else the default for the backend;
    raises AuditLogError when the demo would write to the system log."""
    name = getattr(backend, "name", None)
    netns = getattr(backend, "netns", None) or netns
    demo = name == "demo"
    if path is None:
        path = default_path(demo)
    elif demo and is_system_path(path):
        raise AuditLogError(f"the demo's pretend changes never go to the system audit log {SYSTEM_PATH}: "
                            "give --audit-log another file, or -")  # fmt: skip
    return AuditLog(path, backend=backend_label(name, netns))


def current_user() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    sudo_user = os.environ.get("SUDO_USER")
    return f"{user} (sudo by {sudo_user})" if sudo_user and sudo_user != user else user


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AuditLog:
    """Appends lines to a file (creating its directory), or to stderr for the path `-`.

    write() raises AuditLogError every time it fails, so that a change can be refused rather
    than made unlogged. With `-` and stderr a terminal the dashboard draws on, lines are held
    and release() prints them once the screen is given back; otherwise they are written at once.
    A path of None logs nothing (tests, benchmarks).
    """

    def __init__(
        self,
        path: str | None,
        user: str | None = None,
        clock: Callable[[], datetime.datetime] | None = None,
        backend: str = "kernel",
        stream: TextIO | None = None,
        hold: bool | None = None,
    ):
        self.path = path
        self.user = user or current_user()
        self.clock = clock or (lambda: datetime.datetime.now().astimezone())
        self.backend = backend
        self.stream = stream  # for `-`: sys.stderr when None (looked up late: tests replace it)
        self.hold = hold  # for `-`: None decides by whether the stream is a terminal
        self.held: list[str] = []

    @property
    def where(self) -> str:
        return "stderr" if self.path == STDERR else str(self.path)

    # -- lines ------------------------------------------------------------------------------------
    def _head(self) -> str:
        stamp = self.clock().isoformat(timespec="seconds")
        return f"{stamp} user={_quote(self.user)} backend={self.backend}"

    def format(self, dest: DestKey, old: int, new: int, result: str) -> str:
        server = join_host_port(dest.address, dest.port)
        return (
            f"{self._head()} service={_quote(str(dest.service))} server={server} "
            f"old={old} new={new} result={_quote(result)}\n"
        )

    def format_add(self, service: ServiceKey, address: str, port: int, forward: str, weight: int, result: str) -> str:
        return (
            f"{self._head()} action=add service={_quote(str(service))} "
            f"server={join_host_port(address, port)} forward={forward} weight={weight} result={_quote(result)}\n"
        )

    def format_remove(self, dest: DestKey, result: str) -> str:
        return (
            f"{self._head()} action=remove service={_quote(str(dest.service))} "
            f"server={join_host_port(dest.address, dest.port)} result={_quote(result)}\n"
        )

    def format_drain(self, dest: DestKey, step: str, detail: str) -> str:
        return (
            f"{self._head()} action=drain service={_quote(str(dest.service))} "
            f"server={join_host_port(dest.address, dest.port)} step={_quote(step)} detail={_quote(detail)}\n"
        )

    def format_reload(self, pid: int, topology: str, result: str) -> str:
        return f"{self._head()} action=reload-ipvsmand pid={pid} topology={_quote(topology)} result={_quote(result)}\n"

    def record(self, dest: DestKey, old: int, new: int, result: str) -> None:
        """Append one weight change (`result` is ATTEMPT before it is submitted); raises AuditLogError."""
        self.write(self.format(dest, old, new, result))

    def record_add(self, service: ServiceKey, address: str, port: int, forward: str, weight: int, result: str):
        """Append one real server added (`a`); like record()."""
        self.write(self.format_add(service, address, port, forward, weight, result))

    def record_remove(self, dest: DestKey, result: str) -> None:
        """Append one real server removed (`x`); like record()."""
        self.write(self.format_remove(dest, result))

    def record_drain(self, dest: DestKey, step: str, detail: str) -> None:
        """Append one step of a guided drain (started, will not empty, empty, ended); like record()."""
        self.write(self.format_drain(dest, step, detail))

    def record_reload(self, pid: int, topology: str, result: str) -> None:
        """Append one SIGHUP sent to ipvsmand; like record()."""
        self.write(self.format_reload(pid, topology, result))

    # -- writing ----------------------------------------------------------------------------------
    def write(self, line: str) -> None:
        if not self.path:
            return
        if self.path == STDERR:
            self._write_stream(line)
            return
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            try:
                fd = os.open(self.path, flags, 0o640)
            except FileNotFoundError:  # its directory, the first time (~/.local/state/ipvsman)
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                fd = os.open(self.path, flags, 0o640)
            with os.fdopen(fd, "a", encoding="utf-8") as out:
                out.write(line)  # a full disk fails here or as the file closes, both caught
        except OSError as exc:
            raise AuditLogError(f"audit log {self.path} not writable: {exc.strerror or exc}") from None

    def _stream(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def _holding(self, stream: TextIO) -> bool:
        if self.hold is not None:
            return self.hold
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    def _write_stream(self, line: str) -> None:
        stream = self._stream()
        if self._holding(stream):
            # Written now, the line would land in the middle of the dashboard's screen and vanish
            # with the next redraw: held until release().
            self.held.append(line)
            return
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream is closed
            reason = getattr(exc, "strerror", None) or str(exc)
            raise AuditLogError(f"audit log stderr not writable: {reason}") from None

    def release(self) -> None:
        """Print the lines held for stderr (call once the dashboard has given the terminal back)."""
        lines, self.held = self.held, []
        if not lines:
            return
        stream = self._stream()
        try:
            stream.write("".join(lines))
            stream.flush()
        except (OSError, ValueError):
            pass  # nowhere left to say it; the kernel's state shows what was done
