"""Immutable values describing one look at an IPVS director: what backends return and views show."""

from __future__ import annotations

import functools
import ipaddress
import itertools
import operator
import socket
import struct
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
    """IPVS_CMD_GET_INFO: the kernel's IPVS version and connection hash table size; None when not read."""

    # None, not "" and 0, by default: a state made without asking the kernel must not pass for
    # one that asked it (a script would read "table size 0").
    version: str | None = None
    conn_table_size: int | None = None

    @property
    def known(self) -> bool:
        return self.version is not None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """IPVS_CMD_GET_CONFIG: the tcp, tcp-fin and udp timeouts in seconds; None when not read."""

    tcp: int | None = None
    tcp_fin: int | None = None
    udp: int | None = None

    @property
    def known(self) -> bool:
        return None not in (self.tcp, self.tcp_fin, self.udp)


class UnknownDaemons(tuple):
    """The sync daemons of a state that could not ask the kernel (no CAP_NET_ADMIN, nothing polled yet).

    Empty, so that code which only iterates (the sync panel, resync's settings) still works, but
    not "no daemon running": daemons_known() tells the two apart for what is shown.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNKNOWN_DAEMONS"


UNKNOWN_DAEMONS = UnknownDaemons()


def daemons_known(daemons: Sequence[Daemon]) -> bool:
    """False for UNKNOWN_DAEMONS (not read), true for any list read from the kernel, empty or not."""
    return not isinstance(daemons, UnknownDaemons)


# The states the kernel gives persistence templates (ip_vs_ctpl_state_name_table).
TEMPLATE_STATES = frozenset(("NONE", "ASSURED"))
SKIP_MALFORMED = "malformed /proc lines"  # RawState.skipped's reason for table lines that did not parse


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


# -- the connection table in compact form ---------------------------------------------------------
#
# As Connection tuples a 200,000-entry table takes some 50 MB (a 12-tuple, a client address string
# and a list slot each), and a poll holds two tables (the one shown and the one being read). A
# ConnectionTable holds an entry in a fixed-size record of 24 bytes instead, and makes a
# Connection only when one is asked for (a screenful, a filter, --once).

# The words of an entry (protocol, state, origin) as one code into CONNECTION_KINDS, shared by
# every table: the kernel has a few dozen such combinations, so a code of 2 bytes replaces three
# pointers. The high bit of a code is not part of it: it says where the client is (see below).
CONNECTION_KINDS: list[tuple[str, str, str | None]] = [("", "", None)]  # 0 unused: a found code is true
_kind_codes: dict[tuple[str, str, str | None], int] = {}
_kinds_lock = threading.Lock()  # parsers run in the polling thread and in netns threads
OTHER_CLIENT = 0x8000  # in a kind code: the client is an index into the table's side list
KIND_MASK = OTHER_CLIENT - 1

# One entry, big-endian, standard sizes, no padding: kind code (H); virtual address (I, an index
# into the table's list of distinct addresses); virtual port (H); real server address (I, the
# same list); real server port (H); client (4 bytes: an IPv4 address, or an index into the
# table's side list when the kind says so); client port (H); expires (I).
# - What decides where an entry is counted comes first: its 14 bytes count as one bytes object.
# - Big-endian: the client and its port are the 6 bytes /proc prints in 12 hex digits, so a
#   parser decodes both with one bytes.fromhex, and bytes compare as the numbers do.
# struct.error when a value does not fit: the parsers count such a line as malformed.
# Records, not a column (array.array) per field: a parser packs a line with one call, where eight
# array appends took twice as long, and Struct.iter_unpack still reads any fields column-wise.
CONNECTION_RECORD = struct.Struct(">HIHIH4sHI")
_ROUTING = struct.Struct(">HIHIH")
_ROUTING_PART = struct.Struct(">14s10x")
# Offsets and formats of the fields, for one field of every entry through Struct.iter_unpack.
_FIELD_PARTS = {
    name: struct.Struct(f">{offset}x{code}{CONNECTION_RECORD.size - offset - struct.calcsize('>' + code)}x")
    for name, offset, code in (
        ("kind", 0, "H"),
        ("virtual", 2, "I"),
        ("virtual_port", 6, "H"),
        ("dest", 8, "I"),
        ("dest_port", 12, "H"),
        ("client", 14, "4s"),
        ("client_port", 18, "H"),
        ("expires", 20, "I"),
    )
}
_KIND_FIELDS = {"protocol": 0, "state": 1, "origin": 2}
_CLIENT_AND_PORT = struct.Struct(">14x6s4x")
_CLIENT_OFFSET = 14  # of the client's 4 bytes in a record
_COUNT_CHUNK = 8192  # records counted in one C call by routing_counts (about 1.5 ms)
_FEW_CLIENTS = 8  # rows_of_clients looks for up to this many clients one by one, with bytes.find
_int_from_big_endian = functools.partial(int.from_bytes, byteorder="big")

_inet_ntoa = socket.inet_ntoa
_new_connection = tuple.__new__
_chain = itertools.chain.from_iterable
_NO_PE = ("", "")


class _Lookup(dict):
    """code -> key(value(code)), each made when first asked for (from C, through __missing__), and
    key called once per distinct value: a column of 200,000 entries has a few dozen."""

    __slots__ = ("_value", "_key", "_keyed")

    def __init__(self, value: Callable[[int], object], key: Callable[[object], object] | None):
        super().__init__()
        self._value, self._key, self._keyed = value, key, {}

    def __missing__(self, code: int) -> object:
        value = self._value(code)
        if self._key is not None:
            if value not in self._keyed:
                self._keyed[value] = self._key(value)
            value = self._keyed[value]
        self[code] = value
        return value


def connection_kind(protocol: str, state: str, origin: str | None) -> int:
    """The code of (protocol, state, origin) in CONNECTION_KINDS, added when new; ValueError when none is left."""
    key = (protocol, state, origin)
    code = _kind_codes.get(key)
    if code is None:
        with _kinds_lock:
            code = _kind_codes.get(key)
            if code is None:
                # 32,767 combinations: the kernel's words are a few dozen, so only garbage gets here.
                if len(CONNECTION_KINDS) > KIND_MASK:
                    raise ValueError(f"too many distinct protocol, state and origin words: {key!r}")
                code = len(CONNECTION_KINDS)
                CONNECTION_KINDS.append(key)  # before the code can be found: readers never miss it
                _kind_codes[key] = code
    return code


class ConnectionTable(Sequence[Connection]):
    """The connection table as packed records (24 bytes an entry), read-only, yielding Connection tuples."""

    __slots__ = ("_records", "_addresses", "_other_clients", "_pe", "_pe_pairs", "_length")

    def __init__(
        self,
        records: bytes | bytearray = b"",
        addresses: Sequence[str] = ("",),
        other_clients: Sequence[str] = (),
        pe: Sequence[int] | None = None,
        pe_pairs: Sequence[tuple[str, str]] = (_NO_PE,),
    ):
        """Records packed as CONNECTION_RECORD, taken as they are (the caller changes them no more);
        `addresses` and `other_clients` are what they index; `pe`, when not None, an index into
        `pe_pairs` per entry, 0 for none (pe_pairs[0] is ("", ""))."""
        length, rest = divmod(len(records), CONNECTION_RECORD.size)
        if rest or (pe is not None and len(pe) != length):
            raise ValueError("records and PE indexes do not make whole entries")
        self._records = records
        self._addresses = addresses
        self._other_clients = other_clients
        self._pe = pe
        self._pe_pairs = pe_pairs
        self._length = length

    @classmethod
    def from_connections(cls, connections: Iterable[Connection]) -> ConnectionTable:
        """The table of any Connection tuples; ValueError for a port or expiry count that does not fit."""
        records = bytearray()
        addresses: list[str] = [""]
        address_index: dict[str, int] = {}
        other_clients: list[str] = []
        pe_rows: dict[int, tuple[str, str]] = {}
        for row, conn in enumerate(connections):
            protocol, client, cport, virtual, vport, dest, dport, state, expires, origin, pe_name, pe_data = conn
            kind = connection_kind(protocol, state, origin)
            try:
                packed = socket.inet_pton(socket.AF_INET, client)
            except (OSError, TypeError, ValueError):  # not IPv4 text (ValueError: a NUL in it)
                packed = None
            if packed is None or _inet_ntoa(packed) != client:  # a 4-byte client must read back the same
                kind |= OTHER_CLIENT
                packed = len(other_clients).to_bytes(4, "big")
                other_clients.append(client)
            indexes = []
            for address in (virtual, dest):
                index = address_index.get(address)
                if index is None:
                    index = address_index[address] = len(addresses)
                    addresses.append(address)
                indexes.append(index)
            try:
                records += CONNECTION_RECORD.pack(kind, indexes[0], vport, indexes[1], dport, packed, cport, expires)
            except struct.error as exc:
                raise ValueError(f"{conn!r} does not fit a ConnectionTable: {exc}") from None
            if pe_name or pe_data:
                pe_rows[row] = (pe_name, pe_data)
        return cls(records, addresses, other_clients).with_pe(pe_rows)

    def with_pe(self, pe: Mapping[int, tuple[str, str]]) -> ConnectionTable:
        """The same entries with these ones' (PE name, PE data) replaced: {entry index: (name, data)}."""
        if not pe:
            return self
        pairs = list(self._pe_pairs)
        index_of = {pair: index for index, pair in enumerate(pairs)}
        indexes = array("I", self._pe if self._pe is not None else bytes(4 * self._length))
        for row, pair in pe.items():
            index = index_of.get(pair)
            if index is None:
                index = index_of[pair] = len(pairs)
                pairs.append(pair)
            indexes[row] = index
        return ConnectionTable(self._records, self._addresses, self._other_clients, indexes, pairs)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(map(self.__getitem__, range(self._length)[index]))
        row = operator.index(index)
        if row < 0:
            row += self._length
        if not 0 <= row < self._length:
            raise IndexError("connection table index out of range")
        kind, virtual, vport, dest, dport, client, cport, expires = CONNECTION_RECORD.unpack_from(
            self._records, row * CONNECTION_RECORD.size
        )
        protocol, state, origin = CONNECTION_KINDS[kind & KIND_MASK]
        client = self._other_clients[int.from_bytes(client, "big")] if kind & OTHER_CLIENT else _inet_ntoa(client)
        name, data = self._pe_pairs[self._pe[row]] if self._pe is not None else _NO_PE
        addresses = self._addresses
        return _new_connection(Connection, (protocol, client, cport, addresses[virtual], vport, addresses[dest], dport,
                                            state, expires, origin, name, data))  # fmt: skip

    def __iter__(self) -> Iterator[Connection]:
        # __getitem__ inlined: this makes every entry of --once, of a resync and of a text filter.
        kinds, addresses, others, pairs = CONNECTION_KINDS, self._addresses, self._other_clients, self._pe_pairs
        ntoa, new, no_pe = _inet_ntoa, _new_connection, _NO_PE
        pe = self._pe if self._pe is not None else itertools.repeat(0)
        for (kind, virtual, vport, dest, dport, client, cport, expires), pe_index in zip(
            CONNECTION_RECORD.iter_unpack(self._records), pe
        ):
            protocol, state, origin = kinds[kind & KIND_MASK]
            client = others[int.from_bytes(client, "big")] if kind & OTHER_CLIENT else ntoa(client)
            name, data = pairs[pe_index] if pe_index else no_pe
            yield new(Connection, (protocol, client, cport, addresses[virtual], vport, addresses[dest], dport, state,
                                   expires, origin, name, data))  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes, bytearray)):
            return len(self) == len(other) and all(map(operator.eq, self, other))
        return NotImplemented

    __hash__ = None  # compares by content, like a list

    def __repr__(self) -> str:
        return f"<ConnectionTable of {self._length} connections>"

    # -- column-wise: a field of every entry without a Connection per entry -------------------------
    @property
    def other_clients(self) -> Sequence[str]:
        """The client addresses that are not IPv4 (each entry's client is IPv4 or one of these)."""
        return self._other_clients

    def _field(self, name: str) -> Iterator:
        return _chain(_FIELD_PARTS[name].iter_unpack(self._records))

    def column(self, field: str, key: Callable[[object], object] | None = None) -> Iterator:
        """Connection field `field` of every entry, in order, made in C but for the clients of a table
        with other_clients. With `key`, key(value) instead: for protocol, state, origin, virtual
        and dest it is called once per distinct value, not per entry."""
        if field in _KIND_FIELDS:
            position = _KIND_FIELDS[field]
            words = _Lookup(lambda code: CONNECTION_KINDS[code & KIND_MASK][position], key)
            return map(words.__getitem__, self._field("kind"))
        if field in ("virtual", "dest"):
            addresses = self._addresses if key is None else _Lookup(self._addresses.__getitem__, key)
            return map(addresses.__getitem__, self._field(field))
        if field == "client":
            values = self._clients()
        elif field in ("pe_name", "pe_data"):
            pairs = [pair[field == "pe_data"] for pair in self._pe_pairs]
            if self._pe is None:
                values = itertools.repeat(pairs[0], self._length)
            else:
                values = map(pairs.__getitem__, self._pe)
        else:
            values = self._field(field)  # ports and expires: ints already; KeyError for no such field
        return values if key is None else map(key, values)

    def _clients(self) -> Iterator[str]:
        if not self._other_clients:
            return map(_inet_ntoa, self._field("client"))
        others, ntoa = self._other_clients, _inet_ntoa
        return (
            others[int.from_bytes(client, "big")] if kind & OTHER_CLIENT else ntoa(client)
            for kind, client in zip(self._field("kind"), self._field("client"))
        )

    def client_order(self, key: Callable[[str], object]) -> list[int]:
        """An int per entry that orders the entries as (key(client), client_port) does, for a key that
        puts IPv4 addresses first, in numeric order (as the views' address_sort_key does); made in
        C from the records, calling key only on other_clients."""
        # Address and port are the record's 6 big-endian bytes: as an int, they order so.
        keys = map(_int_from_big_endian, _chain(_CLIENT_AND_PORT.iter_unpack(self._records)))
        if not self._other_clients:
            return list(keys)
        # Any other client comes after every IPv4 one: it takes 1 << 48 plus its key's rank.
        others = list(map(key, self._other_clients))
        rank = {other: position for position, other in enumerate(sorted(set(others)))}
        ranks = [((1 << 32) + rank[other]) << 16 for other in others]
        return [
            ranks[value >> 16] | (value & 0xFFFF) if kind & OTHER_CLIENT else value
            for kind, value in zip(self._field("kind"), keys)
        ]

    def routing_counts(self) -> Counter:
        """Entries counted by (protocol, virtual, virtual_port, dest, dest_port, state), as
        Counter(map(itemgetter(...), table)) would count them, but counted in C on the records."""
        # Counted a chunk of records at a time: one count of 100,000 entries is 18 ms in C, during
        # which no other thread (the dashboard's loop) gets the interpreter lock.
        coded: Counter = Counter()
        records, step = memoryview(self._records), _COUNT_CHUNK * CONNECTION_RECORD.size
        for start in range(0, len(records), step):
            coded.update(_chain(_ROUTING_PART.iter_unpack(records[start:start + step])))
        kinds, addresses, unpack = CONNECTION_KINDS, self._addresses, _ROUTING.unpack
        counts: Counter = Counter()
        for routing, count in coded.items():
            kind, virtual, vport, dest, dport = unpack(routing)
            protocol, state, _ = kinds[kind & KIND_MASK]
            counts[(protocol, addresses[virtual], vport, addresses[dest], dport, state)] += count
        return counts

    def rows_of_clients(self, clients: Iterable[str]) -> list[int]:
        """Indexes of the entries whose client is one of `clients` (spelled as a Connection spells them)."""
        clients = set(clients)
        wanted = set()  # as records hold them: IPv4 addresses, and side-list indexes
        for client in clients:
            try:
                wanted.add(socket.inet_pton(socket.AF_INET, client))
            except (OSError, TypeError, ValueError):  # not IPv4 text (ValueError: a NUL in it)
                pass
        if len(wanted) < len(clients):
            others = self._other_clients
            wanted.update(index.to_bytes(4, "big") for index, client in enumerate(others) if client in clients)
        # Compared in C as bytes; the few candidates are then made whole, since an IPv4
        # address and a side-list index may have the same bytes.
        if len(wanted) <= _FEW_CLIENTS:
            candidates = sorted(row for needle in wanted for row in self._rows_with_client(needle))
        else:
            candidates = itertools.compress(itertools.count(), map(wanted.__contains__, self._field("client")))
        return [row for row in candidates if self[row].client in clients]

    def _rows_with_client(self, needle: bytes) -> Iterator[int]:
        """Entries whose client field holds these 4 bytes: found by bytes.find, at memory speed (a
        screenful's selection is looked for in a new table of 100,000 entries: about 2 ms, not 10 ms)."""
        records, size, offset = self._records, CONNECTION_RECORD.size, _CLIENT_OFFSET
        at = records.find(needle, offset)
        while at >= 0:
            row, rest = divmod(at - offset, size)
            if rest == 0:
                yield row
                at = records.find(needle, at + size)
            else:  # the same bytes elsewhere in a record: go on from the next record's client
                at = records.find(needle, (row + 1) * size + offset)


class StateCounts(Mapping[str, int]):
    """Connections counted by state; read-only, and 0 for a state with none.

    `estimated` when the counts are not a count of the whole table as of this poll: a sample of
    it, or an older read, scaled to the kernel's exact totals (see ipvsman.conntable).
    """

    __slots__ = ("_counts", "_total", "estimated")

    def __init__(self, counts: Mapping[str, int] | None = None, estimated: bool = False):
        self._counts = dict(counts or {})
        self._total = sum(self._counts.values())
        self.estimated = estimated

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
            return self._counts == other._counts and self.estimated == other.estimated
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._counts.items()))

    def __repr__(self) -> str:
        return f"StateCounts({self._counts!r}{', estimated=True' if self.estimated else ''})"

    @property
    def total(self) -> int:
        return self._total


EMPTY_COUNTS = StateCounts()


class DestStates(Mapping[DestKey, StateCounts]):
    """Connections by state per real server, kept by service and then (address, port) as counted:
    a poll counts thousands of real servers, and a DestKey is made and hashed in Python. A
    StateCounts is made when one is asked for (the rows on screen)."""

    __slots__ = ("_by_service",)

    def __init__(self, by_service: Mapping[ServiceKey, Mapping[tuple[str, int], Mapping[str, int]]] | None = None):
        self._by_service = by_service or {}

    def __getitem__(self, key: DestKey) -> StateCounts:
        if not isinstance(key, DestKey):
            raise KeyError(key)
        return StateCounts(self._by_service[key.service][(key.address, key.port)])  # KeyError when none

    def __iter__(self) -> Iterator[DestKey]:
        return _dest_keys(self._by_service)

    def __len__(self) -> int:
        return sum(map(len, self._by_service.values()))


def _dest_keys(by_service: Mapping[ServiceKey, Iterable[tuple[str, int]]]) -> Iterator[DestKey]:
    """The DestKeys of a mapping of services to their real servers' (address, port)."""
    for service, dests in by_service.items():
        for address, port in dests:
            yield DestKey(service, address, port)


class DestPositions:
    """Where each real server of one set of services sits in a poll's column of values:
    {service: {(address, port): position}}, in the order of the services' dests."""

    __slots__ = ("by_service", "count")

    def __init__(self, services: Sequence[Service]):
        by_service: dict[ServiceKey, dict[tuple[str, int], int]] = {}
        position = 0
        for service in services:
            where = by_service[service.key] = {}
            for dest in service.dests:
                where[(dest.address, dest.port)] = position
                position += 1
        self.by_service = by_service
        self.count = position


class DestHistory(Mapping[DestKey, tuple[int, ...]]):
    """A value per real server over the last polls (oldest first), for the real servers of the newest.

    Stored as one column of values per poll with the positions of its layout (DestPositions,
    shared while the set of services and real servers holds), and put together for a real
    server only when asked: a poll of 10,000 real servers then costs one list, not 10,000
    tuples and dict entries. A real server's history goes back to the last poll without it.
    """

    __slots__ = ("_columns",)

    def __init__(self, columns: Sequence[tuple[DestPositions, Sequence[int]]] = ()):
        self._columns = tuple(columns)

    def __getitem__(self, key: DestKey) -> tuple[int, ...]:
        if not isinstance(key, DestKey) or not self._columns:
            raise KeyError(key)
        where = (key.address, key.port)
        values = []
        for positions, column in reversed(self._columns):
            position = positions.by_service.get(key.service, _NOWHERE).get(where)
            if position is None:
                break
            values.append(column[position])
        if not values:
            raise KeyError(key)
        values.reverse()
        return tuple(values)

    def __iter__(self) -> Iterator[DestKey]:
        return _dest_keys(self._columns[-1][0].by_service if self._columns else {})

    def __len__(self) -> int:
        return self._columns[-1][0].count if self._columns else 0


_NOWHERE: Mapping = {}


@dataclass(frozen=True, slots=True)
class RawState:
    """What a backend returns from one poll, before the poller aggregates it."""

    info: IpvsInfo = IpvsInfo()
    timeouts: Timeouts = Timeouts()
    services: tuple[Service, ...] = ()
    daemons: tuple[Daemon, ...] = UNKNOWN_DAEMONS  # a tuple read from the kernel, or UNKNOWN_DAEMONS
    # A ConnectionTable from the kernel, Connection tuples from the demo; None when not read this poll.
    connections: Sequence[Connection] | None = None
    sync_version: int | None = None  # net.ipv4.vs.sync_version, None when unknown
    skipped: Mapping[str, int] = field(default_factory=dict)  # reason -> count of items skipped
    warnings: tuple[str, ...] = ()


def connection_total(dests: Iterable[Dest]) -> int:
    """The kernel's own active + inactive counts of these real servers: exact on every poll,
    whatever was read of the connection table (persistence templates aside)."""
    return sum(dest.active_conns + dest.inactive_conns for dest in dests)


@dataclass(frozen=True, slots=True)
class TableRead:
    """One read of the connection table (whole, or the first `entries` of it) and what it cost.

    Reads are rationed (ipvsman.conntable): a snapshot carries the newest read, which may be
    older than the poll, and may be a prefix of the table (`complete` false).
    """

    seq: int  # counts reads
    complete: bool  # the whole table; else its first `entries` entries
    entries: int  # entries read
    started_at: float  # time.time() when the read began
    cpu_seconds: float  # the reading thread's user + system time: the kernel's walk included
    wall_seconds: float
    forced: bool = False  # asked for with a key, not by the budget
    malformed: int = 0  # lines that did not parse
    error: str | None = None  # why the read failed (then nothing else holds)
    expected: int | None = None  # table size by the kernel's counters when the read began

    @property
    def finished_at(self) -> float:
        return self.started_at + self.wall_seconds


@dataclass(frozen=True, slots=True)
class TableStatus:
    """What a snapshot says about its connection table: the read behind its counts, how the
    budget rations reads, and whether a read is under way."""

    read: TableRead | None = None  # the newest read that succeeded; None before the first
    current: bool = False  # complete and read since the poll before: counts by state are exact
    budget_percent: float | None = None  # None: read whole every poll (no budget)
    next_read_at: float | None = None  # time.time() when the budget next allows a read; None: never
    reading_since: float | None = None  # time.time() when a read under way began
    reading_forced: bool = False
    expected: int | None = None  # entries by the kernel's counters (active + inactive + persistent)
    last_error: str | None = None  # why the newest read failed, when it did
    full_estimate: float | None = None  # CPU seconds a whole read would cost, by the last read


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
    arrangement: Arrangement | None = None  # of this layout; None when unknown
    table: TableStatus = TableStatus()  # the connection table behind connections and counts by state
    # Connections that /proc does not place for sure (a real server shared by firewall-mark
    # services: /proc names no mark), by state, under the services they may belong to.
    ambiguous_states: Mapping[tuple[ServiceKey, ...], StateCounts] = field(default_factory=dict)
    interval: float | None = None  # seconds between polls now: more than asked when polls are slow

    @property
    def services(self) -> tuple[Service, ...]:
        return self.state.services

    @property
    def connections(self) -> Sequence[Connection]:
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


@functools.lru_cache(maxsize=65536)
def address_sort_key(address: str) -> tuple:
    """Orders addresses numerically (IPv4 before IPv6); text that is no address sorts last."""
    # inet_pton first: it is many times faster than ipaddress, and a director with 100,000 real
    # servers has more addresses than the cache holds.
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            return (version, int.from_bytes(socket.inet_pton(family, address), "big"), "")
        except (OSError, ValueError):
            pass
    try:
        parsed = ipaddress.ip_address(address)  # what inet_pton does not take, such as fe80::1%eth0
    except ValueError:
        return (9, 0, address)
    return (parsed.version, int(parsed), "")


_ipv4_bytes = functools.partial(socket.inet_pton, socket.AF_INET)


def sorted_addresses(addresses: Iterable[str]) -> list[str]:
    """sorted(addresses, key=address_sort_key); when all are IPv4 (as on most directors), compared
    as packed bytes made in C: at 100,000 real servers a quarter of the time."""
    addresses = list(addresses)
    try:
        return sorted(addresses, key=_ipv4_bytes)
    except OSError:  # an IPv6 address, or text that is no address
        return sorted(addresses, key=address_sort_key)


def service_sort_key(key: ServiceKey) -> tuple:
    return (address_sort_key(key.address), key.fwmark, key.protocol or "", key.port)


def group_by_vip(services: Iterable) -> list[tuple[str, list]]:
    """Services grouped by virtual address in address order; fwmark services last under ''."""
    services = list(services)
    return [(address, [services[index] for index in group]) for address, group in vip_group_positions(services)]


def vip_group_positions(services: Sequence, in_order: Sequence[int] | None = None) -> list[tuple[str, list[int]]]:
    """group_by_vip as positions in `services`; `in_order` is services_in_order(services) when known."""
    groups: dict[str, list[int]] = {}
    for index in services_in_order(services) if in_order is None else in_order:
        groups.setdefault(services[index].key.address, []).append(index)
    return sorted(groups.items(), key=lambda item: (item[0] == "", address_sort_key(item[0])))


class Arrangement:
    """How views 1-3 arrange one layout of services (Snapshot.layout), worked out in the polling
    thread when the layout changes, so that switching to a view does not regroup 100,000 real
    servers between two frames. Everything is positions: they hold in every snapshot of the layout.

    - vip_groups: group_by_vip as (VIP, positions in services);
    - by_position: positions in services, in display order (service_sort_key);
    - servers: each real server address -> (display position, index in that service's dests),
      in display order; server_order: those addresses in address order;
    - server_blocks: view 3's blocks over them (ServerBlocks);
    - view 1's blocks, one a VIP: vip_payloads (gap, address, positions of its services),
      vip_rows (a blank line but before the first, its title, a row a service), vip_starts and
      vip_index (service key, and ("vip", address) -> block);
    - view 2's blocks: binding_payloads, a VIP's (gap, address) and then the positions of its
      services; binding_rows (a blank line but before the first VIP, its title; a row a real
      server, or one for a service without any), binding_starts, and binding_index (service key,
      and ("vip", address) -> block).
    """

    __slots__ = ("vip_groups", "by_position", "servers", "server_order", "server_blocks", "vip_payloads", "vip_rows",
                 "vip_starts", "vip_index", "binding_payloads", "binding_rows", "binding_starts",
                 "binding_index")  # fmt: skip

    def __init__(self, services: Sequence[Service]):
        self.by_position = services_in_order(services)
        self.vip_groups = vip_group_positions(services, self.by_position)
        self.servers = servers_by_address([services[index].dests for index in self.by_position])
        self.server_order = sorted_addresses(self.servers)
        self.server_blocks = ServerBlocks(self.servers, self.server_order)
        self.vip_payloads = [(number > 0, address, positions) for number, (address, positions) in
                             enumerate(self.vip_groups)]  # fmt: skip
        self.vip_rows = [len(positions) + 1 + gap for gap, _, positions in self.vip_payloads]
        self.vip_starts = list(itertools.accumulate(self.vip_rows, initial=0))
        self.vip_index: dict = {("vip", address): number for number, (address, _) in enumerate(self.vip_groups)}
        self.vip_index.update((services[position].key, number) for number, (_, positions) in
                              enumerate(self.vip_groups) for position in positions)  # fmt: skip
        payloads: list = []
        rows: list[int] = []
        index: dict = {}
        for number, (address, positions) in enumerate(self.vip_groups):
            index["vip", address] = len(payloads)
            payloads.append((number > 0, address))
            rows.append(1 + (number > 0))
            for position in positions:
                index[services[position].key] = len(payloads)
                payloads.append(position)
                rows.append(len(services[position].dests) or 1)
        self.binding_payloads, self.binding_rows, self.binding_index = payloads, rows, index
        self.binding_starts = list(itertools.accumulate(rows, initial=0))


class ServerBlocks:
    """View 3's blocks, one a real server address of `servers` (servers_by_address) in `order`:
    entries (that address's entries), rows (how many rows: a blank line but before the first, the
    address's line, one an entry), starts (each block's first row, then the total) and index
    (address -> block)."""

    __slots__ = ("entries", "rows", "starts", "index")

    def __init__(self, servers: dict[str, list], order: Sequence[str]):
        self.entries = list(map(servers.__getitem__, order))
        self.rows = [len(entries) + 2 for entries in self.entries]
        if self.rows:
            self.rows[0] -= 1
        self.starts = list(itertools.accumulate(self.rows, initial=0))
        self.index = dict(zip(order, range(len(order))))


def services_in_order(services: Sequence) -> list[int]:
    """Positions in `services`, in display order (service_sort_key)."""
    return sorted(range(len(services)), key=lambda index: service_sort_key(services[index].key))


def servers_by_address(entries_of: Sequence[Sequence], keep: Callable[[int, object], bool] | None = None) -> dict:
    """Each real server address -> [(position, index)] of every entry with that address, in order:
    entries_of[position][index] is a real server (anything with .address) of the position-th
    service. With `keep`, only entries for which keep(position, entry) holds."""
    servers: dict[str, list[tuple[int, int]]] = {}
    for position, entries in enumerate(entries_of):
        for index, entry in enumerate(entries):
            if keep is not None and not keep(position, entry):
                continue
            found = servers.get(entry.address)
            if found is None:
                servers[entry.address] = [(position, index)]
            else:
                found.append((position, index))
    return servers


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
        if ":" in host:  # fd00::1:80: fd00::1 port 80, or the address fd00::1:80?
            raise ValueError(f"{text} is ambiguous: an IPv6 address with a port needs brackets, write [{host}]:{port}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be 0-65535, got {port!r}")
    import ipaddress

    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"not an IP address: {host!r}") from None
    return address, int(port)
