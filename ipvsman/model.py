"""Immutable values describing one look at an IPVS director: what backends return and views show."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

# Forwarding methods as ipvsman names them (JSON "forward"), with the labels ipvsadm prints.
FORWARD_LABELS = {"masq": "Masq", "local": "Local", "tunnel": "Tunnel", "route": "Route"}

# Scheduler short names (ipvsadm -s) and the long names operators know them by.
SCHEDULER_NAMES = {
    "rr": "Round Robin",
    "wrr": "Weighted Round Robin",
    "lc": "Least-Connection",
    "wlc": "Weighted Least-Connection",
    "lblc": "Locality-Based Least-Connection",
    "lblcr": "Locality-Based Least-Connection with Replication",
    "dh": "Destination Hashing",
    "sh": "Source Hashing",
    "sed": "Shortest Expected Delay",
    "nq": "Never Queue",
    "fo": "Weighted Failover",
    "ovf": "Weighted Overflow",
    "mh": "Maglev Hashing",
    "twos": "Weighted Random Twos Choice",
}

# TCP connection states as /proc/net/ip_vs_conn spells them, in the kernel's order (IP_VS_TCP_S_*
# from ESTABLISHED on), which is also the order the views list them in.
TCP_STATES = (
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "SYNACK",
)
STATE_LABELS = {
    "ESTABLISHED": "Established",
    "SYN_SENT": "SYN-Sent",
    "SYN_RECV": "SYN-Recv",
    "FIN_WAIT": "Fin-Wait",
    "TIME_WAIT": "Time-Wait",
    "CLOSE": "Close",
    "CLOSE_WAIT": "Close-Wait",
    "LAST_ACK": "Last-Ack",
    "LISTEN": "Listen",
    "SYNACK": "SYN-ACK",
    "UDP": "UDP",
    "NONE": "None",
}

WEIGHT_MAX = 65535


# Stats, Rates and Dest are NamedTuples, not frozen dataclasses: a poll makes them by the
# ten thousand, and a frozen dataclass sets each field through object.__setattr__ (4.5 us for a
# Dest with its Stats and Rates on the host, two thirds of decoding a real server).
class Stats(NamedTuple):
    """Cumulative 64-bit counters of a service or real server."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0


class Rates(NamedTuple):
    """The kernel's rate estimates (per second; bytes per second for the bps fields)."""

    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    """What identifies a virtual service: protocol, address and port, or a firewall mark."""

    af: str  # "inet" or "inet6"
    protocol: str | None  # "tcp", "udp", "sctp"; None for a fwmark service
    address: str  # compressed text; "" for a fwmark service
    port: int  # 0 for a fwmark service
    fwmark: int = 0

    def __str__(self) -> str:
        if self.fwmark:
            return f"fwmark {self.fwmark}" + (" (IPv6)" if self.af == "inet6" else "")
        return f"{self.protocol} {join_host_port(self.address, self.port)}"

    @property
    def endpoint(self) -> str:
        """address:port as ipvsadm writes it, or FWM n."""
        if self.fwmark:
            return f"FWM {self.fwmark}"
        return join_host_port(self.address, self.port)


@dataclass(frozen=True, slots=True, order=True)
class DestKey:
    """What identifies a real server: the service it belongs to and its address and port."""

    service: ServiceKey
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.service} -> {join_host_port(self.address, self.port)}"


class Dest(NamedTuple):
    """A real server of one virtual service."""

    address: str
    port: int
    forward: str  # a key of FORWARD_LABELS
    weight: int
    upper_threshold: int = 0
    lower_threshold: int = 0
    active_conns: int = 0
    inactive_conns: int = 0
    persist_conns: int = 0
    stats: Stats = Stats()
    rates: Rates = Rates()
    af: str = "inet"

    @property
    def endpoint(self) -> str:
        return join_host_port(self.address, self.port)


@dataclass(frozen=True, slots=True)
class Service:
    """A virtual service with its real servers."""

    key: ServiceKey
    scheduler: str
    persistent: int | None = None  # persistence timeout in seconds, None when not persistent
    netmask: str = ""  # persistence netmask (IPv4 dotted mask, or an IPv6 prefix length)
    flags: tuple[str, ...] = ()
    pe_name: str | None = None
    stats: Stats = Stats()
    rates: Rates = Rates()
    dests: tuple[Dest, ...] = ()

    def dest_key(self, dest: Dest) -> DestKey:
        return DestKey(self.key, dest.address, dest.port)

    def find_dest(self, address: str, port: int) -> Dest | None:
        for dest in self.dests:
            if dest.address == address and dest.port == port:
                return dest
        return None


@dataclass(frozen=True, slots=True)
class Daemon:
    """A running connection-sync daemon (IPVS_CMD_GET_DAEMON)."""

    state: str  # "master" or "backup"
    interface: str
    syncid: int
    maxlen: int = 0
    group: str = "224.0.0.81"
    port: int = 8848
    ttl: int = 1


@dataclass(frozen=True, slots=True)
class IpvsInfo:
    """IPVS_CMD_GET_INFO: the kernel's IPVS version and connection hash table size."""

    version: str = ""
    conn_table_size: int = 0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """IPVS_CMD_GET_CONFIG: the tcp, tcp-fin and udp timeouts in seconds."""

    tcp: int = 0
    tcp_fin: int = 0
    udp: int = 0


# The states the kernel gives persistence templates (ip_vs_ctpl_state_name_table).
TEMPLATE_STATES = frozenset(("NONE", "ASSURED"))


class Connection(NamedTuple):
    """One entry of the connection table (/proc/net/ip_vs_conn). A tuple: there may be a million."""

    protocol: str  # "TCP", "UDP", "SCTP", "IP" (persistence template), as /proc spells it
    client: str
    client_port: int
    virtual: str
    virtual_port: int
    dest: str
    dest_port: int
    state: str
    expires: int  # seconds left
    origin: str | None = None  # "LOCAL" or "SYNC" where ip_vs_conn_sync was read
    pe_name: str = ""
    pe_data: str = ""

    @property
    def is_template(self) -> bool:
        # The kernel names a template's state NONE, or ASSURED once a connection through it
        # was established (ip_vs_ctpl_state_name_table).
        return self.protocol == "IP" or self.state in TEMPLATE_STATES


class StateCounts(Mapping[str, int]):
    """Connections counted by state; read-only, and 0 for a state with none."""

    __slots__ = ("_counts", "_total")

    def __init__(self, counts: Mapping[str, int] | None = None):
        self._counts = dict(counts or {})
        self._total = sum(self._counts.values())

    def __getitem__(self, state: str) -> int:
        return self._counts.get(state, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def __contains__(self, state: object) -> bool:
        return state in self._counts

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StateCounts):
            return self._counts == other._counts
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._counts.items()))

    def __repr__(self) -> str:
        return f"StateCounts({self._counts!r})"

    @property
    def total(self) -> int:
        return self._total


EMPTY_COUNTS = StateCounts()


class DestHistory(Mapping[DestKey, tuple[int, ...]]):
    """A value per real server, stored by service and then by (address, port): a DestKey's hash is
    computed in Python, and a poll of 10,000 real servers would hash each several times."""

    __slots__ = ("_by_service",)

    def __init__(self, by_service: Mapping[ServiceKey, Mapping[tuple[str, int], tuple[int, ...]]] | None = None):
        self._by_service = by_service or {}

    def __getitem__(self, key: DestKey) -> tuple[int, ...]:
        if not isinstance(key, DestKey):
            raise KeyError(key)
        return self._by_service[key.service][(key.address, key.port)]  # KeyError when unknown

    def __iter__(self) -> Iterator[DestKey]:
        for service, values in self._by_service.items():
            for address, port in values:
                yield DestKey(service, address, port)

    def __len__(self) -> int:
        return sum(map(len, self._by_service.values()))


@dataclass(frozen=True, slots=True)
class RawState:
    """What a backend returns from one poll, before the poller aggregates it."""

    info: IpvsInfo = IpvsInfo()
    timeouts: Timeouts = Timeouts()
    services: tuple[Service, ...] = ()
    daemons: tuple[Daemon, ...] = ()
    connections: tuple[Connection, ...] | None = None  # None when not read this poll
    sync_version: int | None = None  # net.ipv4.vs.sync_version, None when unknown
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> count of items skipped
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a view shows, as of one poll; handed from the polling thread to the UI."""

    seq: int
    taken_at: float  # time.time() when the poll finished
    poll_seconds: float  # how long the poll took
    backend: str  # "kernel" or "demo"
    writable: bool  # whether changes (weights) are permitted
    state: RawState
    service_states: Mapping[ServiceKey, StateCounts] = field(default_factory=dict)
    dest_states: Mapping[DestKey, StateCounts] = field(default_factory=dict)
    service_history: Mapping[ServiceKey, tuple[int, ...]] = field(default_factory=dict)  # cps
    dest_history: Mapping[DestKey, tuple[int, ...]] = field(default_factory=DestHistory)  # cps
    error: str | None = None  # the last poll's error; state is then the last good one
    paused: bool = False
    # Changes whenever which services and real servers there are, or their order, changes:
    # positions in `services` (and in each service's dests) taken from one snapshot hold in
    # every snapshot of the same layout. None when unknown (hand-made snapshots): no reuse.
    layout: int | None = None

    @property
    def services(self) -> tuple[Service, ...]:
        return self.state.services

    @property
    def connections(self) -> tuple[Connection, ...]:
        return self.state.connections or ()

    @property
    def daemons(self) -> tuple[Daemon, ...]:
        return self.state.daemons

    def find_service(self, key: ServiceKey) -> Service | None:
        for service in self.state.services:
            if service.key == key:
                return service
        return None

    def find_dest(self, key: DestKey) -> Dest | None:
        service = self.find_service(key.service)
        return service.find_dest(key.address, key.port) if service else None


def layout_signature(services: Iterable[Service]) -> tuple:
    """What Snapshot.layout numbers: each service's key with its real servers' addresses and ports, in order."""
    address_and_port = operator.attrgetter("address", "port")
    return tuple((service.key, tuple(map(address_and_port, service.dests))) for service in services)


def join_host_port(address: str, port: int) -> str:
    """10.0.0.1:80, or [2001:db8::1]:80 for IPv6, as ipvsadm writes them."""
    if ":" in address:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def split_host_port(text: str) -> tuple[str, int]:
    """Parse ADDR:PORT or [ADDR6]:PORT; raises ValueError with a readable reason."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPv6]:PORT, got {text!r}")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected ADDRESS:PORT, got {text!r}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0-65535, got {port!r}")
    import ipaddress

    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"not an IP address: {host!r}") from None
    return address, int(port)
