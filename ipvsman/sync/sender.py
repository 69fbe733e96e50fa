"""Socket and namespace I/O of the sync tools: checks, the multicast sender, rate limiting, reading a table."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ipvsman.kernel import netns, procfs
from ipvsman.model import Connection
from ipvsman.sync.protocol import (
    IPV4_UDP_OVERHEAD,
    IPV6_UDP_OVERHEAD,
    EncodedMessage,
    check_pack_arguments,
)

DEFAULT_RATE = 1000.0  # connections per second: a few dozen messages a second, gentle on any backup
MAX_RATE = 10_000_000.0
PROGRESS_INTERVAL = 0.1  # seconds between progress reports
CATCH_UP_SECONDS = 0.25  # the longest delay made up for by sending faster afterwards
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT = 0  # let the kernel fragment a large message, as the master daemon does
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SEND_RETRIES = 50  # a full send buffer (ENOBUFS, EAGAIN) is retried this many times, 10 ms apart
SIOCGIFFLAGS = 0x8913
IFF_UP, IFF_RUNNING = 0x1, 0x40
IFREQ = struct.Struct("16sH22x")  # struct ifreq with ifr_flags: 40 bytes
DOWN_SETTLE_SECONDS = 0.5  # how long a down interface is watched for being deleted before it is reported down


class SyncConfigError(ValueError):
    """Sync settings that cannot work; the message is one line saying why."""


# -- checks ------------------------------------------------------------------------------------


def check_group(group: str) -> str:
    """The group address, normalised; refused unless it is a multicast address."""
    try:
        address = ipaddress.ip_address(group.strip())
    except ValueError:
        raise SyncConfigError(f"multicast group {group!r} is not an IP address") from None
    if not address.is_multicast:
        raise SyncConfigError(f"group {address} is not a multicast address (224.0.0.0/4 or ff00::/8)")
    return str(address)


def check_syncid(syncid: int) -> int:
    if not 0 <= syncid <= 255:
        raise SyncConfigError(f"syncid must be 0-255, got {syncid}")
    return syncid


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise SyncConfigError(f"port must be 1-65535, got {port}")
    return port


def check_ttl(ttl: int) -> int:
    if not 1 <= ttl <= 255:
        raise SyncConfigError(f"ttl must be 1-255, got {ttl}")
    return ttl


def check_rate(rate: float) -> float:
    if not 0 < rate <= MAX_RATE:
        raise SyncConfigError(f"rate must be more than 0 and at most {MAX_RATE:.0f} connections/s, got {rate:g}")
    return rate


def max_maxlen(group: str) -> int:
    """The largest UDP payload of one datagram to this group."""
    return 65535 - (IPV6_UDP_OVERHEAD if ":" in group else IPV4_UDP_OVERHEAD)


def check_maxlen(maxlen: int, version: int, group: str) -> int:
    try:
        check_pack_arguments(0, version, maxlen)
    except ValueError as exc:
        raise SyncConfigError(str(exc)) from None
    if maxlen > max_maxlen(group):
        raise SyncConfigError(f"maxlen must be at most {max_maxlen(group)} for group {group}, got {maxlen}")
    return maxlen


def check_version(version: int) -> int:
    if version not in (0, 1):
        raise SyncConfigError(f"sync protocol version must be 0 or 1, got {version}")
    return version


def check_netns_name(name: str) -> str:
    try:
        return netns.check_name(name)
    except netns.NetnsError as exc:
        raise SyncConfigError(str(exc)) from None


def interface_index(interface: str, netns: str | None = None) -> int:
    """The index of an interface (in `netns`, when given); refused when it does not exist."""
    where = f" in network namespace {netns}" if netns else ""
    if not interface or len(interface) >= 16 or "/" in interface or "\0" in interface:
        raise SyncConfigError(f"bad interface name {interface!r}")
    with netns_entered(netns):
        try:
            return socket.if_nametoindex(interface)
        except OSError:
            raise SyncConfigError(f"interface {interface} does not exist{where}") from None


# -- network namespaces --------------------------------------------------------------------------


def enter_netns(name: str) -> None:
    """Move the calling thread into a named namespace for good (the CLI does it before anything else)."""
    try:
        netns.enter(name)
    except netns.NetnsError as exc:
        raise SyncConfigError(str(exc)) from None


@contextlib.contextmanager
def netns_entered(name: str | None) -> Iterator[None]:
    """Run the body with this thread in a named namespace, then return to the thread's own.

    Sockets opened inside stay in that namespace; /proc/thread-self/net shows its tables.
    """
    if not name:
        yield
        return
    try:
        home = netns.enter(name)
    except netns.NetnsError as exc:
        raise SyncConfigError(str(exc)) from None
    try:
        yield
    finally:
        netns.leave(home)


# -- the sending socket --------------------------------------------------------------------------


class SyncSocket:
    """A UDP socket that sends to the sync group out of one interface, as the master daemon's does.

    Multicast loopback is off, so the director never feeds its own table; `loop=True` is for the
    sync test alone, when the backup to verify runs in the sender's own namespace.
    """

    def __init__(
        self,
        interface: str,
        group: str,
        port: int,
        ttl: int = 1,
        netns: str | None = None,
        loop: bool = False,
    ):
        self.group = check_group(group)
        self.port = check_port(port)
        self.interface = interface
        self.netns = netns
        check_ttl(ttl)
        index = interface_index(interface, netns)
        with netns_entered(netns):
            ipv6 = ":" in self.group
            sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
            try:
                if ipv6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loop))
                else:
                    # struct ip_mreqn: the interface by index, whatever addresses it has
                    mreqn = struct.pack("=4s4si", bytes(4), bytes(4), index)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
                    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
                except PermissionError:
                    pass  # needs CAP_NET_RAW; the multicast interface option already picks the way out
                sock.connect((self.group, self.port, 0, index) if ipv6 else (self.group, self.port))
            except OSError as exc:
                sock.close()
                raise SyncConfigError(
                    f"cannot send to {self.group}:{self.port} on {interface}: {exc.strerror or exc}"
                ) from None
        self._sock = sock

    def send(self, data: bytes) -> None:
        """Send one datagram; a full send buffer is waited out briefly, other errors raise OSError."""
        for _ in range(SEND_RETRIES):
            try:
                self._sock.send(data)
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                time.sleep(0.01)
        self._sock.send(data)

    def interface_problem(self) -> str | None:
        """Why the interface cannot carry messages now, or None when it is up with a link.

        Asked of the socket, so it answers for the socket's namespace. Without a link (cable
        out, veth peer down) sends still succeed and the messages are silently dropped.
        """
        problem = self._interface_flags_problem()
        if problem and problem.endswith(" is down"):
            # Deleting an interface takes it down first and unregisters it a moment later:
            # wait that moment out, so a deleted interface is reported as gone, not as down.
            deadline = time.monotonic() + DOWN_SETTLE_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.05)
                later = self._interface_flags_problem()
                if later and later.endswith(" is gone"):
                    return later
        return problem

    def _interface_flags_problem(self) -> str | None:
        request = IFREQ.pack(self.interface.encode(), 0)
        try:
            _, flags = IFREQ.unpack(fcntl.ioctl(self._sock.fileno(), SIOCGIFFLAGS, request))
        except OSError as exc:
            return f"interface {self.interface} is gone" if exc.errno == errno.ENODEV else None
        if not flags & IFF_UP:
            return f"interface {self.interface} is down"
        if not flags & IFF_RUNNING:
            return f"interface {self.interface} has no link"
        return None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SyncSocket:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# -- rate limiting and the send loop ------------------------------------------------------------------


class TokenBucket:
    """Lets `rate` units a second through on average, in bursts of at most `burst` units.

    It starts with `initial` units (default: a full bucket).
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        initial: float | None = None,
    ):
        self.rate = check_rate(rate)
        self.burst = max(burst, 1.0)
        self.clock = clock
        self.tokens = self.burst if initial is None else min(initial, self.burst)
        self.stamp = clock()

    def delay(self, units: int) -> float:
        """Seconds until `units` may pass; 0 when they may pass now."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return max(units - self.tokens, 0.0) / self.rate

    def take(self, units: int) -> None:
        self.tokens -= units

    def acquire(self, units: int, wait: Callable[[float], bool]) -> bool:
        """Wait until `units` may pass and take them; False when `wait` says to stop (it returns True)."""
        while True:
            pause = self.delay(units)
            if pause < 1e-6:  # rounding of the token count must not make us wait for nothing
                self.take(units)
                return True
            if wait(pause):
                return False


@dataclass(frozen=True)
class SendProgress:
    """How far a send has come; handed to the progress callback from the sending thread."""

    connections: int
    total_connections: int
    messages: int
    total_messages: int
    elapsed: float

    @property
    def fraction(self) -> float:
        return self.connections / self.total_connections if self.total_connections else 1.0

    def describe(self) -> str:
        return (
            f"resync: {self.connections}/{self.total_connections} connections "
            f"({self.fraction:.0%}), {self.messages}/{self.total_messages} messages"
        )


@dataclass(frozen=True)
class SendReport:
    """What a send did: counts, time, whether it was cancelled or failed, and when each message left."""

    connections: int
    messages: int
    total_connections: int
    total_messages: int
    bytes: int
    seconds: float
    cancelled: bool = False
    error: str | None = None
    timeline: tuple[tuple[float, int], ...] = ()  # (seconds since start, connections sent) per message

    @property
    def complete(self) -> bool:
        return not self.cancelled and self.error is None and self.connections == self.total_connections

    @property
    def achieved_rate(self) -> float | None:
        """Connections per second from the first message to the last, not counting the first.

        The first message leaves at once (the bucket starts with one message's worth); each
        later one waits for its connections' worth of time, so this is the limiter's rate.
        """
        if len(self.timeline) < 2:
            return None
        (first_time, first_count), (last_time, last_count) = self.timeline[0], self.timeline[-1]
        span = last_time - first_time
        return (last_count - first_count) / span if span > 0 else None


def send_messages(
    sock: SyncSocket,
    messages: Sequence[EncodedMessage],
    rate: float = DEFAULT_RATE,
    progress: Callable[[SendProgress], None] | None = None,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SendReport:
    """Send messages at `rate` connections per second until done, cancelled or an error."""
    cancel = cancel or threading.Event()
    total_connections = sum(m.count for m in messages)
    # One message may leave at once. The bucket holds more, so that time lost to a wait that
    # overslept or a stalled CPU (up to CATCH_UP_SECONDS) is made up by the next messages instead
    # of lowering the average: in a slow VM, a bucket of one message fell 5-13% short.
    largest = max((m.count for m in messages), default=1)
    bucket = TokenBucket(rate, max(2 * largest, rate * CATCH_UP_SECONDS), clock, initial=largest)
    started = clock()
    sent_connections = sent_messages = sent_bytes = 0
    timeline: list[tuple[float, int]] = []
    error = None
    last_progress = started - PROGRESS_INTERVAL
    # Asked before every message: a few microseconds against a message's worth of waiting.
    interface_problem = getattr(sock, "interface_problem", lambda: None)
    for message in messages:
        if cancel.is_set() or not bucket.acquire(message.count, cancel.wait):
            break
        problem = interface_problem()
        if problem:
            error = f"stopped after {sent_connections} of {total_connections} connections: {problem}"
            break
        try:
            sock.send(message.data)
        except OSError as exc:
            problem = interface_problem()
            error = f"send failed after {sent_connections} connections: {exc.strerror or exc}"
            if problem:
                error += f" ({problem})"
            break
        now = clock()
        sent_connections += message.count
        sent_messages += 1
        sent_bytes += len(message.data)
        timeline.append((now - started, sent_connections))
        if progress is not None and (now - last_progress >= PROGRESS_INTERVAL or sent_messages == len(messages)):
            last_progress = now
            progress(SendProgress(sent_connections, total_connections, sent_messages, len(messages), now - started))
    return SendReport(
        connections=sent_connections,
        messages=sent_messages,
        total_connections=total_connections,
        total_messages=len(messages),
        bytes=sent_bytes,
        seconds=clock() - started,
        cancelled=sent_messages < len(messages) and error is None,
        error=error,
        timeline=tuple(timeline),
    )


# -- a namespace's connection table (parsed by ipvsman.kernel.procfs) -------------------------------------------------------------------


def read_conn_table(netns: str | None = None, origin: bool = True) -> Sequence[Connection]:
    """The connection table of this namespace or a named one (ip_vs_conn_sync when `origin`)."""
    name = procfs.CONN_SYNC_FILE if origin else procfs.CONN_FILE
    with netns_entered(netns):
        try:
            text = procfs.read_text(os.path.join(procfs.net_dir(), name))
        except FileNotFoundError:
            where = f" in network namespace {netns}" if netns else ""
            raise SyncConfigError(f"no /proc/net/{name}{where}: is the ip_vs module loaded?") from None
    return (procfs.parse_conn_sync if origin else procfs.parse_conn)(text)[0]


def read_sync_version(netns: str | None = None) -> int | None:
    """net.ipv4.vs.sync_version of this namespace or a named one; None when unreadable."""
    with netns_entered(netns):
        return procfs.read_sync_version()
