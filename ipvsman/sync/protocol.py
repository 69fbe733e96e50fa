"""Encoder and decoder of the IPVS connection sync protocol, versions 0 and 1 (as ip_vs_sync.c has them)."""

from __future__ import annotations

import collections
import ipaddress
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from ipvsman.model import TCP_STATES, Connection, join_host_port

# Flag bits of a connection (include/uapi/linux/ip_vs.h, IP_VS_CONN_F_*).
F_FWD_MASK = 0x0007
F_MASQ = 0x0000
F_LOCALNODE = 0x0001
F_TUNNEL = 0x0002
F_DROUTE = 0x0003
F_BYPASS = 0x0004
F_SYNC = 0x0020
F_HASHED = 0x0040
F_NOOUTPUT = 0x0080
F_INACTIVE = 0x0100
F_OUT_SEQ = 0x0200
F_IN_SEQ = 0x0400
F_SEQ_MASK = 0x0600
F_NO_CPORT = 0x0800
F_TEMPLATE = 0x1000
F_ONE_PACKET = 0x2000
# What a backup keeps of the flags of a v1 entry before adding F_SYNC.
F_BACKUP_MASK = F_FWD_MASK | F_NOOUTPUT | F_INACTIVE | F_SEQ_MASK | F_NO_CPORT | F_TEMPLATE

FORWARD_FLAGS = {"masq": F_MASQ, "local": F_LOCALNODE, "tunnel": F_TUNNEL, "route": F_DROUTE}
FORWARD_NAMES = {value: name for name, value in FORWARD_FLAGS.items()} | {F_BYPASS: "bypass"}

DEFAULT_GROUP = "224.0.0.81"
DEFAULT_PORT = 8848
IPV4_UDP_OVERHEAD = 20 + 8
IPV6_UDP_OVERHEAD = 40 + 8
DEFAULT_MAXLEN = 1500 - IPV4_UDP_OVERHEAD  # what a master daemon uses by default on IPv4
DEFAULT_MAXLEN6 = 1500 - IPV6_UDP_OVERHEAD
MAX_CONNS_PER_MESSAGE = 255  # nr_conns is a u8
PE_DATA_MAXLEN = 255  # IP_VS_PEDATA_MAXLEN
PE_NAME_MAXLEN = 16  # IP_VS_PENAME_MAXLEN
SYNC_PROTO_VERSION = 1

# Wire layouts, network byte order.
V0_HEADER = struct.Struct("!BBH")  # nr_conns, syncid, size
V0_CONN = struct.Struct("!BBHHH4s4s4sHH")  # reserved, protocol, cport, vport, dport, caddr, vaddr, daddr, flags, state
V1_HEADER = struct.Struct("!BBHBbH")  # reserved, syncid, size, nr_conns, version, spare
V1_CONN4 = struct.Struct("!BBHIHHHHII4s4s4s")  # type, protocol, ver_size, flags, state, cport, vport, dport,
V1_CONN6 = struct.Struct("!BBHIHHHHII16s16s16s")  # fwmark, timeout, caddr, vaddr, daddr
SEQ_OPTION = struct.Struct("!IIIIII")  # in_seq then out_seq: init_seq, delta, previous_delta
V1_TYPE_INET6 = 0x01
V1_SIZE_MASK = 0x0FFF
V1_VERSION_SHIFT = 12
OPT_SEQ_DATA = 1
OPT_PE_DATA = 2
OPT_PE_NAME = 3
OPT_F_PARAM = 0x40  # an option type with this bit may be ignored by a receiver that does not know it

# IP protocol numbers by the names /proc/net/ip_vs_conn prints (ip_vs_proto_name()).
PROTOCOL_NUMBERS = {"IP": 0, "ICMP": 1, "TCP": 6, "UDP": 17, "ESP": 50, "AH": 51, "ICMPv6": 58, "SCTP": 132}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP = 6, 17, 132

# Connection states as the kernel numbers and /proc names them (enum IP_VS_*_S_* and the state name
# tables); the TCP ones after NONE are model.TCP_STATES, in the kernel's order.
TCP_STATE_NAMES = ("NONE", *TCP_STATES)
UDP_STATE_NAMES = ("UDP",)
SCTP_STATE_NAMES = (
    "NONE",
    "INIT1",
    "INIT",
    "C-SENT",
    "C-REPLIED",
    "C-WAIT",
    "COOKIE",
    "C-ECHOED",
    "ESTABLISHED",
    "S-SENT",
    "S-RECEIVED",
    "S-ACK-SENT",
    "REJECTED",
    "CLOSED",
)
TEMPLATE_STATE_NAMES = ("NONE", "ASSURED")  # persistence templates (IP_VS_CTPL_S_*)
STATE_NAMES = {IPPROTO_TCP: TCP_STATE_NAMES, IPPROTO_UDP: UDP_STATE_NAMES, IPPROTO_SCTP: SCTP_STATE_NAMES}
# Protocols a backup accepts connections of, with their number of states (AH and ESP have one).
KERNEL_PROTOCOL_STATES = {IPPROTO_TCP: 11, IPPROTO_UDP: 1, IPPROTO_SCTP: 14, 50: 1, 51: 1}
# States in which a connection counts as active (the others carry IP_VS_CONN_F_INACTIVE).
ACTIVE_STATES = {(IPPROTO_TCP, 1), (IPPROTO_SCTP, 8)}


class SeqData(NamedTuple):
    """One direction of the sequence adjustment of a NAT connection (struct ip_vs_seq)."""

    init_seq: int = 0
    delta: int = 0
    previous_delta: int = 0


NO_SEQ = SeqData()


@dataclass(frozen=True, slots=True)
class SyncConn:
    """One connection as the sync protocol carries it: kernel numbers, not /proc names."""

    protocol: int
    client: str
    client_port: int
    virtual: str
    virtual_port: int
    dest: str
    dest_port: int
    state: int
    flags: int = 0
    timeout: int = 0  # seconds; version 1 only (0 lets the backup use its default for the state)
    fwmark: int = 0  # version 1 only
    in_seq: SeqData | None = None  # version 1 sends the option when set; version 0 when flags has F_SEQ_MASK
    out_seq: SeqData | None = None
    pe_data: bytes = b""  # persistence engine data (version 1 only, sent with pe_name)
    pe_name: str = ""

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.client

    @property
    def is_template(self) -> bool:
        return bool(self.flags & F_TEMPLATE)

    @property
    def protocol_name(self) -> str:
        return PROTOCOL_NAMES.get(self.protocol, f"IP_{self.protocol}")

    @property
    def state_name(self) -> str:
        return state_name(self.protocol, self.state, self.is_template)

    @property
    def forward(self) -> str:
        return FORWARD_NAMES.get(self.flags & F_FWD_MASK, f"fwd{self.flags & F_FWD_MASK}")

    def describe(self) -> str:
        """One line: protocol, client -> virtual -> real server, state, timeout and flags."""
        text = (
            f"{self.protocol_name} {join_host_port(self.client, self.client_port)} -> "
            f"{join_host_port(self.virtual, self.virtual_port)} -> {join_host_port(self.dest, self.dest_port)} "
            f"{self.state_name}"
        )
        if self.is_template:
            text += " template"
        if self.timeout:
            text += f" timeout {self.timeout}s"
        if self.fwmark:
            text += f" fwmark {self.fwmark}"
        if self.pe_name:
            text += f" pe {self.pe_name}"
        return text + f" flags 0x{self.flags:04x} ({self.forward})"


def state_name(protocol: int, state: int, template: bool = False) -> str:
    """The name /proc/net/ip_vs_conn prints for a state number."""
    names = TEMPLATE_STATE_NAMES if template else STATE_NAMES.get(protocol)
    if names is None:
        return "NONE" if protocol == 0 else f"STATE_{state}"
    return names[state] if 0 <= state < len(names) else f"STATE_{state}"


def protocol_number(name: str) -> int:
    """The IP protocol number of a /proc protocol name (TCP, UDP, SCTP, IP, IP_n)."""
    if name in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[name]
    upper = name.upper()
    for known, number in PROTOCOL_NUMBERS.items():
        if known.upper() == upper:
            return number
    if upper.startswith("IP_") and upper[3:].isdigit() and int(upper[3:]) < 256:
        return int(upper[3:])
    raise ValueError(f"unknown protocol {name!r}")


def connection_is_template(conn: Connection) -> bool:
    """Whether a /proc entry is a persistence template (protocol IP, or a template state)."""
    return conn.is_template or conn.state == "ASSURED"


def from_connection(
    conn: Connection, forward: str = "masq", fwmark: int = 0, timeout: int | None = None
) -> SyncConn:
    """Map a /proc connection to what the kernel would sync for it; ValueError with the reason.

    `forward` is the forwarding method of its real server (a synced entry that matches a real
    server of the backup takes that server's method anyway); `timeout` defaults to the seconds
    the entry has left, at least 1 (0 would mean "the default of the state").
    """
    proto = protocol_number(conn.protocol)
    template = connection_is_template(conn)
    if template:
        if conn.state not in TEMPLATE_STATE_NAMES:
            raise ValueError(f"unknown template state {conn.state!r}")
        state = TEMPLATE_STATE_NAMES.index(conn.state)
    else:
        names = STATE_NAMES.get(proto)
        if names is None or conn.state not in names:
            raise ValueError(f"unknown {conn.protocol} state {conn.state!r}")
        state = names.index(conn.state)
    if forward not in FORWARD_FLAGS:
        raise ValueError(f"unknown forwarding method {forward!r}")
    flags = FORWARD_FLAGS[forward]
    if forward != "masq":
        flags |= F_NOOUTPUT
    if template:
        flags |= F_TEMPLATE
    else:
        if (proto, state) not in ACTIVE_STATES:
            flags |= F_INACTIVE
        if conn.client_port == 0:
            flags |= F_NO_CPORT
    pe_name = conn.pe_name if conn.pe_data else ""
    return SyncConn(
        protocol=proto,
        client=conn.client,
        client_port=conn.client_port,
        virtual=conn.virtual,
        virtual_port=conn.virtual_port,
        dest=conn.dest,
        dest_port=conn.dest_port,
        state=state,
        flags=flags,
        timeout=max(int(conn.expires), 1) if timeout is None else timeout,
        fwmark=fwmark,
        pe_data=conn.pe_data.encode("utf-8", "surrogateescape") if pe_name else b"",
        pe_name=pe_name,
    )


def to_connection(conn: SyncConn, origin: str | None = None) -> Connection:
    """The /proc-style view of a sync entry (state and protocol names, timeout as expiry)."""
    return Connection(
        protocol=conn.protocol_name,
        client=conn.client,
        client_port=conn.client_port,
        virtual=conn.virtual,
        virtual_port=conn.virtual_port,
        dest=conn.dest,
        dest_port=conn.dest_port,
        state=conn.state_name,
        expires=conn.timeout,
        origin=origin,
        pe_name=conn.pe_name,
        pe_data=conn.pe_data.decode("utf-8", "surrogateescape"),
    )


# -- encoding ----------------------------------------------------------------------------------


def _packed_addresses(conn: SyncConn) -> tuple[bool, bytes, bytes, bytes]:
    try:
        addresses = [ipaddress.ip_address(a) for a in (conn.client, conn.virtual, conn.dest)]
    except ValueError as exc:
        raise ValueError(f"bad address: {exc}") from None
    versions = {a.version for a in addresses}
    if len(versions) != 1:
        raise ValueError("client, virtual and real server addresses are of different families")
    return versions == {6}, addresses[0].packed, addresses[1].packed, addresses[2].packed


def _check_ranges(conn: SyncConn) -> None:
    for name in ("client_port", "virtual_port", "dest_port", "state"):
        if not 0 <= getattr(conn, name) <= 0xFFFF:
            raise ValueError(f"{name} {getattr(conn, name)} out of range")
    if not 0 <= conn.protocol <= 0xFF:
        raise ValueError(f"protocol {conn.protocol} out of range")
    for name in ("flags", "timeout", "fwmark"):
        if not 0 <= getattr(conn, name) <= 0xFFFFFFFF:
            raise ValueError(f"{name} {getattr(conn, name)} out of range")


def _seq_bytes(conn: SyncConn) -> bytes:
    try:
        return SEQ_OPTION.pack(*(conn.in_seq or NO_SEQ), *(conn.out_seq or NO_SEQ))
    except struct.error:
        raise ValueError("sequence data out of range") from None


def encode_conn_v1(conn: SyncConn) -> bytes:
    """One version 1 entry (struct ip_vs_sync_v4 or _v6 with its options), without padding."""
    _check_ranges(conn)
    ipv6, caddr, vaddr, daddr = _packed_addresses(conn)
    options = b""
    if conn.in_seq is not None or conn.out_seq is not None:
        options += bytes((OPT_SEQ_DATA, SEQ_OPTION.size)) + _seq_bytes(conn)
    if conn.pe_data:
        # The kernel sends the engine's name only after its data, and a backup needs both.
        if len(conn.pe_data) > PE_DATA_MAXLEN:
            raise ValueError(f"PE data longer than {PE_DATA_MAXLEN} bytes")
        options += bytes((OPT_PE_DATA, len(conn.pe_data))) + conn.pe_data
        if conn.pe_name:
            name = conn.pe_name.encode("ascii", "replace")
            if len(name) > PE_NAME_MAXLEN:
                raise ValueError(f"PE name longer than {PE_NAME_MAXLEN} bytes")
            options += bytes((OPT_PE_NAME, len(name))) + name
    layout = V1_CONN6 if ipv6 else V1_CONN4
    size = layout.size + len(options)
    if size > V1_SIZE_MASK:
        raise ValueError(f"entry of {size} bytes does not fit the 12-bit size field")
    return (
        layout.pack(
            V1_TYPE_INET6 if ipv6 else 0,
            conn.protocol,
            size,  # version 0 of the entry format in the top 4 bits
            conn.flags & ~F_HASHED,
            conn.state,
            conn.client_port,
            conn.virtual_port,
            conn.dest_port,
            conn.fwmark,
            conn.timeout,
            caddr,
            vaddr,
            daddr,
        )
        + options
    )


def encode_conn_v0(conn: SyncConn) -> bytes:
    """One version 0 entry (struct ip_vs_sync_conn_v0), with sequence data when flags ask for it."""
    _check_ranges(conn)
    ipv6, caddr, vaddr, daddr = _packed_addresses(conn)
    if ipv6:
        raise ValueError("sync protocol version 0 carries IPv4 connections only")
    flags = conn.flags & 0xFFFF & ~F_HASHED
    data = V0_CONN.pack(
        0, conn.protocol, conn.client_port, conn.virtual_port, conn.dest_port, caddr, vaddr, daddr, flags, conn.state
    )
    if flags & F_SEQ_MASK:
        data += _seq_bytes(conn)
    return data


class EncodedMessage(NamedTuple):
    """One datagram ready to send, and how many connections it carries."""

    data: bytes
    count: int


@dataclass(frozen=True)
class Packed:
    """Connections packed into messages, and those that could not be encoded, counted by reason."""

    messages: tuple[EncodedMessage, ...]
    skipped: Mapping[str, int] = field(default_factory=dict)

    @property
    def connections(self) -> int:
        return sum(m.count for m in self.messages)

    @property
    def bytes(self) -> int:
        return sum(len(m.data) for m in self.messages)


def header_size(version: int) -> int:
    return V1_HEADER.size if version == 1 else V0_HEADER.size


def check_pack_arguments(syncid: int, version: int, maxlen: int) -> None:
    """Raise ValueError unless a message of these parameters can carry at least an IPv4 entry."""
    if not 0 <= syncid <= 255:
        raise ValueError(f"syncid must be 0-255, got {syncid}")
    if version not in (0, 1):
        raise ValueError(f"sync protocol version must be 0 or 1, got {version}")
    smallest = header_size(version) + (V1_CONN4.size if version == 1 else V0_CONN.size)
    if not smallest <= maxlen <= 0xFFFF:
        raise ValueError(f"maxlen must be {smallest}-65535, got {maxlen}")


def iter_messages(
    conns: Iterable[SyncConn],
    syncid: int,
    version: int = 1,
    maxlen: int = DEFAULT_MAXLEN,
    skipped: collections.Counter | None = None,
) -> Iterator[EncodedMessage]:
    """Pack entries into as few messages of at most `maxlen` bytes (and 255 entries) as they fit.

    Version 1 entries start on 4-byte boundaries: the kernel pads before an entry, never after
    the last, and counts the padding in the header's size field, which equals the datagram length.
    An entry that cannot be encoded is counted in `skipped` under its reason.
    """
    check_pack_arguments(syncid, version, maxlen)
    encode = encode_conn_v1 if version == 1 else encode_conn_v0
    head = header_size(version)
    body = bytearray()
    count = 0
    for conn in conns:
        try:
            entry = encode(conn)
        except ValueError as exc:
            if skipped is not None:
                skipped[str(exc)] += 1
            continue
        if head + len(entry) > maxlen:
            if skipped is not None:
                skipped[f"entry of {len(entry)} bytes does not fit maxlen {maxlen}"] += 1
            continue
        pad = (-len(body)) % 4 if version == 1 else 0
        if count and (count == MAX_CONNS_PER_MESSAGE or head + len(body) + pad + len(entry) > maxlen):
            yield _finish(body, count, syncid, version)
            body, count, pad = bytearray(), 0, 0
        body += bytes(pad) + entry
        count += 1
    if count:
        yield _finish(body, count, syncid, version)


def _finish(body: bytearray, count: int, syncid: int, version: int) -> EncodedMessage:
    size = header_size(version) + len(body)
    if version == 1:
        header = V1_HEADER.pack(0, syncid, size, count, SYNC_PROTO_VERSION, 0)
    else:
        header = V0_HEADER.pack(count, syncid, size)
    return EncodedMessage(header + bytes(body), count)


def pack(conns: Iterable[SyncConn], syncid: int, version: int = 1, maxlen: int = DEFAULT_MAXLEN) -> Packed:
    """All messages for `conns` at once (see iter_messages); ValueError for bad arguments."""
    skipped: collections.Counter = collections.Counter()
    messages = tuple(iter_messages(conns, syncid, version, maxlen, skipped))
    return Packed(messages, dict(skipped))


# -- decoding ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """What a backup would make of one datagram.

    `conns` are the entries it would install. `skipped` has a reason for each entry it would
    ignore while keeping the rest; `error` says why it would drop the (rest of the) message, as
    the kernel does on a malformed one, keeping what it had already installed.
    """

    version: int | None
    syncid: int | None
    nr_conns: int
    size: int
    conns: tuple[SyncConn, ...] = ()
    skipped: tuple[str, ...] = ()
    error: str | None = None

    @property
    def malformed(self) -> bool:
        return self.error is not None

    @property
    def rejected(self) -> int:
        """Entries announced in the header that a backup would not install."""
        return max(self.nr_conns - len(self.conns), 0)


class _Drop(Exception):
    """Internal: the rest of the message is dropped, for the reason given."""


class _Skip(Exception):
    """Internal: this entry is ignored, for the reason given."""


def decode_message(data: bytes) -> DecodedMessage:
    """Decode one datagram the way ip_vs_process_message() does; never raises."""
    data = bytes(data)
    length = len(data)
    if length < V0_HEADER.size:
        return DecodedMessage(None, None, 0, length, error=f"{length} bytes: shorter than a message header")
    first, syncid, size = V0_HEADER.unpack_from(data)
    if size != length:
        return DecodedMessage(None, syncid, 0, length, error=f"size field {size} != datagram length {length}")
    if length >= V1_HEADER.size:
        reserved, _, _, nr_conns, version, spare = V1_HEADER.unpack_from(data)
        if version == SYNC_PROTO_VERSION and reserved == 0 and spare == 0:
            return _decode_v1(data, syncid, nr_conns)
    return _decode_v0(data, syncid, first)


def _decode_v0(data: bytes, syncid: int, nr_conns: int) -> DecodedMessage:
    conns: list[SyncConn] = []
    skipped: list[str] = []
    offset = V0_HEADER.size
    error = None
    for index in range(nr_conns):
        if offset + V0_CONN.size > len(data):
            error = f"entry {index + 1} of {nr_conns} truncated"
            break
        _, proto, cport, vport, dport, caddr, vaddr, daddr, flags, state = V0_CONN.unpack_from(data, offset)
        offset += V0_CONN.size
        in_seq = out_seq = None
        if flags & F_SEQ_MASK:
            if offset + SEQ_OPTION.size > len(data):
                error = f"entry {index + 1} of {nr_conns}: sequence data truncated"
                break
            values = SEQ_OPTION.unpack_from(data, offset)
            in_seq, out_seq = SeqData(*values[:3]), SeqData(*values[3:])
            offset += SEQ_OPTION.size
        template = bool(flags & F_TEMPLATE)
        reason = _check_protocol_state(proto, state, template)
        if reason:
            skipped.append(f"entry {index + 1}: {reason}")
            continue
        conns.append(
            SyncConn(
                protocol=proto,
                client=str(ipaddress.IPv4Address(caddr)),
                client_port=cport,
                virtual=str(ipaddress.IPv4Address(vaddr)),
                virtual_port=vport,
                dest=str(ipaddress.IPv4Address(daddr)),
                dest_port=dport,
                state=state,
                flags=flags,
                in_seq=in_seq,
                out_seq=out_seq,
            )
        )
    return DecodedMessage(0, syncid, nr_conns, len(data), tuple(conns), tuple(skipped), error)


def _check_protocol_state(proto: int, state: int, template: bool) -> str | None:
    if template:
        return None  # the kernel only logs a template state it does not know
    states = KERNEL_PROTOCOL_STATES.get(proto)
    if states is None:
        return f"unsupported protocol {proto}"
    if state >= states:
        return f"invalid {PROTOCOL_NAMES.get(proto, proto)} state {state}"
    return None


def _decode_v1(data: bytes, syncid: int, nr_conns: int) -> DecodedMessage:
    conns: list[SyncConn] = []
    skipped: list[str] = []
    error = None
    offset = V1_HEADER.size
    for index in range(nr_conns):
        where = f"entry {index + 1} of {nr_conns}"
        if offset + V1_CONN4.size > len(data):
            error = f"{where} truncated"
            break
        ver_size = struct.unpack_from("!H", data, offset + 2)[0]
        size = ver_size & V1_SIZE_MASK
        end = offset + size
        if end > len(data):
            error = f"{where}: size {size} runs past the end of the message"
            break
        if ver_size >> V1_VERSION_SHIFT:
            error = f"{where}: unknown entry version {ver_size >> V1_VERSION_SHIFT}"
            break
        try:
            conns.append(_decode_entry_v1(data, offset, end))
        except _Skip as exc:
            skipped.append(f"{where}: {exc}")
        except _Drop as exc:
            error = f"{where}: {exc}"
            break
        offset += (size + 3) & ~3
    return DecodedMessage(1, syncid, nr_conns, len(data), tuple(conns), tuple(skipped), error)


def _decode_entry_v1(data: bytes, offset: int, end: int) -> SyncConn:
    kind = data[offset]
    if kind & V1_TYPE_INET6:
        layout, family = V1_CONN6, ipaddress.IPv6Address
    elif kind == 0:
        layout, family = V1_CONN4, ipaddress.IPv4Address
    else:
        raise _Drop(f"unknown entry type {kind}")
    if offset + layout.size > end:
        raise _Drop(f"entry size {end - offset} smaller than its {layout.size} bytes of fields")
    _, proto, _, flags, state, cport, vport, dport, fwmark, timeout, caddr, vaddr, daddr = layout.unpack_from(
        data, offset
    )
    pos = offset + layout.size
    seq: tuple[int, ...] | None = None
    pe_data: bytes | None = None
    pe_name: bytes | None = None
    while pos < end:
        if pos + 2 > end:
            raise _Drop("option header truncated")
        opt_type, opt_len = data[pos], data[pos + 1]
        pos += 2
        if not opt_len or pos + opt_len > end:
            raise _Drop(f"option {opt_type} of bad length {opt_len}")
        kind = opt_type & ~OPT_F_PARAM
        value = data[pos : pos + opt_len]
        if kind == OPT_SEQ_DATA:
            if opt_len != SEQ_OPTION.size or seq is not None:
                raise _Drop("bad or repeated sequence option")
            seq = SEQ_OPTION.unpack(value)
        elif kind == OPT_PE_DATA:
            if pe_data is not None:
                raise _Drop("repeated PE data option")
            pe_data = value
        elif kind == OPT_PE_NAME:
            if opt_len > PE_NAME_MAXLEN or pe_name is not None:
                raise _Drop("bad or repeated PE name option")
            pe_name = value
        elif not opt_type & OPT_F_PARAM:
            raise _Skip(f"unknown mandatory option {opt_type}")
        pos += opt_len
    template = bool(flags & F_TEMPLATE)
    reason = _check_protocol_state(proto, state, template)
    if reason:
        raise _Skip(reason)
    if pe_data and not pe_name:
        raise _Skip("PE data without a PE name")
    return SyncConn(
        protocol=proto,
        client=str(family(caddr)),
        client_port=cport,
        virtual=str(family(vaddr)),
        virtual_port=vport,
        dest=str(family(daddr)),
        dest_port=dport,
        state=state,
        flags=flags,
        timeout=timeout,
        fwmark=fwmark,
        in_seq=SeqData(*seq[:3]) if seq else None,
        out_seq=SeqData(*seq[3:]) if seq else None,
        pe_data=pe_data or b"",
        pe_name=pe_name.decode("ascii", "replace") if pe_data and pe_name else "",
    )
