"""Sync monitor: listens on the sync group and decodes what master daemons send, in its own thread."""

from __future__ import annotations

import collections
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ipvsman.model import Daemon
from ipvsman.sync.protocol import DEFAULT_GROUP, DEFAULT_PORT, SyncConn, decode_message
from ipvsman.sync.sender import (
    SO_BINDTODEVICE,
    SyncConfigError,
    check_group,
    check_port,
    interface_index,
    netns_entered,
)

RECEIVE_BUFFER = 1 << 20  # bytes of socket buffer: a resync burst must not be dropped while we decode
POLL_SECONDS = 0.25  # how often the thread looks at its stop flag


@dataclass(frozen=True, slots=True)
class ReceivedConn:
    """One decoded entry, with when and from whom its message came."""

    received_at: float  # time.time()
    sender: str
    syncid: int
    version: int
    conn: SyncConn


@dataclass(frozen=True, slots=True)
class SyncIdStats:
    """Traffic of one syncid: totals, and rates over the monitor's window."""

    syncid: int
    version: int | None  # protocol version of its latest message
    messages: int
    connections: int
    messages_per_second: float
    connections_per_second: float
    last_seen: float  # time.time() of its latest message
    senders: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MonitorStats:
    """An immutable summary of what the monitor has seen, for the Sync view."""

    listening: str  # e.g. "224.0.0.81:8848 on vb"
    running: bool
    window: float  # seconds the rates are averaged over
    messages: int  # well-formed or not, every datagram counted
    connections: int  # entries a backup would install
    malformed: int  # datagrams a backup would drop in whole or in part
    rejected: int  # entries a backup would not install (in malformed datagrams or skipped)
    by_syncid: tuple[SyncIdStats, ...] = ()
    latest: tuple[ReceivedConn, ...] = ()  # newest first
    last_error: str | None = None  # the latest malformed message's reason, or a socket error
    last_error_at: float | None = None

    @property
    def messages_per_second(self) -> float:
        return sum(s.messages_per_second for s in self.by_syncid)

    @property
    def connections_per_second(self) -> float:
        return sum(s.connections_per_second for s in self.by_syncid)

    @property
    def flowing(self) -> bool:
        """Whether any sync message arrived within the window."""
        return self.messages_per_second > 0

    def describe_lines(self, now: float | None = None, latest: int = 10) -> list[str]:
        """Plain lines for a panel: the totals, one line per syncid, the last error, the latest entries."""
        now = time.time() if now is None else now
        lines = [
            f"listening on {self.listening}: {self.messages} messages, {self.connections} connections, "
            f"{self.malformed} malformed, {self.rejected} entries rejected"
        ]
        if not self.flowing:
            lines.append(f"no sync traffic in the last {self.window:g} s")
        for s in self.by_syncid:
            senders = ", ".join(s.senders) or "?"
            version = "?" if s.version is None else s.version
            lines.append(
                f"syncid {s.syncid} (v{version}) from {senders}: {s.messages_per_second:.1f} messages/s, "
                f"{s.connections_per_second:.1f} connections/s, last {max(now - s.last_seen, 0):.0f} s ago"
            )
        if self.last_error:
            lines.append(f"last error: {self.last_error}")
        lines.extend(f"{r.sender} syncid {r.syncid}: {r.conn.describe()}" for r in self.latest[:latest])
        return lines


class SyncMonitor:
    """Joins the sync group on an interface and decodes every datagram in a thread of its own.

    `start()` opens the sockets in the calling thread, so a bad interface or group fails there
    with a one-line SyncConfigError; `stats()` may be called from any thread at any time.
    A master daemon's own messages never reach a monitor in its namespace (multicast loopback
    is off), so on a master this shows the other directors' traffic.
    """

    def __init__(
        self,
        interface: str,
        group: str = DEFAULT_GROUP,
        port: int = DEFAULT_PORT,
        netns: str | None = None,
        ports: int = 1,
        keep: int = 100,
        window: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.interface = interface
        self.group = check_group(group)
        self.port = check_port(port)
        self.ports = [check_port(port + offset) for offset in range(max(ports, 1))]
        self.netns = netns
        self.window = window
        self.clock = clock
        self.wall_clock = wall_clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []
        self._latest: collections.deque[ReceivedConn] = collections.deque(maxlen=keep)
        self._recent: collections.deque[tuple[float, int, int]] = collections.deque()  # (t, syncid, conns)
        self._totals: dict[int, list[int]] = {}  # syncid -> [messages, connections]
        self._versions: dict[int, int | None] = {}
        self._last_seen: dict[int, float] = {}
        self._senders: dict[int, dict[str, None]] = {}
        self._messages = self._connections = self._malformed = self._rejected = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None

    @classmethod
    def for_daemons(cls, daemons: Iterable[Daemon], netns: str | None = None, **options) -> SyncMonitor:
        """A monitor on the interface, group and port of the backup daemon, else of the master."""
        daemons = list(daemons)
        chosen = next((d for d in daemons if d.state == "backup"), None) or next(
            (d for d in daemons if d.state == "master"), None
        )
        if chosen is None:
            raise SyncConfigError("no sync daemon is running here: give the interface to listen on")
        return cls(chosen.interface, chosen.group or DEFAULT_GROUP, chosen.port or DEFAULT_PORT, netns=netns, **options)

    @property
    def listening(self) -> str:
        ports = f"{self.ports[0]}-{self.ports[-1]}" if len(self.ports) > 1 else str(self.port)
        group = f"[{self.group}]" if ":" in self.group else self.group
        where = f" in namespace {self.netns}" if self.netns else ""
        return f"{group}:{ports} on {self.interface}{where}"

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Open the sockets (SyncConfigError with the reason) and start the receiving thread."""
        if self._thread is not None:
            return
        self._sockets = [self._open(port) for port in self.ports]
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ipvsman-sync-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SyncMonitor:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _open(self, port: int) -> socket.socket:
        index = interface_index(self.interface, self.netns)
        ipv6 = ":" in self.group
        with netns_entered(self.netns):
            sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                # The backup daemon's kernel socket allows sharing the address; so do we.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.interface.encode())
                except PermissionError:
                    pass  # without CAP_NET_RAW the membership below still picks the interface
                if ipv6:
                    sock.bind((self.group, port, 0, index))
                    mreq = socket.inet_pton(socket.AF_INET6, self.group) + struct.pack("=I", index)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
                else:
                    sock.bind((self.group, port))
                    mreqn = socket.inet_aton(self.group) + bytes(4) + struct.pack("=i", index)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            except OSError as exc:
                sock.close()
                raise SyncConfigError(f"cannot listen on {self.listening}: {exc.strerror or exc}") from None
        return sock

    def _run(self) -> None:
        while not self._stop.is_set():
            sockets = list(self._sockets)
            try:
                ready, _, _ = select.select(sockets, [], [], POLL_SECONDS)
            except (OSError, ValueError):
                return  # the sockets were closed by stop()
            for sock in ready:
                try:
                    data, address = sock.recvfrom(65535)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    with self._lock:
                        self._last_error = f"receive failed: {exc.strerror or exc}"
                        self._last_error_at = self.wall_clock()
                    continue
                self.feed(data, address[0])

    # -- decoding and statistics ----------------------------------------------------------------
    def feed(self, data: bytes, sender: str = "") -> None:
        """Account one datagram as if received now (the thread calls this; so can tests)."""
        decoded = decode_message(data)
        now, wall = self.clock(), self.wall_clock()
        syncid = decoded.syncid
        with self._lock:
            self._messages += 1
            self._connections += len(decoded.conns)
            self._rejected += decoded.rejected
            if decoded.error is not None or decoded.skipped:
                self._malformed += decoded.error is not None
                self._last_error = f"{sender or 'unknown sender'}: {decoded.error or decoded.skipped[-1]}"
                self._last_error_at = wall
            if syncid is None:
                return  # too short to name its syncid: counted as malformed only
            totals = self._totals.setdefault(syncid, [0, 0])
            totals[0] += 1
            totals[1] += len(decoded.conns)
            self._versions[syncid] = decoded.version
            self._last_seen[syncid] = wall
            self._senders.setdefault(syncid, {})[sender] = None
            self._recent.append((now, syncid, len(decoded.conns)))
            self._expire(now)
            for conn in decoded.conns:
                self._latest.append(ReceivedConn(wall, sender, syncid, decoded.version or 0, conn))

    def _expire(self, now: float) -> None:
        while self._recent and self._recent[0][0] <= now - self.window:
            self._recent.popleft()

    def stats(self) -> MonitorStats:
        """A snapshot of the counters; safe from any thread."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            recent_messages: collections.Counter = collections.Counter()
            recent_conns: collections.Counter = collections.Counter()
            for _, syncid, conns in self._recent:
                recent_messages[syncid] += 1
                recent_conns[syncid] += conns
            by_syncid = tuple(
                SyncIdStats(
                    syncid=syncid,
                    version=self._versions.get(syncid),
                    messages=totals[0],
                    connections=totals[1],
                    messages_per_second=recent_messages[syncid] / self.window,
                    connections_per_second=recent_conns[syncid] / self.window,
                    last_seen=self._last_seen[syncid],
                    senders=tuple(self._senders.get(syncid, ())),
                )
                for syncid, totals in sorted(self._totals.items())
            )
            return MonitorStats(
                listening=self.listening,
                running=self.running,
                window=self.window,
                messages=self._messages,
                connections=self._connections,
                malformed=self._malformed,
                rejected=self._rejected,
                by_syncid=by_syncid,
                latest=tuple(reversed(self._latest)),
                last_error=self._last_error,
                last_error_at=self._last_error_at,
            )
