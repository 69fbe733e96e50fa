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
words, addresses and ports up in caches and pack each entry into a 24-byte record of a
model.ConnectionTable (no string or tuple per entry). A line that does not parse is counted,
never raised.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence

from ipvsman import collector
from ipvsman.model import CONNECTION_RECORD, OTHER_CLIENT, SKIP_MALFORMED, Connection, ConnectionTable, connection_kind  # noqa: F401 (SKIP_MALFORMED: re-exported)

CONN_FILE = "ip_vs_conn"
CONN_SYNC_FILE = "ip_vs_conn_sync"
SYNC_VERSION_SYSCTL = "/proc/sys/net/ipv4/vs/sync_version"


HEADER_PREFIX = "Pro "

_inet_ntoa = socket.inet_ntoa
_inet_ntop = socket.inet_ntop
_inet_pton = socket.inet_pton
_fromhex = bytes.fromhex
_AF_INET6 = socket.AF_INET6
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# What a line that does not parse raises: a bad number or address (ValueError, OSError from
# inet_pton) or a value too large for its place in the record (struct.error, OverflowError).
_MALFORMED = (ValueError, OverflowError, OSError, struct.error)

# A record as the parsers pack it: the client and its port as the 6 bytes of their 12 hex digits.
_PACK_RECORD = struct.Struct(">HIHIH6sI")
assert _PACK_RECORD.size == CONNECTION_RECORD.size

# Virtual and real server ports repeat, so a shared cache of their uppercase spellings pays off
# across polls (client ports are decoded with their address instead).
_port_cache: dict[str, int] = {}


def _hex_port(text: str) -> int:
    if len(text) != 4 or not _HEX_DIGITS.issuperset(text):
        raise ValueError(f"bad port {text!r}")
    return int(text, 16)


def _port(text: str) -> int:
    value = _port_cache.get(text)
    if value is None:
        value = _hex_port(text)
        if text.isupper() or text.isdigit():
            _port_cache[text] = value
    return value


# Expiry counts repeat too (seconds up to the longest timeout): one shared cache of their text.
# Bounded, since the text is the kernel's, not ours.
_expiry_counts: dict[str, int] = {}
SHARED_LIMIT = 1 << 16


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


def _address_text(text: str) -> str:
    """An address as /proc prints it -> as ipvsadm does: dotted IPv4, compressed IPv6."""
    if len(text) == 8:
        return _inet_ntoa(_fromhex(text))
    if ":" in text:
        return _inet_ntop(_AF_INET6, _inet_pton(_AF_INET6, text))
    raise ValueError(f"bad address {text!r}")


def _new_address(text: str, cache: dict[str, int], addresses: list[str]) -> int:
    """The index of a virtual or real server address not seen yet in this table."""
    index = cache[text] = len(addresses)
    addresses.append(_address_text(text))
    return index


# A client that is not IPv4 goes into the table's side list, a string each. Clients repeat when
# one client has many connections, but a large table is mostly distinct clients: caching them all
# would hold a second copy of every address while the table is parsed, so only the first few
# thousand are looked up; the others are added again when they repeat.
CLIENT_CACHE_LIMIT = 8192


def _other_client(text: str, port: str, cache: dict[str, bytes], clients: list[str]) -> bytes:
    """The record's 6 bytes for a client that is not IPv4, and its port: its index in `clients`, big-endian."""
    if len(text) == 8:
        raise ValueError(f"bad port {port!r}")  # an IPv4 client comes here only then
    index = cache.get(text)
    if index is None:
        address = _address_text(text)  # IPv6 in compressed form; ValueError for anything else
        index = len(clients).to_bytes(4, "big")  # OverflowError only past 4 billion entries
        clients.append(address)
        if len(cache) < CLIENT_CACHE_LIMIT:
            cache[text] = index
    return index + _hex_port(port).to_bytes(2, "big")  # not cached: client ports are many


def _kind(codes: dict, key: tuple, origin: str | None) -> int:
    """The kind code of (protocol, state) and an origin not seen yet in this parse."""
    if origin is not None and origin != "LOCAL" and origin != "SYNC":
        raise ValueError(f"bad origin {origin!r}")
    code = codes[key] = connection_kind(key[0], key[1], origin)
    return code


def _body(lines: Iterable[str]) -> Iterator[str]:
    """The lines after the header line (when there is one)."""
    lines = iter(lines)
    for first in lines:
        if first.startswith(HEADER_PREFIX):
            return lines
        return itertools.chain((first,), lines)
    return lines


def parse_conn(text: str | Iterable[str]) -> tuple[ConnectionTable, int]:
    """Parse /proc/net/ip_vs_conn (its text, or its lines); returns the connections and the number
    of malformed lines."""
    with collector.paused():
        return _parse_conn(text.splitlines() if isinstance(text, str) else text)


def _parse_conn(lines: Iterable[str]) -> tuple[ConnectionTable, int]:
    records = bytearray()
    pack, record_size = _PACK_RECORD.pack, CONNECTION_RECORD.size
    addresses = [""]  # virtual and real server addresses, few; 0 unused: a found index is true
    address_index: dict[str, int] = {}
    address_get = address_index.get
    other_clients: list[str] = []
    other_index: dict[str, bytes] = {}
    pe: dict[int, tuple[str, str]] = {}  # entry -> (PE name, PE data): rare
    kinds: dict[tuple[str, str], int] = {}
    kind_get = kinds.get
    port_get, expires_get, fromhex = _port_cache.get, _expiry_counts.get, _fromhex
    malformed = 0
    for line in _body(lines):
        # PEData runs to the end of the line and may hold spaces: split off at most 11 fields.
        fields = line.split(None, 10)
        count = len(fields)
        if count == 9:
            pe_name = ""
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
            key = (protocol, state)
            kind = kind_get(key) or _kind(kinds, key, None)
            if len(client) == 8 and len(cport) == 4:
                client = fromhex(client + cport)  # address and port: ValueError when not hex
            else:
                client = _other_client(client, cport, other_index, other_clients)
                kind |= OTHER_CLIENT
            records += pack(
                kind,
                address_get(virtual) or _new_address(virtual, address_index, addresses),
                port_get(vport) or _port(vport),
                address_get(dest) or _new_address(dest, address_index, addresses),
                port_get(dport) or _port(dport),
                client,
                expires_get(expires) or _expires(expires),
            )
        except _MALFORMED:
            malformed += 1
        else:
            if pe_name:
                pe[len(records) // record_size - 1] = (pe_name, pe_data)
    return ConnectionTable(records, addresses, other_clients).with_pe(pe), malformed


def parse_conn_sync(text: str | Iterable[str]) -> tuple[ConnectionTable, int]:
    """Parse /proc/net/ip_vs_conn_sync (with Origin; its text, or its lines); returns connections and
    malformed lines."""
    with collector.paused():
        return _parse_conn_sync(text.splitlines() if isinstance(text, str) else text)


def _parse_conn_sync(lines: Iterable[str]) -> tuple[ConnectionTable, int]:
    records = bytearray()
    pack = _PACK_RECORD.pack
    addresses = [""]  # virtual and real server addresses, few; 0 unused: a found index is true
    address_index: dict[str, int] = {}
    address_get = address_index.get
    other_clients: list[str] = []
    other_index: dict[str, bytes] = {}
    kinds: dict[tuple[str, str, str], int] = {}
    kind_get = kinds.get
    port_get, expires_get, fromhex = _port_cache.get, _expiry_counts.get, _fromhex
    malformed = 0
    for line in _body(lines):
        fields = line.split()
        if len(fields) != 10:
            if fields:
                malformed += 1
            continue
        protocol, client, cport, virtual, vport, dest, dport, state, origin, expires = fields
        try:
            key = (protocol, state, origin)
            kind = kind_get(key) or _kind(kinds, key, origin)
            if len(client) == 8 and len(cport) == 4:
                client = fromhex(client + cport)  # address and port: ValueError when not hex
            else:
                client = _other_client(client, cport, other_index, other_clients)
                kind |= OTHER_CLIENT
            records += pack(
                kind,
                address_get(virtual) or _new_address(virtual, address_index, addresses),
                port_get(vport) or _port(vport),
                address_get(dest) or _new_address(dest, address_index, addresses),
                port_get(dport) or _port(dport),
                client,
                expires_get(expires) or _expires(expires),
            )
        except _MALFORMED:
            malformed += 1
    return ConnectionTable(records, addresses, other_clients), malformed


def merge_pe_data(with_origin: Sequence[Connection], with_pe: Iterable[Connection]) -> Sequence[Connection]:
    """Copy PE name and data from ip_vs_conn entries onto the same ip_vs_conn_sync entries."""
    if isinstance(with_pe, ConnectionTable):  # only its entries with a PE name are made whole
        with_pe = map(with_pe.__getitem__, itertools.compress(itertools.count(), with_pe.column("pe_name")))
    pe = {conn[:7]: (conn.pe_name, conn.pe_data) for conn in with_pe if conn.pe_name}
    if not pe:
        return with_origin
    if isinstance(with_origin, ConnectionTable):
        # Only entries of a client with PE data can match: the table finds those without a
        # Connection per entry; they are then compared whole.
        rows = with_origin.rows_of_clients({key[1] for key in pe})
        return with_origin.with_pe({row: found for row in rows if (found := pe.get(with_origin[row][:7]))})
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


def thread_net_dir() -> str:
    """The calling thread's /proc/net by a path that other threads can read too (its task's),
    so a table can be read in another thread from the namespace the polling thread entered."""
    path = f"/proc/{os.getpid()}/task/{threading.get_native_id()}/net"
    return path if os.path.isdir(path) else net_dir()


def read_text(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as handle:
        return handle.read()


# Lines are parsed as they are read, 1 MB at a time: the table's text is never all in memory
# (30 MB at 200,000 entries, plus as much again split into lines). Few, large reads also
# matter for the kernel's time: every read() of these files walks its hash table from the start.
READ_BUFFER = 1 << 20


def _parse_file(path: str, parse, limit: int | None = None) -> tuple[ConnectionTable, bool, int]:
    """(table, whether it is the whole file, malformed lines) of the first `limit` entries (all when None)."""
    with open(path, encoding="ascii", errors="replace", buffering=READ_BUFFER) as handle:
        if limit is None:
            table, malformed = parse(handle)
            return table, True, malformed
        # The header and `limit` lines; the kernel is asked for no page past them but one, to
        # learn whether the table goes on.
        table, malformed = parse(itertools.islice(handle, limit + 1))
        return table, handle.readline() == "", malformed


def read_connections(
    directory: str, want_pe_data: bool = False, limit: int | None = None
) -> tuple[ConnectionTable, bool, int]:
    """The connection table of `directory` (see net_dir), with origins when the kernel shows them:
    (table, whether it is whole, malformed lines). With `limit`, only the first `limit` entries
    in the kernel's (hash) order are read, and the kernel walks no further than they are.

    ip_vs_conn_sync has the Origin column but no PE data; ip_vs_conn is read as well only when
    `want_pe_data` (some service has a persistence engine). Raises OSError when neither exists.
    """
    try:
        connections, complete, malformed = _parse_file(os.path.join(directory, CONN_SYNC_FILE), parse_conn_sync, limit)
    except FileNotFoundError:
        return _parse_file(os.path.join(directory, CONN_FILE), parse_conn, limit)
    if want_pe_data:
        with_pe, _, malformed_pe = _parse_file(os.path.join(directory, CONN_FILE), parse_conn, limit)
        connections = merge_pe_data(connections, with_pe)
        malformed += malformed_pe
    return connections, complete, malformed


def counted_connections(ip_vs_text: str) -> int:
    """ActiveConn + InActConn of every real server in /proc/net/ip_vs's text: the size of the
    connection table by the kernel's counters (templates aside), without reading ip_vs_conn."""
    total = 0
    for line in ip_vs_text.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[0] == "->" and fields[4].isdigit() and fields[5].isdigit():
            total += int(fields[4]) + int(fields[5])
    return total


def parse_sync_version(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


def read_sync_version(path: str = SYNC_VERSION_SYSCTL) -> int | None:
    """net.ipv4.vs.sync_version of the calling thread's namespace; None when not shown."""
    try:
        return parse_sync_version(read_text(path))
    except OSError:
        return None
