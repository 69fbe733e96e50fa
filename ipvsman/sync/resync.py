"""Resync and sync test: what to send from the connection table, how to describe it, sending, verifying receipt."""

from __future__ import annotations

import collections
import ipaddress
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ipvsman.model import Connection, Daemon, DestKey, RawState, Service, ServiceKey, split_host_port
from ipvsman.sync.protocol import (
    DEFAULT_GROUP,
    DEFAULT_MAXLEN,
    DEFAULT_MAXLEN6,
    DEFAULT_PORT,
    Packed,
    SyncConn,
    connection_is_template,
    decode_message,
    from_connection,
    pack,
)
from ipvsman.sync.sender import (
    DEFAULT_RATE,
    SendProgress,
    SendReport,
    SyncConfigError,
    SyncSocket,
    check_group,
    check_maxlen,
    check_port,
    check_rate,
    check_syncid,
    check_ttl,
    check_version,
    interface_index,
    read_conn_table,
    send_messages,
)

DEFAULT_TEST_TIMEOUT = 10  # seconds a test connection lives on the backup
VERIFY_SECONDS = 5.0  # how long the sync test waits for the backup to show the test connection
VERIFY_INTERVAL = 0.1
TEST_NET4 = ipaddress.IPv4Network("192.0.2.0/24")  # TEST-NET-1: never a real client
TEST_NET6 = ipaddress.IPv6Network("2001:db8::/32")  # the IPv6 documentation prefix


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncSettings:
    """Where and how to send: the master daemon's settings unless overridden, and the rate."""

    interface: str
    syncid: int
    group: str = DEFAULT_GROUP
    port: int = DEFAULT_PORT
    ttl: int = 1
    maxlen: int = DEFAULT_MAXLEN
    version: int = 1
    rate: float = DEFAULT_RATE
    origin: str = "command line"  # where interface and syncid came from: "master daemon" or "command line"

    def check(self) -> SyncSettings:
        """Raise SyncConfigError with the reason unless these settings can work (no I/O)."""
        check_group(self.group)
        check_syncid(self.syncid)
        check_port(self.port)
        check_ttl(self.ttl)
        check_version(self.version)
        check_maxlen(self.maxlen, self.version, self.group)
        check_rate(self.rate)
        return self

    @property
    def destination(self) -> str:
        group = f"[{self.group}]" if ":" in self.group else self.group
        return f"{group}:{self.port} on {self.interface}"

    def describe(self) -> str:
        """e.g. group 224.0.0.81 port 8848 on interface eth1, syncid 10, sync protocol v1."""
        return (
            f"group {self.group} port {self.port} on interface {self.interface}, "
            f"syncid {self.syncid}, sync protocol v{self.version}"
        )


def default_maxlen(group: str) -> int:
    return DEFAULT_MAXLEN6 if ":" in group else DEFAULT_MAXLEN


def resolve_settings(
    daemons: Iterable[Daemon] = (),
    sync_version: int | None = None,
    *,
    interface: str | None = None,
    syncid: int | None = None,
    group: str | None = None,
    port: int | None = None,
    ttl: int | None = None,
    maxlen: int | None = None,
    version: int | None = None,
    rate: float | None = None,
    daemons_known: bool = True,
) -> SyncSettings:
    """Settings of the running master daemon, with whatever is given taking precedence.

    The protocol version is the sync_version sysctl's unless given. Raises SyncConfigError
    when there is no master daemon and no interface, or when a value is out of range.
    """
    master = next((d for d in daemons if d.state == "master"), None)
    if interface is None and master is None:
        if daemons_known:
            raise SyncConfigError(
                "no master sync daemon is running: pass --interface IF (and --syncid N), "
                "or start one with ipvsadm --start-daemon master --mcast-interface IF --syncid N"
            )
        raise SyncConfigError("the sync daemons could not be read: pass --interface IF (and --syncid N)")
    use_master = master is not None
    group = check_group(group if group is not None else (master.group if use_master and master.group else DEFAULT_GROUP))
    if maxlen is None:
        same_family = use_master and (":" in (master.group or DEFAULT_GROUP)) == (":" in group)
        maxlen = master.maxlen if same_family and master.maxlen else default_maxlen(group)
    settings = SyncSettings(
        interface=interface if interface is not None else master.interface,
        syncid=syncid if syncid is not None else (master.syncid if use_master else 0),
        group=group,
        port=port if port is not None else (master.port if use_master and master.port else DEFAULT_PORT),
        ttl=ttl if ttl is not None else (master.ttl if use_master and master.ttl else 1),
        maxlen=maxlen,
        version=version if version is not None else (sync_version if sync_version in (0, 1) else 1),
        rate=rate if rate is not None else DEFAULT_RATE,
        origin=_origin(master is not None, interface is not None or syncid is not None),
    )
    return settings.check()


def _origin(have_master: bool, overridden: bool) -> str:
    if not have_master:
        return "command line"
    return "master daemon and command line" if overridden else "master daemon"


# -- choosing and mapping connections -------------------------------------------------------------------


def _norm(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _fwmark_of_template(conn: Connection) -> int:
    """A fwmark service's template carries the mark in its virtual address (htonl(fwmark))."""
    try:
        packed = ipaddress.ip_address(conn.virtual).packed
    except ValueError:
        return 0
    return int.from_bytes(packed[:4], "big")


class ServiceIndex:
    """Finds the service and real server of a connection: its forwarding method and fwmark."""

    def __init__(self, services: Iterable[Service]):
        self.by_virtual: dict[tuple[str, str, int], Service] = {}
        self.by_fwmark: dict[int, Service] = {}
        self.fwmark_by_dest: dict[tuple[str, int], Service] = {}
        for service in services:
            key = service.key
            if key.fwmark:
                self.by_fwmark.setdefault(key.fwmark, service)
                for dest in service.dests:
                    self.fwmark_by_dest.setdefault((_norm(dest.address), dest.port), service)
            else:
                self.by_virtual[(key.protocol or "", _norm(key.address), key.port)] = service

    def service_of(self, conn: Connection) -> Service | None:
        service = self.by_virtual.get((conn.protocol.lower(), _norm(conn.virtual), conn.virtual_port))
        if service is not None:
            return service
        if conn.protocol == "IP":
            return self.by_fwmark.get(_fwmark_of_template(conn))
        return self.fwmark_by_dest.get((_norm(conn.dest), conn.dest_port))

    def forward_and_fwmark(self, conn: Connection) -> tuple[str, int]:
        service = self.service_of(conn)
        if service is None:
            return "masq", 0
        dest = service.find_dest(conn.dest, conn.dest_port)
        if dest is None:
            dest = next((d for d in service.dests if _norm(d.address) == _norm(conn.dest)), None)
        return (dest.forward if dest else "masq"), service.key.fwmark


def _parse_endpoint(value: str | tuple[str, int], what: str) -> tuple[str, int]:
    if isinstance(value, tuple):
        return _norm(value[0]), value[1]
    try:
        address, port = split_host_port(value)
    except ValueError as exc:
        raise SyncConfigError(f"{what}: {exc}") from None
    return address, port


def select_connections(
    connections: Iterable[Connection],
    services: Sequence[Service] = (),
    service: ServiceKey | str | tuple[str, int] | None = None,
    real_server: DestKey | str | tuple[str, int] | None = None,
) -> tuple[list[Connection], str]:
    """All connections, or those of one virtual service and/or one real server, and a label.

    ADDR:PORT forms are checked against the configured services when there are any. A
    service's persistence templates go with it (those of a port-0 service have port 0).
    """
    index = ServiceIndex(services)
    labels = []
    chosen = list(connections)
    if isinstance(real_server, DestKey):
        service = service or real_server.service
    if isinstance(service, ServiceKey):
        key = service
        labels.append(f"service {key}")
        if key.fwmark:
            chosen = [c for c in chosen if (s := index.service_of(c)) is not None and s.key == key]
        else:
            address = _norm(key.address)
            chosen = [
                c
                for c in chosen
                if _norm(c.virtual) == address
                and (c.virtual_port == key.port or (connection_is_template(c) and c.virtual_port == 0))
                and (connection_is_template(c) or c.protocol.lower() == key.protocol)
            ]
    elif service is not None:
        address, port = _parse_endpoint(service, "--service")
        if services and not any(
            not s.key.fwmark and _norm(s.key.address) == address and s.key.port == port for s in services
        ):
            raise SyncConfigError(f"no virtual service {_endpoint(address, port)} is configured")
        labels.append(f"service {_endpoint(address, port)}")
        chosen = [
            c
            for c in chosen
            if _norm(c.virtual) == address
            and (c.virtual_port == port or (connection_is_template(c) and c.virtual_port == 0))
        ]
    if real_server is not None:
        if isinstance(real_server, DestKey):
            address, port = _norm(real_server.address), real_server.port
        else:
            address, port = _parse_endpoint(real_server, "--real-server")
            if services and not any(
                _norm(d.address) == address and d.port == port for s in services for d in s.dests
            ):
                raise SyncConfigError(f"no real server {_endpoint(address, port)} is configured")
        labels.append(f"real server {_endpoint(address, port)}")
        chosen = [c for c in chosen if _norm(c.dest) == address and c.dest_port == port]
    return chosen, " and ".join(labels) or "all connections"


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def to_sync_conns(
    connections: Iterable[Connection], services: Sequence[Service] = ()
) -> tuple[list[SyncConn], dict[str, int]]:
    """Map /proc entries to sync entries; those that cannot be mapped are counted by reason."""
    index = ServiceIndex(services)
    entries: list[SyncConn] = []
    skipped: collections.Counter = collections.Counter()
    for conn in connections:
        forward, fwmark = index.forward_and_fwmark(conn)
        try:
            entries.append(from_connection(conn, forward=forward, fwmark=fwmark))
        except ValueError as exc:
            skipped[str(exc)] += 1
    return entries, dict(skipped)


# -- the plan --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResyncPlan:
    """Messages ready to send, what they carry, and where they go."""

    settings: SyncSettings
    packed: Packed
    selection: str = "all connections"
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> connections left out
    netns: str | None = None  # the namespace the sending socket is opened in

    @property
    def connections(self) -> int:
        return self.packed.connections

    @property
    def messages(self) -> int:
        return len(self.packed.messages)

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    def skipped_text(self) -> str:
        if not self.skipped:
            return ""
        reasons = "; ".join(f"{reason} ({count})" for reason, count in sorted(self.skipped.items()))
        return f"{self.skipped_count} left out: {reasons}"

    def describe(self) -> str:
        """The confirmation text: how many connections, to which group, port, interface and syncid."""
        seconds = self.connections / self.settings.rate
        text = (
            f"Resync {self.connections} connections ({self.selection}) in {self.messages} messages "
            f"to {self.settings.describe()}, at most {self.settings.rate:g} connections/s"
        )
        if seconds >= 1:
            text += f" (about {seconds:.0f} s)"
        if self.skipped:
            text += f"; {self.skipped_text()}"
        return text

    def dry_run_lines(self) -> list[str]:
        """What would be sent, decoded back from the very bytes that would go out."""
        lines = []
        for number, message in enumerate(self.packed.messages, 1):
            decoded = decode_message(message.data)
            lines.append(
                f"message {number}: {len(message.data)} bytes, {len(decoded.conns)} connections, "
                f"syncid {decoded.syncid}, protocol v{decoded.version}"
                + (f", MALFORMED: {decoded.error}" if decoded.error else "")
            )
            lines.extend(f"  {conn.describe()}" for conn in decoded.conns)
            lines.extend(f"  skipped: {reason}" for reason in decoded.skipped)
        return lines

    def run(
        self,
        progress: Callable[[SendProgress], None] | None = None,
        cancel: threading.Event | None = None,
        loop: bool = False,
    ) -> SendReport:
        """Send the messages at the settings' rate; SyncConfigError when the socket cannot be opened."""
        settings = self.settings
        with SyncSocket(settings.interface, settings.group, settings.port, settings.ttl, self.netns, loop) as sock:
            return send_messages(sock, self.packed.messages, settings.rate, progress, cancel)

    def summary(self, report: SendReport) -> str:
        """One line: what was sent, where, how fast; or why it stopped."""
        settings = self.settings
        text = (
            f"sent {report.connections} connections in {report.messages} messages to {settings.destination} "
            f"(syncid {settings.syncid}, sync protocol v{settings.version}, from the {settings.origin}) "
            f"in {report.seconds:.2f} s"
        )
        rate = report.achieved_rate
        if rate is not None:
            text += f", {rate:.0f} connections/s"
        if report.cancelled:
            text += f"; cancelled, {report.total_connections - report.connections} not sent"
        if report.error:
            text += f"; {report.error}"
        return text


def build_plan(
    connections: Iterable[Connection],
    services: Sequence[Service],
    settings: SyncSettings,
    *,
    service: ServiceKey | str | tuple[str, int] | None = None,
    real_server: DestKey | str | tuple[str, int] | None = None,
    netns: str | None = None,
    check_interface: bool = True,
) -> ResyncPlan:
    """Choose, map and pack the connections; SyncConfigError for bad settings or selections."""
    settings.check()
    if check_interface:
        interface_index(settings.interface, netns)
    chosen, selection = select_connections(connections, services, service, real_server)
    entries, skipped = to_sync_conns(chosen, services)
    packed = pack(entries, settings.syncid, settings.version, settings.maxlen)
    all_skipped = collections.Counter(skipped)
    all_skipped.update(packed.skipped)
    return ResyncPlan(settings, packed, selection, dict(all_skipped), netns)


def plan_resync(
    state: RawState,
    *,
    service: ServiceKey | str | tuple[str, int] | None = None,
    real_server: DestKey | str | tuple[str, int] | None = None,
    netns: str | None = None,
    **overrides,
) -> ResyncPlan:
    """A plan from one poll of the backend: its connections, services, daemons and sync_version.

    `overrides` are resolve_settings() keywords (interface, syncid, group, port, ttl, maxlen,
    version, rate). Raises SyncConfigError with a one-line reason.
    """
    if state.connections is None:
        raise SyncConfigError("the connection table is not being read (--no-connections): nothing to resync")
    settings = resolve_settings(state.daemons, state.sync_version, **overrides)
    return build_plan(state.connections, state.services, settings, service=service, real_server=real_server, netns=netns)


# -- the sync test ------------------------------------------------------------------------------------------


def make_test_connection(
    services: Sequence[Service] = (), timeout: int = DEFAULT_TEST_TIMEOUT, rng: random.Random | None = None
) -> SyncConn:
    """A marked connection for the first service: a TEST-NET client, state ESTABLISHED, a short timeout.

    Without a service with an address (fwmark services have none) it uses TEST-NET addresses
    throughout; a backup installs it all the same, bound to no real server.
    """
    rng = rng or random.Random()
    service = next((s for s in services if not s.key.fwmark and s.key.protocol in ("tcp", "udp", "sctp")), None)
    ipv6 = service is not None and service.key.af == "inet6"
    net = TEST_NET6 if ipv6 else TEST_NET4
    client = str(net[rng.randrange(1, 255)])
    if service is None:
        protocol, virtual, vport, dest, dport, forward = "TCP", str(net[254]), 80, str(net[253]), 80, "masq"
    else:
        protocol, virtual, vport = service.key.protocol.upper(), service.key.address, service.key.port
        if service.dests:
            first = service.dests[0]
            dest, dport, forward = first.address, first.port or vport, first.forward
        else:
            dest, dport, forward = str(net[253]), vport, "masq"
    state = "UDP" if protocol == "UDP" else "ESTABLISHED"
    conn = Connection(protocol, client, rng.randrange(49152, 65536), virtual, vport, dest, dport, state, timeout)
    return from_connection(conn, forward=forward, timeout=timeout)


def _same_entry(row: Connection, conn: SyncConn) -> bool:
    return (
        row.protocol == conn.protocol_name
        and _norm(row.client) == conn.client
        and row.client_port == conn.client_port
        and _norm(row.virtual) == conn.virtual
        and row.virtual_port == conn.virtual_port
        and _norm(row.dest) == conn.dest
        and row.dest_port == conn.dest_port
    )


@dataclass(frozen=True)
class SyncTestResult:
    """What the sync test sent, and whether the backup on this host installed it."""

    conn: SyncConn
    settings: SyncSettings
    report: SendReport | None
    error: str | None = None
    verified: bool | None = None  # None: no backup on this host to check with
    verified_where: str = ""  # e.g. "the backup in namespace b"
    seconds: float | None = None  # until the backup showed it
    backup_syncid: int | None = None  # the local backup's syncid, when known

    @property
    def ok(self) -> bool:
        return self.error is None and self.verified is not False

    def summary(self) -> str:
        sent = (
            f"sync test: {self.conn.describe()} to {self.settings.destination} "
            f"(syncid {self.settings.syncid}, sync protocol v{self.settings.version})"
        )
        if self.error:
            return f"{sent}: not sent: {self.error}"
        if self.verified is None:
            return f"{sent}: sent; no backup daemon on this host to verify receipt"
        if self.verified:
            return f"{sent}: received by {self.verified_where} after {self.seconds:.1f} s"
        text = f"{sent}: NOT received by {self.verified_where} within {self.seconds:.0f} s"
        if self.backup_syncid not in (None, 0, self.settings.syncid):
            text += f" (its syncid is {self.backup_syncid}, the test used {self.settings.syncid})"
        return text


def run_sync_test(
    settings: SyncSettings,
    services: Sequence[Service] = (),
    *,
    daemons: Iterable[Daemon] = (),
    netns: str | None = None,
    backup_netns: str | None = None,
    wait: float = VERIFY_SECONDS,
    cancel: threading.Event | None = None,
    backup_syncid: int | None = None,
    conn: SyncConn | None = None,
) -> SyncTestResult:
    """Send one marked test connection and, where a backup runs on this host, look for it there.

    The backup is the one in `backup_netns`, or a backup daemon among `daemons` (those of the
    sender's namespace). For a backup in the sender's own namespace, multicast loopback is
    turned on for this one message, so that it can reach it.
    """
    cancel = cancel or threading.Event()
    conn = conn or make_test_connection(services)
    settings.check()
    local_backup = next((d for d in daemons if d.state == "backup"), None)
    verifying, verify_ns, where = False, None, ""
    if backup_netns is not None:
        verifying, verify_ns, where = True, backup_netns, f"the backup in namespace {backup_netns}"
    elif local_backup is not None:
        verifying, verify_ns, where = True, netns, "the backup daemon in this namespace"
        backup_syncid = backup_syncid if backup_syncid is not None else local_backup.syncid
    # A backup in the sender's own namespace sees the message only with multicast loopback on.
    loop = verifying and verify_ns == netns
    packed = pack([conn], settings.syncid, settings.version, settings.maxlen)
    if not packed.messages:
        reason = next(iter(packed.skipped), "cannot be encoded")
        return SyncTestResult(conn, settings, None, error=reason)
    try:
        with SyncSocket(settings.interface, settings.group, settings.port, settings.ttl, netns, loop) as sock:
            report = send_messages(sock, packed.messages, settings.rate, cancel=cancel)
    except SyncConfigError as exc:
        return SyncTestResult(conn, settings, None, error=str(exc))
    if report.error or not report.connections:
        return SyncTestResult(conn, settings, report, error=report.error or "cancelled")
    if not verifying:
        return SyncTestResult(conn, settings, report)
    started = time.monotonic()
    while True:
        try:
            rows = read_conn_table(verify_ns, origin=True)
        except SyncConfigError as exc:
            return SyncTestResult(conn, settings, report, error=f"cannot verify: {exc}")
        elapsed = time.monotonic() - started
        if any(row.origin == "SYNC" and _same_entry(row, conn) for row in rows):
            return SyncTestResult(conn, settings, report, None, True, where, elapsed, backup_syncid)
        if elapsed >= wait or cancel.wait(VERIFY_INTERVAL):
            return SyncTestResult(conn, settings, report, None, False, where, elapsed, backup_syncid)


# -- background jobs for the dashboard -----------------------------------------------------------------


@dataclass(frozen=True)
class JobOutcome:
    """How a background resync or sync test ended; `message` is one line for the status bar."""

    ok: bool
    message: str
    report: SendReport | None = None
    test: SyncTestResult | None = None


class SyncJob(threading.Thread):
    """A resync or sync test in a thread of its own, cancellable (Esc).

    Callbacks are called from this thread: the dashboard must hand them to its loop
    (MainLoop.call_from_thread) and touch no widget in them directly.
    """

    def __init__(
        self,
        work: Callable[[threading.Event], JobOutcome],
        on_done: Callable[[JobOutcome], None] | None = None,
        label: str = "resync",
    ):
        super().__init__(name=f"ipvsman-{label}", daemon=True)
        self.label = label
        self._work = work
        self._on_done = on_done or (lambda outcome: None)
        self._cancel = threading.Event()
        self.outcome: JobOutcome | None = None

    @classmethod
    def resync(
        cls,
        plan: ResyncPlan,
        on_progress: Callable[[SendProgress], None] | None = None,
        on_done: Callable[[JobOutcome], None] | None = None,
    ) -> SyncJob:
        def work(cancel: threading.Event) -> JobOutcome:
            report = plan.run(progress=on_progress, cancel=cancel)
            return JobOutcome(report.complete, plan.summary(report), report=report)

        return cls(work, on_done, "resync")

    @classmethod
    def sync_test(
        cls, settings: SyncSettings, on_done: Callable[[JobOutcome], None] | None = None, **kwargs
    ) -> SyncJob:
        """kwargs are run_sync_test()'s: services, daemons, netns, backup_netns, wait."""

        def work(cancel: threading.Event) -> JobOutcome:
            result = run_sync_test(settings, cancel=cancel, **kwargs)
            return JobOutcome(result.ok, result.summary(), report=result.report, test=result)

        return cls(work, on_done, "sync-test")

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> None:
        try:
            outcome = self._work(self._cancel)
        except SyncConfigError as exc:
            outcome = JobOutcome(False, f"{self.label}: {exc}")
        except Exception as exc:  # the thread must always report back
            outcome = JobOutcome(False, f"{self.label} failed: {type(exc).__name__}: {exc}")
        self.outcome = outcome
        self._on_done(outcome)


def sync_test_settings(state: RawState, **overrides) -> SyncSettings:
    """Settings for the sync test from one poll (the master daemon's unless overridden)."""
    return resolve_settings(state.daemons, state.sync_version, **overrides)

