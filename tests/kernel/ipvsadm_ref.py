"""A parser of ipvsadm's listings (1.31): the reference the kernel backend is compared with.

Only numeric listings are parsed (-n). Services are keyed by model.ServiceKey and real servers
by (address, port), so a test can compare them with what the backend returned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ipvsman.model import Daemon, IpvsInfo, ServiceKey, Stats, Timeouts, split_host_port

PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


@dataclass
class ListedDest:
    forward: str  # as ipvsadm prints it: Masq, Local, Tunnel, Route
    weight: int
    active: int
    inactive: int


@dataclass
class ListedService:
    scheduler: str
    persistent: int | None = None
    mask: str | None = None  # printed only when persistent and not the full mask
    pe: str | None = None
    flags: set[str] = field(default_factory=set)  # "persistent", "ops", scheduler flags
    dests: dict[tuple[str, int], ListedDest] = field(default_factory=dict)


def _service_key(tokens: list[str]) -> tuple[ServiceKey, list[str]]:
    """'TCP 10.0.0.1:80 ...', 'FWM 7 ...' or 'FWM 8 IPv6 ...' -> key and the remaining tokens."""
    if tokens[0] == "FWM":
        if len(tokens) > 2 and tokens[2] == "IPv6":
            return ServiceKey("inet6", None, "", 0, int(tokens[1])), tokens[3:]
        return ServiceKey("inet", None, "", 0, int(tokens[1])), tokens[2:]
    address, port = split_host_port(tokens[1])
    af = "inet6" if ":" in address else "inet"
    return ServiceKey(af, PROTOCOLS[tokens[0]], address, port), tokens[2:]


def _is_service_line(line: str) -> bool:
    return line.split(None, 1)[0] in (*PROTOCOLS, "FWM") if line.strip() else False


def _dest_address(line: str) -> tuple[tuple[str, int], list[str]]:
    tokens = line.split()
    assert tokens[0] == "->", line
    return split_host_port(tokens[1]), tokens[2:]


def parse_version(text: str) -> IpvsInfo:
    """'IP Virtual Server version 1.2.1 (size=4096)' heads every listing."""
    match = re.search(r"IP Virtual Server version (\S+) \(size=(\d+)\)", text)
    assert match, text
    return IpvsInfo(match.group(1), int(match.group(2)))


def parse_list(text: str) -> dict[ServiceKey, ListedService]:
    """ipvsadm -Ln"""
    services: dict[ServiceKey, ListedService] = {}
    current = None
    for line in text.splitlines():
        if _is_service_line(line):
            key, rest = _service_key(line.split())
            current = services[key] = ListedService(scheduler=rest[0])
            rest = rest[1:]
            while rest:
                word = rest.pop(0)
                if word == "persistent":
                    current.persistent = int(rest.pop(0))
                    current.flags.add("persistent")
                elif word == "mask":
                    current.mask = rest.pop(0)
                elif word == "pe":
                    current.pe = rest.pop(0)
                elif word.startswith("("):  # scheduler flags: (sh-fallback,sh-port)
                    current.flags.update(word.strip("()").split(","))
                else:
                    current.flags.add(word)  # ops
        elif line.startswith("  -> ") and current is not None and "RemoteAddress" not in line:
            address, rest = _dest_address(line)
            current.dests[address] = ListedDest(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    return services


def _parse_dest_columns(text: str) -> tuple[dict, dict]:
    """Listings whose service and real-server lines end in columns of numbers."""
    services: dict[ServiceKey, tuple[int, ...]] = {}
    dests: dict[tuple[ServiceKey, tuple[str, int]], tuple[int, ...]] = {}
    current = None
    for line in text.splitlines():
        if _is_service_line(line):
            current, rest = _service_key(line.split())
            numbers = [word for word in rest if word.isdigit()]
            services[current] = tuple(int(n) for n in numbers)
        elif line.startswith("  -> ") and current is not None and "RemoteAddress" not in line:
            address, rest = _dest_address(line)
            dests[(current, address)] = tuple(int(n) for n in rest)
    return services, dests


def parse_stats(text: str) -> tuple[dict[ServiceKey, Stats], dict[tuple[ServiceKey, tuple[str, int]], Stats]]:
    """ipvsadm -Ln --stats --exact: conns, inpkts, outpkts, inbytes, outbytes."""
    services, dests = _parse_dest_columns(text)
    return (
        {key: Stats(*values) for key, values in services.items()},
        {key: Stats(*values) for key, values in dests.items()},
    )


def parse_thresholds(text: str) -> dict[tuple[ServiceKey, tuple[str, int]], tuple[int, int, int, int]]:
    """ipvsadm -Ln --thresholds: upper, lower, active, inactive per real server."""
    return _parse_dest_columns(text)[1]


def parse_persistent(text: str) -> dict[tuple[ServiceKey, tuple[str, int]], tuple[int, int, int, int]]:
    """ipvsadm -Ln --persistent-conn: weight, persistent, active, inactive per real server."""
    return _parse_dest_columns(text)[1]


@dataclass(frozen=True)
class ListedConnection:
    protocol: str
    expires: int  # seconds
    state: str
    source: tuple[str, int]
    virtual: tuple[str, int]
    destination: tuple[str, int]


def parse_connections(text: str) -> list[ListedConnection]:
    """ipvsadm -Lnc: 'TCP 01:59  TIME_WAIT   10.99.0.1:41234  10.99.0.100:80  10.98.2.2:8080'."""
    connections = []
    for line in text.splitlines()[2:]:
        tokens = line.split()
        if len(tokens) < 6:
            continue
        minutes, seconds = tokens[1].split(":")
        connections.append(
            ListedConnection(
                tokens[0],
                int(minutes) * 60 + int(seconds),
                tokens[2],
                split_host_port(tokens[3]),
                split_host_port(tokens[4]),
                split_host_port(tokens[5]),
            )
        )
    return connections


DAEMON_LINE = re.compile(
    r"(master|backup) sync daemon \(mcast=(\S+), syncid=(\d+)"
    r"(?:, maxlen=(\d+), group=([^,]+), port=(\d+), ttl=(\d+))?\)"
)


def parse_daemons(text: str) -> list[Daemon]:
    """ipvsadm -L --daemon"""
    daemons = []
    for match in DAEMON_LINE.finditer(text):
        state, interface, syncid, maxlen, group, port, ttl = match.groups()
        # ipvsadm before 1.29 printed only the interface and the syncid: the kernel defaults then.
        daemons.append(
            Daemon(
                state, interface, int(syncid), int(maxlen or 0), group or "224.0.0.81", int(port or 8848), int(ttl or 1)
            )
        )
    return daemons


def parse_timeouts(text: str) -> Timeouts:
    """ipvsadm -L --timeout: 'Timeout (tcp tcpfin udp): 900 120 300'."""
    match = re.search(r"Timeout \(tcp tcpfin udp\): (\d+) (\d+) (\d+)", text)
    assert match, text
    return Timeouts(*(int(group) for group in match.groups()))
