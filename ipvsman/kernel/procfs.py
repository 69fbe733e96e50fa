"""The IPVS connection table and sysctls from /proc: fast parsers of text, and the reads behind them.

/proc/net/ip_vs_conn (ip_vs_conn.c, ip_vs_conn_seq_show) prints one line per entry:

    Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
    TCP 0A630003 A1B2 0A000001 0050 0A630202 0050 ESTABLISHED     898
    UDP 2001:0db8:0000:0000:0000:0000:0000:0003 D431 ... 0035 UDP             297 sip <call-id>

IPv4 addresses and all ports are uppercase hex in host order (%08X, %04X); IPv6 addresses are in
full colon form (%pI6); the real server's family may differ from the client's. Expires is in
seconds. /proc/net/ip_vs_conn_sync has no PE columns and an Origin column (LOCAL or SYNC) before
Expires. Persistence templates show protocol IP (fwmark services) or state NONE.

The table can hold hundreds of thousands of entries, so the parsers split each line once, look
addresses and ports up in caches, and build the tuples without keyword arguments. A line that
does not parse is counted, never raised.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator

from ipvsman import collector
from ipvsman.model import Connection

CONN_FILE = "ip_vs_conn"
CONN_SYNC_FILE = "ip_vs_conn_sync"
SYNC_VERSION_SYSCTL = "/proc/sys/net/ipv4/vs/sync_version"

SKIP_MALFORMED = "malformed /proc lines"

HEADER_PREFIX = "Pro "

_new_connection = tuple.__new__
_inet_ntoa = socket.inet_ntoa
_inet_ntop = socket.inet_ntop
_inet_pton = socket.inet_pton
_fromhex = bytes.fromhex
_AF_INET6 = socket.AF_INET6
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

# Ports repeat (a few virtual and real ports, at most 65536 client ports), so a shared cache of
# at most 65536 uppercase spellings pays off across polls; addresses are cached per parse only,
# since client addresses are unbounded.
_port_cache: dict[str, int] = {}


def _port(text: str) -> int:
    value = _port_cache.get(text)
    if value is None:
        if len(text) != 4 or not _HEX_DIGITS.issuperset(text):
            raise ValueError(f"bad port {text!r}")
        value = int(text, 16)
        if text.isupper() or text.isdigit():
            _port_cache[text] = value
    return value


# The same few words (protocols, states, origins) and expiry counts come on every line: one
# shared object for each, instead of a new string or int per connection (at 200,000
# connections that is some 30 MB). Bounded, since the text is the kernel's, not ours.
_words: dict[str, str] = {}
_expiry_counts: dict[str, int] = {}
SHARED_LIMIT = 1 << 16


def _word(text: str) -> str:
    if len(_words) < SHARED_LIMIT:
        _words[text] = text
    return text


def _expires(text: str) -> int:
    if not (text.isdigit() and text.isascii()):
        raise ValueError(text)
    value = int(text)
    if len(_expiry_counts) < SHARED_LIMIT:
        _expiry_counts[text] = value
    return value


def hex_to_ipv4(text: str) -> str:
    """'0A000001' (as /proc prints an IPv4 address) -> '10.0.0.1'; ValueError when malformed."""
    if len(text) != 8:
        raise ValueError(f"bad IPv4 address {text!r}")
    return _inet_ntoa(_fromhex(text))


def _address(text: str, cache: dict, limit: int | None = None) -> str:
    address = cache.get(text)
    if address is None:
        if len(text) == 8:
            address = _inet_ntoa(_fromhex(text))
        elif ":" in text:
            address = _inet_ntop(_AF_INET6, _inet_pton(_AF_INET6, text))  # compressed form
        else:
            raise ValueError(f"bad address {text!r}")
        if limit is None or len(cache) < limit:
            cache[text] = address
    return address


# Clients repeat when one client has many connections, but a large table is mostly distinct
# clients: caching them all would hold a second copy of every address while the table is
# parsed (20 MB at 200,000 entries), so only the first few thousand are kept.
CLIENT_CACHE_LIMIT = 8192


def _lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines after the header line (when there is one)."""
    lines = iter(lines)
    for first in lines:
        if not first.startswith(HEADER_PREFIX):
            yield first
        break
    yield from lines


def parse_conn(text: str | Iterable[str]) -> tuple[list[Connection], int]:
    """Parse /proc/net/ip_vs_conn (its text, or its lines); returns the connections and the number
    of malformed lines."""
    with collector.paused():
        return _parse_conn(text.splitlines() if isinstance(text, str) else text)


def _parse_conn(lines: Iterable[str]) -> tuple[list[Connection], int]:
    connections = []
    append = connections.append
    addresses: dict[str, str] = {}  # virtual and real server addresses: few
    address_get = addresses.get
    clients: dict[str, str] = {}
    client_get = clients.get
    port_get = _port_cache.get
    word_get, expires_get = _words.get, _expiry_counts.get
    malformed = 0
    for line in _lines(lines):
        # PEData runs to the end of the line and may hold spaces: split off at most 11 fields.
        fields = line.split(None, 10)
        count = len(fields)
        if count == 9:
            pe_name = pe_data = ""
        elif count == 11:
            pe_name = fields[9]
            pe_data = fields[10].rstrip()
        elif count == 10:  # a PE that had nothing to show
            pe_name = fields[9]
            pe_data = ""
        else:
            if count:
                malformed += 1
            continue
        protocol, client, cport, virtual, vport, dest, dport, state, expires = fields[:9]
        try:
            # Lookups are inlined (get, then the slow path) because this runs once per entry.
            append(
                _new_connection(
                    Connection,
                    (
                        word_get(protocol) or _word(protocol),
                        client_get(client) or _address(client, clients, CLIENT_CACHE_LIMIT),
                        port_get(cport) or _port(cport),
                        address_get(virtual) or _address(virtual, addresses),
                        port_get(vport) or _port(vport),
                        address_get(dest) or _address(dest, addresses),
                        port_get(dport) or _port(dport),
                        word_get(state) or _word(state),
                        expires_get(expires) or _expires(expires),
                        None,
                        pe_name,
                        pe_data,
                    ),
                )
            )
        except (ValueError, OSError):
            malformed += 1
    return connections, malformed


def parse_conn_sync(text: str | Iterable[str]) -> tuple[list[Connection], int]:
    """Parse /proc/net/ip_vs_conn_sync (with Origin; its text, or its lines); returns connections and
    malformed lines."""
    with collector.paused():
        return _parse_conn_sync(text.splitlines() if isinstance(text, str) else text)


def _parse_conn_sync(lines: Iterable[str]) -> tuple[list[Connection], int]:
    connections = []
    append = connections.append
    addresses: dict[str, str] = {}  # virtual and real server addresses: few
    address_get = addresses.get
    clients: dict[str, str] = {}
    client_get = clients.get
    port_get = _port_cache.get
    word_get, expires_get = _words.get, _expiry_counts.get
    malformed = 0
    for line in _lines(lines):
        fields = line.split()
        if len(fields) != 10:
            if fields:
                malformed += 1
            continue
        protocol, client, cport, virtual, vport, dest, dport, state, origin, expires = fields
        try:
            if origin != "LOCAL" and origin != "SYNC":
                raise ValueError(origin)
            append(
                _new_connection(
                    Connection,
                    (
                        word_get(protocol) or _word(protocol),
                        client_get(client) or _address(client, clients, CLIENT_CACHE_LIMIT),
                        port_get(cport) or _port(cport),
                        address_get(virtual) or _address(virtual, addresses),
                        port_get(vport) or _port(vport),
                        address_get(dest) or _address(dest, addresses),
                        port_get(dport) or _port(dport),
                        word_get(state) or _word(state),
                        expires_get(expires) or _expires(expires),
                        word_get(origin) or _word(origin),
                        "",
                        "",
                    ),
                )
            )
        except (ValueError, OSError):
            malformed += 1
    return connections, malformed


def merge_pe_data(with_origin: list[Connection], with_pe: Iterable[Connection]) -> list[Connection]:
    """Copy PE name and data from ip_vs_conn entries onto the same ip_vs_conn_sync entries."""
    pe = {conn[:7]: (conn.pe_name, conn.pe_data) for conn in with_pe if conn.pe_name}
    if not pe:
        return with_origin
    merged = []
    for conn in with_origin:
        found = pe.get(conn[:7])
        merged.append(conn._replace(pe_name=found[0], pe_data=found[1]) if found else conn)
    return merged


def net_dir() -> str:
    """Where this thread's network namespace shows its /proc/net files.

    /proc/net follows the process's main thread; a thread that entered another namespace with
    setns() sees its own only under /proc/thread-self/net.
    """
    if os.path.isdir("/proc/thread-self/net"):
        return "/proc/thread-self/net"
    return "/proc/self/net"


def read_text(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as handle:
        return handle.read()


# Lines are parsed as they are read, 1 MB at a time: the table's text is never all in memory
# (30 MB at 200,000 entries, plus as much again split into lines). Few, large reads also
# matter for the kernel's time: every read() of these files walks its hash table from the start.
READ_BUFFER = 1 << 20


def _parse_file(path: str, parse) -> tuple[list[Connection], int]:
    with open(path, encoding="ascii", errors="replace", buffering=READ_BUFFER) as handle:
        return parse(handle)


def read_connections(directory: str, want_pe_data: bool = False) -> tuple[list[Connection], int]:
    """The connection table of `directory` (see net_dir), with origins when the kernel shows them.

    ip_vs_conn_sync has the Origin column but no PE data; ip_vs_conn is read as well only when
    `want_pe_data` (some service has a persistence engine). Raises OSError when neither exists.
    """
    try:
        connections, malformed = _parse_file(os.path.join(directory, CONN_SYNC_FILE), parse_conn_sync)
    except FileNotFoundError:
        return _parse_file(os.path.join(directory, CONN_FILE), parse_conn)
    if want_pe_data:
        with_pe, malformed_pe = _parse_file(os.path.join(directory, CONN_FILE), parse_conn)
        connections = merge_pe_data(connections, with_pe)
        malformed += malformed_pe
    return connections, malformed


def parse_sync_version(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def read_sync_version(path: str = SYNC_VERSION_SYSCTL) -> int | None:
    """net.ipv4.vs.sync_version of the calling thread's namespace; None when not shown."""
    try:
        return parse_sync_version(read_text(path))
    except OSError:
        return None
