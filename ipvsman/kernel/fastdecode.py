"""The fast decoder of IPVS dumps: the same model values as NlaDecoder, an order of magnitude faster.

pyroute2 stays the transport: its socket, bound to the IPVS family, carries the requests and
its marshal splits what arrives (netlink.IpvsSocket reads the replies off that socket itself,
without pyroute2's per-request asyncio machinery). What a large poll spent its time on is
replaced around it:

- decoding: pyroute2's message classes build an object per attribute; RawMessage keeps the
  receive buffer and offset, and FastDecoder reads the attributes it needs with
  struct.unpack_from. Real servers, ten thousand per poll at 1,000 services, are read a whole
  datagram at a time once the first of a shape has been walked (NestLayout, DatagramLayout);
  a service's bytes before its counters are the key to what was decoded from them the poll
  before (ServiceShapes);
- the marshal: BatchMarshal hands over each datagram's IPVS messages as one item, and the
  NLMSG_DONE ending each dump as a RawMessage, so that per-message bookkeeping runs once per
  datagram;
- requests: the dump request sent per service is packed once per service (RawRequest)
  instead of encoded nla by nla; the changes that still go through pyroute2's requests take
  sequence numbers from SequenceNumbers, not from pyroute2's pool that walks a list of 255
  banned numbers per request.

The decoder is stricter than pyroute2's: an attribute whose length runs past its nest, or a
value shorter than its type, makes the message undecodable (counted, skipped) where pyroute2
would clamp it or hand back raw bytes. The kernel never sends either; for everything it does
send, tests/unit/test_fastdecode.py and tests/kernel/test_fastdecode_kernel.py check that both
decoders give equal values.
"""

from __future__ import annotations

import collections
import functools
import operator
import socket
import struct
import sys
import threading

from pyroute2.netlink import NLM_F_ACK_TLVS, NLM_F_MULTI, NLMSG_DONE
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.marshal import Marshal

from ipvsman import model
from ipvsman.kernel import netlink as nl

NLMSG_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, sequence, port id
NLA_HEADER = struct.Struct("=HH")  # struct nlattr: length (header included), type
ATTRIBUTES_START = 20  # nlmsghdr (16) + genlmsghdr (cmd, version, reserved: 4)
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
GENL_HEADER = struct.Struct("=BBH")  # struct genlmsghdr: cmd, version, reserved

U8 = struct.Struct("=B")
U16 = struct.Struct("=H")
BE16 = struct.Struct(">H")
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
SERVICE_FLAGS = struct.Struct("=II")  # struct ip_vs_flags: flags, mask

# The order of Stats and Rates fields, by IPVS_STATS_ATTR_* number.
STATS_ORDER = (nl.STATS_ATTR_CONNS, nl.STATS_ATTR_INPKTS, nl.STATS_ATTR_OUTPKTS, nl.STATS_ATTR_INBYTES,
               nl.STATS_ATTR_OUTBYTES)  # fmt: skip
RATES_ORDER = (nl.STATS_ATTR_CPS, nl.STATS_ATTR_INPPS, nl.STATS_ATTR_OUTPPS, nl.STATS_ATTR_INBPS,
               nl.STATS_ATTR_OUTBPS)  # fmt: skip
# IPVS_*_ATTR_STATS carries 32-bit counters and rates but 64-bit byte counts; STATS64 is all 64-bit.
STATS32_TYPES = {number: U32 for number in STATS_ORDER + RATES_ORDER}
STATS32_TYPES.update({nl.STATS_ATTR_INBYTES: U64, nl.STATS_ATTR_OUTBYTES: U64})
STATS64_TYPES = {number: U64 for number in STATS_ORDER + RATES_ORDER}
STATS_KNOWN = frozenset(STATS_ORDER + RATES_ORDER + (nl.STATS_ATTR_PAD,))

# The STATS64 nest as x86-64 and every other architecture with efficient unaligned access lays
# it out (nla_put_u64_64bit adds no PAD there): ten 12-byte attributes, numbers 1 to 10 in order.
# One unpack and two comparisons replace the walk when a nest matches it exactly.
STATS64_PACKED = struct.Struct("=" + "HHQ" * 10)
STATS64_PACKED_LENGTHS = (12,) * 10
STATS64_PACKED_TYPES = tuple(range(1, 11))

CMD_KNOWN = frozenset(range(nl.CMD_ATTR_SERVICE, nl.CMD_ATTR_TIMEOUT_UDP + 1))
SERVICE_KNOWN = frozenset(range(nl.SVC_ATTR_AF, nl.SVC_ATTR_STATS64 + 1))
DEST_KNOWN = frozenset(range(nl.DEST_ATTR_ADDR, nl.DEST_ATTR_TUN_FLAGS + 1))
DAEMON_KNOWN = frozenset(range(nl.DAEMON_ATTR_STATE, nl.DAEMON_ATTR_MCAST_TTL + 1))

_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_inet_ntop = socket.inet_ntop
_ntohs = socket.ntohs
_htons = socket.htons
_inet_pton = socket.inet_pton
_FAMILIES = nl.FAMILIES
_PROTOCOLS = nl.PROTOCOLS
_FORWARD_METHODS = nl.FORWARD_METHODS
_SKIP_UNKNOWN = nl.SKIP_UNKNOWN_ATTRIBUTES
_SKIP_UNDECODABLE = nl.SKIP_UNDECODABLE


class RawMessage:
    """One netlink message left in its receive buffer, standing in for a pyroute2 message class.

    pyroute2's marshal creates it with the buffer and offset and calls decode(); its socket then
    reads and annotates `msg["header"]` (type, flags, sequence_number, error, ...) and may set
    other keys, which are kept in a dict. The attributes are read only by FastDecoder.
    """

    __slots__ = ("data", "offset", "length", "_header", "_fields")

    def __init__(self, data=b"", offset: int = 0, **_ignored):
        self.data = data
        self.offset = offset
        self.length = 0
        self._header: dict | None = None
        self._fields: dict | None = None

    @classmethod
    def at(cls, data, offset: int, length: int) -> RawMessage:
        """A message whose header BatchMarshal has already read: nothing is decoded until asked."""
        msg = cls.__new__(cls)
        msg.data = data
        msg.offset = offset
        msg.length = length
        msg._header = None
        msg._fields = None
        return msg

    def decode(self) -> None:
        length = NLMSG_HEADER.unpack_from(self.data, self.offset)[0]
        # A message never reaches past its buffer: trust the shorter of the two.
        self.length = min(length, len(self.data) - self.offset)
        self._header = None

    @property
    def header(self) -> dict:
        if self._header is None:
            length, kind, flags, sequence, port = NLMSG_HEADER.unpack_from(self.data, self.offset)
            self._header = {"length": length, "type": kind, "flags": flags, "sequence_number": sequence, "pid": port}
        return self._header

    @header.setter
    def header(self, value: dict) -> None:
        self._header = value

    @property
    def command(self) -> int | None:
        """The genetlink command (IPVS_CMD_*), None when the message is too short to have one."""
        return self.data[self.offset + 16] if self.length > 16 else None

    @property
    def end(self) -> int:
        return self.offset + self.length

    def __getitem__(self, key):
        if key == "header":
            return self.header
        if key == "cmd":
            return self.command
        if self._fields is not None and key in self._fields:
            return self._fields[key]
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key, value) -> None:
        if key == "header":
            self.header = value
            return
        if self._fields is None:
            self._fields = {}
        self._fields[key] = value

    def __contains__(self, key) -> bool:
        return key in ("header", "cmd") or (self._fields is not None and key in self._fields)

    def __repr__(self) -> str:
        return f"RawMessage(type={self.header.get('type')}, cmd={self.command}, length={self.length})"


class RawBatch(RawMessage):
    """The IPVS messages of one received datagram, handed through pyroute2's socket as one item.

    pyroute2's socket sees a message whose header is that of the datagram's last IPVS message
    (its flags say whether more follow); `messages` are the RawMessages themselves. A dump of a
    service's ten real servers then costs pyroute2's per-message work once, not ten times.
    """

    __slots__ = ("messages",)

    def __iter__(self):
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return f"RawBatch({len(self.messages)} messages)"


# NLM_F_ACK_TLVS: a DONE that carries extended-ack attributes is left to pyroute2.
DONE_STATUS = struct.Struct("=i")


def done_message(data, offset: int, length: int) -> RawMessage:
    """NLMSG_DONE as a RawMessage. Its payload is the dump's outcome: a negative errno when the
    dump failed part-way (pyroute2 does not look), which becomes the header's error."""
    msg = RawMessage.at(data, offset, length)
    status = DONE_STATUS.unpack_from(data, offset + NLMSG_HEADER.size)[0] if length >= 20 else 0
    msg.header["error"] = NetlinkError(-status) if status < 0 else None
    return msg


class BatchMarshal(Marshal):
    """pyroute2's Marshal, except that messages of a type mapped to RawMessage come out as one
    RawBatch per datagram. Everything else (DONE, errors, the generic netlink controller's
    replies) is parsed by pyroute2 as always, in the order it arrived."""

    def parse(self, data, seq=None, callback=None, skip_alien_seq=False):
        if callback is not None or skip_alien_seq:
            yield from super().parse(data, seq, callback, skip_alien_seq)
            return
        msg_map = self.msg_map
        unpack = NLMSG_HEADER.unpack_from
        at = RawMessage.at
        end = len(data)
        offset = 0
        batch: list[RawMessage] = []
        last = 0
        while offset <= end - NLMSG_HEADER.size:
            length, kind = unpack(data, offset)[:2]
            if not NLMSG_HEADER.size <= length <= end - offset:
                break
            if msg_map.get(kind) is RawMessage:
                batch.append(at(data, offset, length))
                last = offset
            elif kind == NLMSG_DONE and not unpack(data, offset)[2] & NLM_F_ACK_TLVS:
                # The end of each of a poll's 1,000 dumps: pyroute2's message class would take
                # 20 us to decode these 20 bytes.
                if batch:
                    yield self._batch(data, batch, last)
                    batch = []
                yield done_message(data, offset, length)
            else:
                if batch:
                    yield self._batch(data, batch, last)
                    batch = []
                yield from super().parse(data[offset : offset + length], seq)
            offset += length
        if batch:
            yield self._batch(data, batch, last)

    def replies(self, data, sequence: int) -> tuple[list, bool]:
        """The messages of one datagram that answer request `sequence`, and whether they end the
        answer (a reply that is not part of a dump, or NLMSG_DONE). Raises the error the kernel
        answered with. What netlink.IpvsSocket reads a poll with: one pass over the datagram,
        no generator and no header dict per message; anything but IPVS messages and a plain
        NLMSG_DONE (errors, acknowledgements) is parsed by pyroute2."""
        msg_map = self.msg_map
        unpack = NLMSG_HEADER.unpack_from
        at = RawMessage.at
        found: list = []
        end = len(data)
        offset = 0
        while offset <= end - NLMSG_HEADER.size:
            length, kind, flags, number = unpack(data, offset)[:4]
            if not NLMSG_HEADER.size <= length <= end - offset:
                break
            if number == sequence:
                if msg_map.get(kind) is RawMessage:
                    found.append(at(data, offset, length))
                    if not flags & NLM_F_MULTI:
                        return found, True
                elif kind == NLMSG_DONE and not flags & NLM_F_ACK_TLVS:
                    error = done_message(data, offset, length).header["error"]
                    if error is not None:
                        raise error
                    return found, True
                else:
                    more, complete = nl.replies_by_parse(self, data[offset : offset + length], sequence)
                    found += more
                    if complete:
                        return found, True
            offset += length
        return found, False

    @staticmethod
    def _batch(data, batch: list[RawMessage], last: int) -> RawBatch:
        item = RawBatch.at(data, last, batch[-1].length)
        item.messages = batch
        item.header["error"] = None
        return item


# -- requests -------------------------------------------------------------------------------


class RawRequest:
    """A request with its payload packed ahead, for pyroute2's NetlinkRequest to send.

    NetlinkRequest sets type, flags, sequence number and port id in `msg["header"]`, calls
    reset() and encode(), and sends `data`. pyroute2's own message classes encode nla by nla,
    which costs about as much per real-server dump as decoding its reply; this packs the
    header in front of bytes made once per service key.
    """

    __slots__ = ("payload", "header", "data")

    def __init__(self, payload: bytes):
        self.payload = payload
        self.header: dict = {}
        self.data = b""

    def __getitem__(self, key):
        if key == "header":
            return self.header
        raise KeyError(key)

    def reset(self) -> None:
        self.data = b""

    def encode(self) -> None:
        header = self.header
        self.data = NLMSG_HEADER.pack(
            NLMSG_HEADER.size + len(self.payload),
            header.get("type") or 0,
            header.get("flags") or 0,
            header.get("sequence_number") or 0,
            header.get("pid") or 0,
        ) + self.payload


class SequenceNumbers:
    """Sequence numbers for pyroute2's requests (its AddrPool interface), in constant time.

    pyroute2 bans a freed number for the next 255 allocations and walks that ban list on every
    allocation: about 45 us a request on the host, as long as ipvsadm takes for a whole service.
    Counting up through the range and skipping numbers still in use gives the same guarantee
    (a number comes back only after the whole range has gone round) for a set lookup.
    """

    def __init__(self, first: int = 0xFF, last: int = 0xFFFF):
        self.first = first
        self.last = last
        self.next = first
        self.in_use: set[int] = set()
        self.lock = threading.Lock()

    def alloc(self) -> int:
        with self.lock:
            for _ in range(self.last - self.first + 1):
                number = self.next
                self.next = number + 1 if number < self.last else self.first
                if number not in self.in_use:
                    self.in_use.add(number)
                    return number
        raise KeyError("no free address available")

    def free(self, number: int, ban: int = 0) -> None:
        with self.lock:
            self.in_use.discard(number)


def _nla(number: int, payload: bytes) -> bytes:
    length = NLA_HEADER.size + len(payload)
    return NLA_HEADER.pack(length, number) + payload + bytes(-length % 4)


# A dump request for a service named by address, in one pack: the generic netlink header, the
# service nest's header, then AF, PROTOCOL, ADDR and PORT, each an nla padded to 4 bytes (the port
# in network order: packed natively after htons). --once packs 1,000 of these in its one poll.
DEST_DUMP_BY_ADDRESS = struct.Struct("=BBH" + "HH" + "HHH2x" + "HHH2x" + "HH16s" + "HHH2x")
_BY_ADDRESS_NEST = DEST_DUMP_BY_ADDRESS.size - GENL_HEADER.size


@functools.lru_cache(maxsize=65536)
def _dest_dump_payload(key: model.ServiceKey) -> bytes:
    family = nl.FAMILY_NUMBERS[key.af]
    if key.fwmark:
        attrs = _nla(nl.SVC_ATTR_AF, U16.pack(family)) + _nla(nl.SVC_ATTR_FWMARK, U32.pack(key.fwmark))
        return GENL_HEADER.pack(nl.CMD_GET_DEST, nl.GENL_VERSION, 0) + _nla(nl.CMD_ATTR_SERVICE, attrs)
    return DEST_DUMP_BY_ADDRESS.pack(
        nl.CMD_GET_DEST, nl.GENL_VERSION, 0, _BY_ADDRESS_NEST, nl.CMD_ATTR_SERVICE,
        6, nl.SVC_ATTR_AF, family, 6, nl.SVC_ATTR_PROTOCOL, nl.PROTOCOL_NUMBERS[key.protocol],
        4 + nl.ADDRESS_SIZE, nl.SVC_ATTR_ADDR, _inet_pton(family, key.address),
        6, nl.SVC_ATTR_PORT, _htons(key.port),
    )  # fmt: skip


def dest_dump_request(key: model.ServiceKey) -> RawRequest:
    """IPVS_CMD_GET_DEST for one service: the same bytes as netlink.request_message would encode."""
    return RawRequest(_dest_dump_payload(key))


# -- attributes -----------------------------------------------------------------------------


def attributes(data, start: int, end: int) -> tuple[dict[int, tuple[int, int]], int]:
    """The attributes between start and end: {type: (payload start, payload end)} and how many there were.

    A repeated type keeps its last occurrence, as NlaDecoder does. Raises nl.Undecodable when an
    attribute's length is impossible.
    """
    found = {}
    count = 0
    unpack = NLA_HEADER.unpack_from
    while start + 4 <= end:
        length, kind = unpack(data, start)
        stop = start + length
        if length < 4 or stop > end:
            raise nl.Undecodable(f"attribute {kind & NLA_TYPE_MASK} of length {length} does not fit its nest")
        found[kind & NLA_TYPE_MASK] = (start + 4, stop)
        count += 1
        start += (length + 3) & ~3
    return found, count


def count_unknown(found: dict, count: int, known: frozenset, data, start: int, end: int) -> int:
    """How many attributes (repeats included) have a type the decoder does not know."""
    if count == len(found) and known.issuperset(found):
        return 0
    unknown = 0
    unpack = NLA_HEADER.unpack_from
    while start + 4 <= end:
        length, kind = unpack(data, start)
        if kind & NLA_TYPE_MASK not in known:
            unknown += 1
        start += (max(length, 4) + 3) & ~3
    return unknown


def _walk(data, start: int, end: int, known: frozenset, skipped) -> dict[int, tuple[int, int]]:
    found, count = attributes(data, start, end)
    unknown = count_unknown(found, count, known, data, start, end)
    if unknown:
        skipped[_SKIP_UNKNOWN] += unknown
    return found


def _unpack(data, span: tuple[int, int], kind: struct.Struct) -> int:
    start, stop = span
    if stop - start < kind.size:
        raise nl.Undecodable(f"a {kind.size}-byte value in {stop - start} bytes")
    return kind.unpack_from(data, start)[0]


def _number(data, found: dict, number: int, kind: struct.Struct, default=None):
    span = found.get(number)
    return default if span is None else _unpack(data, span, kind)


def _text(data, found: dict, number: int, default=None) -> str | None:
    """An NLA_NUL_STRING: NULs stripped from both ends, as pyroute2's asciiz does."""
    span = found.get(number)
    if span is None:
        return default
    return bytes(data[span[0] : span[1]]).strip(b"\0").decode("utf-8", "replace")


def _address(data, span: tuple[int, int] | None, af: str) -> str:
    if span is None:
        raise nl.Undecodable("no address")
    start, stop = span
    size = 4 if af == "inet" else 16
    if stop - start < size:
        raise nl.Undecodable(f"a {size}-byte address in {stop - start} bytes")
    return _inet_ntop(_AF_INET if size == 4 else _AF_INET6, data[start : start + size])


def _netmask(data, span: tuple[int, int] | None, af: str) -> str:
    """IPv4: a dotted mask. IPv6: a prefix length, a u32 in host order (as NlaDecoder reads it)."""
    if span is None or span[1] - span[0] < 4:
        return ""
    raw = data[span[0] : span[0] + 4]
    if af == "inet":
        return _inet_ntop(_AF_INET, raw)
    return str(int.from_bytes(raw, sys.byteorder))


def _outer(msg: RawMessage, number: int, skipped) -> tuple[int, int]:
    """The span of the one nest (service, dest or daemon) a message carries."""
    data = msg.data
    start = msg.offset + ATTRIBUTES_START
    end = msg.offset + msg.length
    found = _walk(data, start, end, CMD_KNOWN, skipped)
    span = found.get(number)
    if span is None:
        raise nl.Undecodable(f"message without attribute {number}")
    return span


ZERO_COUNTERS = (0,) * 10


def counters(data, found: dict, stats_number: int, stats64_number: int, skipped) -> tuple[int, ...]:
    """The ten counters and rates (Stats then Rates order): 64-bit when the kernel sent them, else 32-bit."""
    span = found.get(stats64_number)
    types = STATS64_TYPES
    if span is None:
        span = found.get(stats_number)
        types = STATS32_TYPES
        if span is None:
            return ZERO_COUNTERS
    start, stop = span
    if types is STATS64_TYPES and stop - start == STATS64_PACKED.size:
        values = STATS64_PACKED.unpack_from(data, start)
        if values[0::3] == STATS64_PACKED_LENGTHS and values[1::3] == STATS64_PACKED_TYPES:
            return values[2::3]
    nest = _walk(data, start, stop, STATS_KNOWN, skipped)
    get = nest.get
    found_counters = []
    for number in STATS_ORDER + RATES_ORDER:
        value_span = get(number)
        found_counters.append(0 if value_span is None else _unpack(data, value_span, types[number]))
    return tuple(found_counters)


def stats_and_rates(values: tuple[int, ...]) -> tuple[model.Stats, model.Rates]:
    return _new_tuple(model.Stats, values[:5]), _new_tuple(model.Rates, values[5:10])


_new_tuple = tuple.__new__


# -- real servers: the bulk of a poll -------------------------------------------------------

# What FastDecoder.dest reads from a real-server nest, in this order, and how: native formats
# (the port is big-endian: it is read natively and swapped, so that one struct can hold all).
DEST_VALUES = (
    (nl.DEST_ATTR_ADDR, "s"),
    (nl.DEST_ATTR_PORT, "H"),
    (nl.DEST_ATTR_FWD_METHOD, "I"),
    (nl.DEST_ATTR_WEIGHT, "I"),
    (nl.DEST_ATTR_U_THRESH, "I"),
    (nl.DEST_ATTR_L_THRESH, "I"),
    (nl.DEST_ATTR_ACTIVE_CONNS, "I"),
    (nl.DEST_ATTR_INACT_CONNS, "I"),
    (nl.DEST_ATTR_PERSIST_CONNS, "I"),
    (nl.DEST_ATTR_ADDR_FAMILY, "H"),
)
DEST_VALUE_CODES = dict(DEST_VALUES)
DEST_DEFAULTS = (None, None, 0, 0, 0, 0, 0, 0, 0, None)  # a missing ADDR or PORT stays None, as in NlaDecoder
MAX_LAYOUTS = 64


# One item a layout unpacks: its offset from where the layout starts, its struct code, and what it
# is: a header whose value is expected ("header", value), a DEST_VALUES value ("value", number),
# or a counter ("counter", index).
Field = tuple[int, str, tuple]


def _struct_of(fields: list[Field], size: int) -> struct.Struct:
    """A struct reading `fields` (in offset order) out of `size` bytes, skipping what lies between."""
    fmt, position = ["="], 0
    for offset, code, _ in fields:
        if offset > position:
            fmt.append(f"{offset - position}x")
        fmt.append(code)
        position = offset + struct.calcsize("=" + code)
    if size > position:
        fmt.append(f"{size - position}x")
    return struct.Struct("".join(fmt))


def _picks(fields: list[Field]) -> list[int]:
    """Indexes, among fields' values, of DEST_VALUES in their order and then the ten counters."""
    index = {role: position for position, (_, _, role) in enumerate(fields) if role[0] != "header"}
    return [index["value", number] for number, _ in DEST_VALUES] + [index["counter", n] for n in range(10)]


def _itemgetter_or_none(indexes: list[int], count: int):
    """itemgetter(*indexes); None when it would hand back the whole tuple unchanged."""
    return None if indexes == list(range(count)) else operator.itemgetter(*indexes)


class NestLayout:
    """One shape of a real-server nest as a single struct: every header to check, every value to pick.

    The kernel lays out every real server of a dump the same way, so after the first one is
    walked attribute by attribute, the rest are read with one unpack_from (from the dest nest's
    own header to the end of the message), checked against the headers seen (lengths and
    types), and picked with one itemgetter. A message of any other shape fails the check and
    is walked.
    """

    __slots__ = ("fields", "struct", "check", "expected", "pick", "unknown")

    def __init__(self, fields: list[Field], size: int, unknown: int):
        self.fields = fields
        self.struct = _struct_of(fields, size)
        headers = [position for position, (_, _, role) in enumerate(fields) if role[0] == "header"]
        self.check = operator.itemgetter(*headers)
        self.expected = tuple(fields[position][2][1] for position in headers)
        self.pick = operator.itemgetter(*_picks(fields))
        self.unknown = unknown

    def matches(self, data, start: int) -> bool:
        return self.check(self.struct.unpack_from(data, start)) == self.expected

    def read(self, data, start: int) -> tuple | None:
        values = self.struct.unpack_from(data, start)
        if self.check(values) != self.expected:
            return None
        return self.pick(values)

    @classmethod
    def learn(cls, data, start: int, end: int) -> NestLayout | None:
        """The layout of the attributes from start to end, when they are one dest nest a struct can
        read; None for anything else (another attribute beside it, a repeated or short attribute,
        no standard STATS64 nest, a value missing)."""
        if start + 4 > end:
            return None
        outer_length, outer_kind = NLA_HEADER.unpack_from(data, start)
        stop = start + outer_length
        if outer_kind & NLA_TYPE_MASK != nl.CMD_ATTR_DEST or not end - 4 < stop <= end:
            return None
        fields: list[Field] = [(0, "H", ("header", outer_length)), (2, "H", ("header", outer_kind))]
        unknown, position, seen = 0, start + 4, set()
        while position + 4 <= stop:
            length, kind = NLA_HEADER.unpack_from(data, position)
            number = kind & NLA_TYPE_MASK
            if length < 4 or position + length > stop or number in seen:
                return None
            seen.add(number)
            offset = position - start
            fields += [(offset, "H", ("header", length)), (offset + 2, "H", ("header", kind))]
            size = length - 4
            code = DEST_VALUE_CODES.get(number)
            if code == "s":
                fields.append((offset + 4, f"{size}s", ("value", number)))
            elif code is not None:
                if size < struct.calcsize("=" + code):
                    return None
                fields.append((offset + 4, code, ("value", number)))
            elif number == nl.DEST_ATTR_STATS64:
                if size != STATS64_PACKED.size:
                    return None
                inner = STATS64_PACKED.unpack_from(data, position + 4)
                if inner[0::3] != STATS64_PACKED_LENGTHS or inner[1::3] != STATS64_PACKED_TYPES:
                    return None
                for counter in range(10):
                    at = offset + 4 + 12 * counter
                    fields += [(at, "H", ("header", 12)), (at + 2, "H", ("header", counter + 1)),
                               (at + 4, "Q", ("counter", counter))]  # fmt: skip
            else:
                unknown += number not in DEST_KNOWN
            position += (length + 3) & ~3
        if len(seen & DEST_VALUE_CODES.keys()) != len(DEST_VALUES) or nl.DEST_ATTR_STATS64 not in seen:
            return None
        return cls(fields, end - start, unknown)


# The netlink and generic netlink headers in front of a nest: what a DatagramLayout checks of them.
NLMSG_LENGTH, NLMSG_TYPE, NLMSG_FLAGS, NLMSG_SEQUENCE, GENL_COMMAND, GENL_VERSION = (0, 4), (4, 2), (6, 2), (8, 4), \
    (16, 1), (17, 1)  # fmt: skip
_BYTE_ORDER = sys.byteorder
REPEATS_KEPT = 16  # datagram sizes (in messages) a DatagramLayout keeps its check for


class DatagramLayout:
    """A NestLayout with the message's headers in front: a whole datagram of real servers of one
    shape is checked with three operations on integers and read with one iter_unpack, in C.

    Every header of every message (netlink, generic netlink, nest, attributes: all but the port
    id) is compared at once as the bits of the datagram under a mask; the sequence number is
    part of what is expected. Only the values are unpacked. A dump's datagrams hold nothing but
    its messages (the kernel sends NLMSG_DONE in a datagram of its own), so this is how nearly
    every real server of a poll is read; a datagram with anything else in it (another shape, an
    error, DONE) fails the check and goes through the marshal.
    """

    __slots__ = ("length", "mask", "expected", "sequence_unit", "struct", "pick", "unknown", "more", "_repeats")

    def __init__(self, nest: NestLayout, message: bytes):
        self.length = length = len(message)
        constant = [NLMSG_LENGTH, NLMSG_TYPE, NLMSG_FLAGS, GENL_COMMAND, GENL_VERSION]
        for offset, code, role in nest.fields:
            if role[0] == "header":
                constant.append((ATTRIBUTES_START + offset, struct.calcsize("=" + code)))
        mask = bytearray(length)
        for offset, size in constant:
            mask[offset : offset + size] = b"\xff" * size
        self.expected = int.from_bytes(message, _BYTE_ORDER) & int.from_bytes(mask, _BYTE_ORDER)
        mask[NLMSG_SEQUENCE[0] : sum(NLMSG_SEQUENCE)] = b"\xff" * NLMSG_SEQUENCE[1]  # expected per request
        self.mask = int.from_bytes(mask, _BYTE_ORDER)
        sequence_unit = bytearray(length)
        U32.pack_into(sequence_unit, NLMSG_SEQUENCE[0], 1)
        self.sequence_unit = int.from_bytes(sequence_unit, _BYTE_ORDER)
        values = [(ATTRIBUTES_START + offset, code, role) for offset, code, role in nest.fields if role[0] != "header"]
        self.struct = _struct_of(values, length)
        self.pick = _itemgetter_or_none(_picks(values), len(values))
        self.unknown = nest.unknown
        self.more = bool(U16.unpack_from(message, NLMSG_FLAGS[0])[0] & NLM_F_MULTI)
        self._repeats: dict[int, tuple[int, int, int]] = {}

    def _repeated(self, count: int) -> tuple[int, int, int]:
        """mask, expected headers and sequence unit of `count` messages in a row (kept for a few
        counts: each is three integers as long as the datagram)."""
        found = self._repeats.get(count)
        if found is None:
            unit = sum(1 << (8 * self.length * index) for index in range(count))  # one bit a message
            found = (self.mask * unit, self.expected * unit, self.sequence_unit * unit)
            if len(self._repeats) < REPEATS_KEPT:
                self._repeats[count] = found
        return found

    def rows(self, data, sequence: int) -> list[tuple] | None:
        """Each message's values (DEST_VALUES, then the counters), when every message of `data` is
        of this shape and answers `sequence`; None when any is not."""
        count, rest = divmod(len(data), self.length)
        if rest or not count:
            return None
        mask, expected, sequence_unit = self._repeated(count)
        if int.from_bytes(data, _BYTE_ORDER) & mask != expected + sequence * sequence_unit:
            return None
        rows = list(self.struct.iter_unpack(data))
        return rows if self.pick is None else list(map(self.pick, rows))


class DestLayouts:
    """The layouts seen so far: of nests by size, of whole messages by length (a handful in
    practice: IPv4 and IPv6 real servers)."""

    def __init__(self):
        self.by_size: dict[int, list[NestLayout]] = {}
        self.by_length: dict[int, list[DatagramLayout]] = {}
        self.count = 0

    def find(self, data, start: int, stop: int) -> NestLayout | None:
        for layout in self.by_size.get(stop - start, ()):
            if layout.matches(data, start):
                return layout
        return None

    def read(self, data, start: int, stop: int, skipped) -> tuple | None:
        for layout in self.by_size.get(stop - start, ()):
            picked = layout.read(data, start)
            if picked is not None:
                if layout.unknown:
                    skipped[_SKIP_UNKNOWN] += layout.unknown
                return picked
        return None

    def read_datagram(self, data, sequence: int, skipped) -> tuple[list[tuple], bool] | None:
        """Every real server's values in a datagram answering `sequence` and whether more follow,
        when it holds real servers of one shape seen before; None for anything else."""
        if len(data) < NLMSG_HEADER.size:
            return None
        for layout in self.by_length.get(U32.unpack_from(data)[0], ()):
            rows = layout.rows(data, sequence)
            if rows is not None:
                if layout.unknown:
                    skipped[_SKIP_UNKNOWN] += layout.unknown * len(rows)
                return rows, layout.more
        return None

    def learn(self, data, start: int, stop: int) -> None:
        if self.count >= MAX_LAYOUTS:
            return
        layout = NestLayout.learn(data, start, stop)
        if layout is not None:
            self.by_size.setdefault(stop - start, []).append(layout)
            self.count += 1

    def learn_message(self, msg: RawMessage) -> None:
        """The layout of msg's whole message, once its nest's layout is known."""
        if self.count >= MAX_LAYOUTS or msg.length <= ATTRIBUTES_START:
            return
        nest = self.find(msg.data, msg.offset + ATTRIBUTES_START, msg.end)
        message = bytes(msg.data[msg.offset : msg.end])
        if nest is None or U32.unpack_from(message)[0] != len(message):
            return
        known = self.by_length.setdefault(len(message), [])
        sequence = U32.unpack_from(message, NLMSG_SEQUENCE[0])[0]
        if not any(layout.rows(message, sequence) is not None for layout in known):
            known.append(DatagramLayout(nest, message))
            self.count += 1


DEST_LAYOUTS = DestLayouts()


def dest_values(data, start: int, stop: int, skipped) -> tuple:
    """DEST_VALUES then the ten counters, walking the nest."""
    found = _walk(data, start, stop, DEST_KNOWN, skipped)
    values = []
    for (number, code), default in zip(DEST_VALUES, DEST_DEFAULTS):
        span = found.get(number)
        if span is None:
            values.append(default)
        elif code == "s":
            values.append(bytes(data[span[0] : span[1]]))
        else:
            values.append(_unpack(data, span, U16 if code == "H" else U32))
    return tuple(values) + counters(data, found, nl.DEST_ATTR_STATS, nl.DEST_ATTR_STATS64, skipped)


# Real servers' addresses come back every poll: their text is kept (by family and raw bytes).
ADDRESS_CACHE_SIZE = 1 << 17
_address_text: dict[str, dict[bytes, str]] = {"inet": {}, "inet6": {}}


def _raw_address(raw: bytes | None, af: str) -> str:
    cache = _address_text.get(af)
    text = cache.get(raw) if cache is not None and raw is not None else None
    if text is not None:
        return text
    if raw is None:
        raise nl.Undecodable("no address")
    if af == "inet":
        if len(raw) < 4:
            raise nl.Undecodable(f"a 4-byte address in {len(raw)} bytes")
        text = _inet_ntop(_AF_INET, raw[:4])
    else:
        if len(raw) < 16:
            raise nl.Undecodable(f"a 16-byte address in {len(raw)} bytes")
        text = _inet_ntop(_AF_INET6, raw[:16])
    if cache is not None:
        if len(cache) >= ADDRESS_CACHE_SIZE:
            cache.clear()
        cache[raw] = text
    return text


def _dest(values: tuple, service_af: str) -> model.Dest:
    """A real server from DEST_VALUES then the ten counters (dest_values' order, a layout's pick)."""
    raw_address, port, forward, weight, upper, lower, active, inactive, persist, family = values[:10]
    af = _FAMILIES.get(family, service_af)
    method = _FORWARD_METHODS.get(forward & nl.FWD_MASK)
    if method is None:
        raise nl.Undecodable("unknown forwarding method")
    # The tuples made directly: NamedTuple.__new__ is a Python function, this is C.
    return _new_tuple(model.Dest, (
        _raw_address(raw_address, af), None if port is None else _ntohs(port), method, weight, upper, lower,
        active, inactive, persist, _new_tuple(model.Stats, values[10:15]),
        _new_tuple(model.Rates, values[15:20]), af))  # fmt: skip


class DestMemory:
    """The real servers of the poll before, by the values they were decoded from (a layout's row).

    A real server whose values did not change (no traffic, no change of weight: most of a large
    director between two polls) is the same Dest object again, not ten thousand new tuples a
    poll; snapshots then share it. Only rows that name their own family are kept (another's
    Dest depends on its service's family too). Two generations: what the newest poll found, and
    what the one before found, so that a real server gone is forgotten after one poll. A socket's
    first poll keeps nothing: --once polls once, and keeping costs it 2-8% of that poll.
    """

    __slots__ = ("previous", "current")

    def __init__(self):
        self.previous: dict[tuple, model.Dest] = {}
        self.current: dict[tuple, model.Dest] | None = None  # None: not keeping yet

    def turn(self) -> None:
        """A poll has ended: what it found is what the next one compares with."""
        self.previous, self.current = self.current or {}, {}


def _dests_of_rows(rows: list[tuple], service_af: str, memory: DestMemory | None, skipped) -> list[model.Dest | None]:
    keep = memory.current if memory is not None else None
    if keep is None:
        try:
            return [_dest(values, service_af) for values in rows]
        except (nl.Undecodable, ValueError, OSError):  # rare: find which rows, and count them
            return [_dest_or_none(values, service_af, skipped) for values in rows]
    recall = memory.previous.get
    families = _FAMILIES
    dests: list[model.Dest | None] = []
    for values in rows:
        dest = recall(values)
        if dest is None:
            dest = _dest_or_none(values, service_af, skipped)
            # A row of a family the decoder does not know makes a Dest of the service's family.
            if dest is not None and values[9] in families:
                keep[values] = dest
        else:
            keep[values] = dest
        dests.append(dest)
    return dests


def _dest_or_none(values: tuple, service_af: str, skipped) -> model.Dest | None:
    """_dest(), or None for a row that cannot be decoded (counted)."""
    try:
        return _dest(values, service_af)
    except (nl.Undecodable, ValueError, OSError):
        skipped[_SKIP_UNDECODABLE] += 1
        return None


def _only_nest(msg: RawMessage, number: int, skipped) -> tuple[int, int]:
    """The span of the nest a message carries; at once when it is the message's only attribute."""
    data = msg.data
    first = msg.offset + ATTRIBUTES_START
    end = msg.offset + msg.length
    if first + 4 <= end:
        length, kind = NLA_HEADER.unpack_from(data, first)
        if kind & NLA_TYPE_MASK == number and length >= 4 and end - 4 < first + length <= end:
            return first + 4, first + length
    return _outer(msg, number, skipped)


# -- services: what does not change between polls is decoded once --------------------------

STATS64_NEST_SIZE = NLA_HEADER.size + STATS64_PACKED.size
SERVICE_CACHE_SIZE = 1 << 14


# What a ServiceLayout reads of a service at once, in this order (ServiceLayout.values): each
# attribute's value as a native number or raw bytes ("s": the whole payload; the port is read
# natively and swapped after), with the payload size its decoding needs (the flags are struct
# ip_vs_flags, of which the flags come first), or SERVICE_DEFAULTS' value when the layout has no
# such attribute; then the ten counters of a standard STATS64 nest.
SERVICE_VALUES = (
    (nl.SVC_ATTR_AF, "H", 2),
    (nl.SVC_ATTR_PROTOCOL, "H", 2),
    (nl.SVC_ATTR_ADDR, "s", 0),
    (nl.SVC_ATTR_PORT, "H", 2),
    (nl.SVC_ATTR_FWMARK, "I", 4),
    (nl.SVC_ATTR_SCHED_NAME, "s", 0),
    (nl.SVC_ATTR_FLAGS, "I", SERVICE_FLAGS.size),
    (nl.SVC_ATTR_TIMEOUT, "I", 4),
    (nl.SVC_ATTR_NETMASK, "s", 0),
    (nl.SVC_ATTR_PE_NAME, "s", 0),
)
SERVICE_DEFAULTS = (None, None, None, None, 0, None, 0, 0, None, None)


class ServiceLayout:
    """Where the attributes of a service message of one length lie: every header (the service
    nest's and each attribute's, lengths and types) is checked with one unpack, and the
    attributes' spans are then known without walking them.

    When the message has what a service needs in sizes that fit (SERVICE_VALUES) and the kernel's
    packed STATS64 nest, the same unpack also reads every value (`values`): a first poll then
    decodes each service from one unpack, with what repeats from service to service (scheduler,
    flags, netmask, ...) decoded once (service_from_values)."""

    __slots__ = ("struct", "check", "expected", "spans", "shape", "unknown", "pick")

    def __init__(self, fields: list[Field], size: int, spans: list[tuple[int, int, int]], shape: tuple[int, int],
                 unknown: collections.Counter, picks: list[int] | None = None):  # fmt: skip
        self.struct = _struct_of(fields, size)
        headers = [position for position, (_, _, role) in enumerate(fields) if role[0] == "header"]
        self.check = operator.itemgetter(*headers)
        self.expected = tuple(fields[position][2][1] for position in headers)
        self.spans = spans  # (type, payload start, payload end) from the message's start
        self.shape = shape
        self.unknown = unknown  # what each message of this layout counts in skipped: its unknown attributes
        # SERVICE_VALUES then the counters, as indexes into the unpacked values followed by SERVICE_DEFAULTS
        self.pick = operator.itemgetter(*picks) if picks is not None else None

    def spans_of(self, data, offset: int) -> dict[int, tuple[int, int]] | None:
        if self.check(self.struct.unpack_from(data, offset)) != self.expected:
            return None
        return {number: (offset + start, offset + stop) for number, start, stop in self.spans}

    def values(self, data, offset: int) -> tuple | None:
        """SERVICE_VALUES then the ten counters of the message at offset, when every header is
        where this layout has it and the layout reads values; else None."""
        if self.pick is None:
            return None
        values = self.struct.unpack_from(data, offset)
        if self.check(values) != self.expected:
            return None
        return self.pick(values + SERVICE_DEFAULTS)

    @classmethod
    def learn(cls, msg: RawMessage, shape: tuple[int, int]) -> ServiceLayout | None:
        """The layout of msg (of the kernel's shape: one service nest ending the message); None
        when an attribute is repeated (the spans would name only its last copy)."""
        data, offset, end = msg.data, msg.offset, msg.end
        position = offset + ATTRIBUTES_START
        length, kind = NLA_HEADER.unpack_from(data, position)
        fields: list[Field] = [(ATTRIBUTES_START, "H", ("header", length)), (ATTRIBUTES_START + 2, "H", ("header", kind))]
        spans, seen = [], set()
        position += NLA_HEADER.size
        while position + 4 <= end:
            length, kind = NLA_HEADER.unpack_from(data, position)
            number = kind & NLA_TYPE_MASK
            if length < 4 or position + length > end or number in seen:
                return None
            seen.add(number)
            start = position - offset
            fields += [(start, "H", ("header", length)), (start + 2, "H", ("header", kind))]
            spans.append((number, start + 4, start + length))
            position += (length + 3) & ~3
        # What the walk would count of the nest; the counters' nests count their own as they are read.
        unknown = collections.Counter({_SKIP_UNKNOWN: len(seen - SERVICE_KNOWN)} if seen - SERVICE_KNOWN else {})
        values = cls._value_fields(data, offset, spans)
        if values is None:
            return cls(fields, msg.length, spans, shape, unknown)
        fields = sorted(fields + values, key=lambda field: field[0])
        index = {role: place for place, (_, _, role) in enumerate(fields) if role[0] != "header"}
        defaults = len(fields)  # SERVICE_DEFAULTS follow the unpacked values
        picks = [index.get(("value", number), defaults + place) for place, (number, _, _) in enumerate(SERVICE_VALUES)]
        picks += [index["counter", counter] for counter in range(10)]
        return cls(fields, msg.length, spans, shape, unknown, picks)

    @staticmethod
    def _value_fields(data, offset: int, spans: list[tuple[int, int, int]]) -> list[Field] | None:
        """The fields that read SERVICE_VALUES and the counters; None when the message lacks the
        address family or the kernel's packed STATS64 nest, or has a value too short for its type."""
        sizes = {number: stop - start for number, start, stop in spans}
        starts = {number: start for number, start, _ in spans}
        if nl.SVC_ATTR_AF not in sizes or sizes.get(nl.SVC_ATTR_STATS64) != STATS64_PACKED.size:
            return None
        counters_at = starts[nl.SVC_ATTR_STATS64]
        inner = STATS64_PACKED.unpack_from(data, offset + counters_at)
        if inner[0::3] != STATS64_PACKED_LENGTHS or inner[1::3] != STATS64_PACKED_TYPES:
            return None
        fields: list[Field] = []
        for number, code, needed in SERVICE_VALUES:
            size = sizes.get(number)
            if size is None:
                continue
            if size < needed:
                return None
            fields.append((starts[number], f"{size}s" if code == "s" else code, ("value", number)))
        for counter in range(10):
            at = counters_at + 12 * counter
            fields += [(at, "H", ("header", 12)), (at + 2, "H", ("header", counter + 1)),
                       (at + 4, "Q", ("counter", counter))]  # fmt: skip
        return fields


# What repeats from service to service, decoded once: (AF, PROTOCOL, SCHED_NAME, FLAGS, TIMEOUT,
# NETMASK, PE_NAME) as a layout reads them -> (af, protocol, scheduler, persistent, netmask, flag
# names, pe_name), or None when the family is unknown.
_service_heads: dict[tuple, tuple | None] = {}
SERVICE_HEADS_KEPT = 1 << 12


def _service_head(af_number, protocol_number, scheduler, flags, timeout, netmask, pe_name) -> tuple | None:
    af = _FAMILIES.get(af_number)
    if af is None:
        return None
    scheduler = "" if scheduler is None else scheduler.strip(b"\0").decode("utf-8", "replace")
    return (
        af,
        _PROTOCOLS.get(protocol_number),
        scheduler,
        timeout if flags & nl.SVC_F_PERSISTENT else None,
        _netmask(netmask, None if netmask is None else (0, len(netmask)), af),
        nl.service_flag_names(flags, scheduler),
        None if pe_name is None else pe_name.strip(b"\0").decode("utf-8", "replace") or None,
    )


def service_from_values(values: tuple) -> model.Service | None:
    """The service of SERVICE_VALUES and the ten counters (ServiceLayout.values), as
    FastDecoder._service_of decodes it; None when it would not decode (an unknown family or
    protocol, a short address), which the walk then counts as undecodable."""
    af_number, protocol_number, address, port, fwmark, scheduler, flags, timeout, netmask, pe_name = values[:10]
    repeated = (af_number, protocol_number, scheduler, flags, timeout, netmask, pe_name)
    head = _service_heads.get(repeated, _service_heads)
    if head is _service_heads:
        head = _service_head(*repeated)
        if len(_service_heads) >= SERVICE_HEADS_KEPT:
            _service_heads.clear()
        _service_heads[repeated] = head
    if head is None:
        return None
    af, protocol, scheduler_name, persistent, netmask_text, flag_names, pe = head
    if fwmark:
        key = model.ServiceKey(af, None, "", 0, fwmark)
    else:
        size = 4 if af == "inet" else 16
        if protocol is None or address is None or port is None or len(address) < size:
            return None
        key = model.ServiceKey(af, protocol, _inet_ntop(_AF_INET if size == 4 else _AF_INET6, address[:size]), _ntohs(port))
    return model.Service(key, scheduler_name, persistent, netmask_text, flag_names, pe,
                         _new_tuple(model.Stats, values[10:15]), _new_tuple(model.Rates, values[15:20]))  # fmt: skip


class ServiceShapes:
    """Services as the kernel sends them, read without walking their attributes after the first poll.

    ip_vs_genl_fill_service puts the counters last: a 32-bit STATS nest, then STATS64. What comes
    before them (key, scheduler, flags, timeout, netmask, persistence engine) is the same every
    poll, so its bytes, nest header included, are the key to what was decoded from them (and to
    the unknown attributes counted then). A shape is a message length and where the counter
    nests start; a message is read by it when the bytes before the counters were seen before,
    STATS (when the shape has it) and STATS64 have their headers where the shape says, and
    STATS64 is the kernel's packed nest ending the message. Anything else is walked
    (FastDecoder._service) and teaches its shape.

    A service whose bytes were not seen before (all of them in a process's first poll, which is
    all --once does) is decoded from where its length's first message had its attributes, when
    every attribute header is where that one had it (ServiceLayout): no walk, and no second walk
    to learn its shape.
    """

    def __init__(self):
        # message length -> (where the counters start, where STATS64 starts); None: not the kernel's shape
        self.by_length: dict[int, tuple[int, int] | None] = {}
        self.known: dict[bytes, tuple[tuple, collections.Counter]] = {}  # Service's fields before stats, unknowns
        self.layouts: dict[int, ServiceLayout] = {}  # message length -> where its attributes lie

    def read(self, msg: RawMessage, skipped) -> model.Service | None:
        shape = self.by_length.get(msg.length)
        if shape is None:
            return None
        data, offset = msg.data, msg.offset
        counters_at, stats64_at = offset + shape[0], offset + shape[1]
        found = self.known.get(bytes(data[offset + ATTRIBUTES_START : counters_at]))
        if found is None:
            return None
        if counters_at != stats64_at:
            length, kind = NLA_HEADER.unpack_from(data, counters_at)
            if kind & NLA_TYPE_MASK != nl.SVC_ATTR_STATS or (length + 3) & ~3 != stats64_at - counters_at:
                return None
        length, kind = NLA_HEADER.unpack_from(data, stats64_at)
        if kind & NLA_TYPE_MASK != nl.SVC_ATTR_STATS64 or length != STATS64_NEST_SIZE:
            return None
        values = STATS64_PACKED.unpack_from(data, stats64_at + NLA_HEADER.size)
        if values[0::3] != STATS64_PACKED_LENGTHS or values[1::3] != STATS64_PACKED_TYPES:
            return None
        fields, unknown = found
        if unknown:
            skipped.update(unknown)
        return model.Service(*fields, _new_tuple(model.Stats, values[2:15:3]), _new_tuple(model.Rates, values[17::3]))

    def layout(self, msg: RawMessage) -> ServiceLayout | None:
        """The layout of the first service message of msg's length, if any (it may not fit msg)."""
        return self.layouts.get(msg.length)

    def learn(self, msg: RawMessage, service: model.Service, unknown: collections.Counter) -> None:
        """Keep what _service decoded `service` from, when msg has the kernel's shape."""
        if msg.length in self.by_length and self.by_length[msg.length] is None:
            return  # a length whose first message was not of the kernel's shape
        shape = self._shape(msg)
        known = self.by_length.setdefault(msg.length, shape)  # the first message of a length decides
        if shape is None or shape != known:
            return
        if msg.length not in self.layouts:
            layout = ServiceLayout.learn(msg, shape)
            if layout is not None:
                values = layout.values(msg.data, msg.offset)
                if values is not None and service_from_values(values) != service:
                    layout.pick = None  # never seen; but the walk is the reference: spans only
                self.layouts[msg.length] = layout
        self.remember(msg, shape, service, unknown)

    def remember(self, msg: RawMessage, shape: tuple[int, int], service: model.Service,
                 unknown: collections.Counter) -> None:  # fmt: skip
        """Keep what `service` was decoded from: msg's bytes before its counters (at shape[0])."""
        if len(self.known) >= SERVICE_CACHE_SIZE:
            self.known.clear()
        fields = (service.key, service.scheduler, service.persistent, service.netmask, service.flags, service.pe_name)
        self.known[bytes(msg.data[msg.offset + ATTRIBUTES_START : msg.offset + shape[0]])] = (fields, unknown)

    @staticmethod
    def _shape(msg: RawMessage) -> tuple[int, int] | None:
        """(where the counters start, where STATS64 starts) from the message's start, when the
        service nest is its only attribute and the counters end it; else None."""
        data, offset, end = msg.data, msg.offset, msg.end
        try:
            length, kind = NLA_HEADER.unpack_from(data, offset + ATTRIBUTES_START)
            found, _ = attributes(data, offset + ATTRIBUTES_START + NLA_HEADER.size, end)
        except (nl.Undecodable, struct.error):
            return None
        stats64 = found.get(nl.SVC_ATTR_STATS64)
        if (kind & NLA_TYPE_MASK != nl.CMD_ATTR_SERVICE or offset + ATTRIBUTES_START + length != end
                or stats64 is None or stats64 != (end - STATS64_PACKED.size, end)):  # fmt: skip
            return None
        spans = sorted(found.values())
        counters_at = stats64_at = stats64[0] - NLA_HEADER.size
        stats = found.get(nl.SVC_ATTR_STATS)
        if stats is not None:
            if len(spans) < 2 or spans[-2] != stats:  # STATS, when there, just before STATS64
                return None
            counters_at = stats[0] - NLA_HEADER.size
        return counters_at - offset, stats64_at - offset


SERVICE_SHAPES = ServiceShapes()


# -- the decoder ----------------------------------------------------------------------------


class FastDecoder:
    """NlaDecoder's interface and results, decoding RawMessage buffers with struct.

    Each method takes one message and a Counter of skip reasons; it returns None (and counts
    SKIP_UNDECODABLE) for a message it cannot make sense of, instead of raising.
    """

    message = RawMessage
    marshal = BatchMarshal
    dest_memory = DestMemory
    dest_dump_request = staticmethod(dest_dump_request)

    @staticmethod
    def info(msg: RawMessage) -> model.IpvsInfo:
        data = msg.data
        found, _ = attributes(data, msg.offset + ATTRIBUTES_START, msg.end)
        version = _number(data, found, nl.INFO_ATTR_VERSION, U32, 0)
        return model.IpvsInfo(
            version=f"{(version >> 16) & 0xFF}.{(version >> 8) & 0xFF}.{version & 0xFF}",
            conn_table_size=_number(data, found, nl.INFO_ATTR_CONN_TAB_SIZE, U32, 0),
        )

    @staticmethod
    def timeouts(msg: RawMessage) -> model.Timeouts:
        data = msg.data
        found, _ = attributes(data, msg.offset + ATTRIBUTES_START, msg.end)
        return model.Timeouts(
            tcp=_number(data, found, nl.CMD_ATTR_TIMEOUT_TCP, U32, 0),
            tcp_fin=_number(data, found, nl.CMD_ATTR_TIMEOUT_TCP_FIN, U32, 0),
            udp=_number(data, found, nl.CMD_ATTR_TIMEOUT_UDP, U32, 0),
        )

    @staticmethod
    def service(msg: RawMessage, skipped: collections.Counter) -> model.Service | None:
        known = SERVICE_SHAPES.read(msg, skipped)
        if known is not None:
            return known
        layout = SERVICE_SHAPES.layout(msg)
        if layout is None:
            return FastDecoder._walked_service(msg, skipped)
        # A service not seen before, in a shape seen before (every service of a first poll but
        # one): read in one unpack where that shape has its values, else decoded from where it
        # has its attributes (to count why it does not decode, as before); no walk either way.
        values = layout.values(msg.data, msg.offset)
        service = service_from_values(values) if values is not None else None
        if service is None:
            found = layout.spans_of(msg.data, msg.offset)
            if found is None:  # another layout of the same length
                return FastDecoder._walked_service(msg, skipped)
            service = FastDecoder._service_of(msg.data, found, skipped)
        if service is not None:
            skipped.update(layout.unknown)
            SERVICE_SHAPES.remember(msg, layout.shape, service, layout.unknown)
        return service

    @staticmethod
    def _walked_service(msg: RawMessage, skipped: collections.Counter) -> model.Service | None:
        before = skipped.copy()
        service = FastDecoder._service(msg, skipped)
        if service is not None:
            SERVICE_SHAPES.learn(msg, service, skipped - before)
        return service

    @staticmethod
    def _service(msg: RawMessage, skipped: collections.Counter) -> model.Service | None:
        try:
            start, stop = _outer(msg, nl.CMD_ATTR_SERVICE, skipped)
            found = _walk(msg.data, start, stop, SERVICE_KNOWN, skipped)
        except (nl.Undecodable, struct.error, ValueError, OSError):
            skipped[_SKIP_UNDECODABLE] += 1
            return None
        return FastDecoder._service_of(msg.data, found, skipped)

    @staticmethod
    def _service_of(data, found: dict, skipped: collections.Counter) -> model.Service | None:
        """The service whose nest's attributes lie at `found` ({type: (payload start, end)})."""
        try:
            af = _FAMILIES.get(_number(data, found, nl.SVC_ATTR_AF, U16))
            if af is None:
                raise nl.Undecodable("unknown address family")
            fwmark = _number(data, found, nl.SVC_ATTR_FWMARK, U32, 0)
            if fwmark:
                key = model.ServiceKey(af, None, "", 0, fwmark)
            else:
                protocol = _PROTOCOLS.get(_number(data, found, nl.SVC_ATTR_PROTOCOL, U16))
                if protocol is None:
                    raise nl.Undecodable("unknown protocol")
                address = _address(data, found.get(nl.SVC_ATTR_ADDR), af)
                key = model.ServiceKey(af, protocol, address, _number(data, found, nl.SVC_ATTR_PORT, BE16))
            scheduler = _text(data, found, nl.SVC_ATTR_SCHED_NAME, "")
            flags_span = found.get(nl.SVC_ATTR_FLAGS)
            flags = _unpack(data, flags_span, SERVICE_FLAGS) if flags_span is not None else 0
            stats, rates = stats_and_rates(counters(data, found, nl.SVC_ATTR_STATS, nl.SVC_ATTR_STATS64, skipped))
            return model.Service(
                key=key,
                scheduler=scheduler,
                persistent=_number(data, found, nl.SVC_ATTR_TIMEOUT, U32, 0) if flags & nl.SVC_F_PERSISTENT else None,
                netmask=_netmask(data, found.get(nl.SVC_ATTR_NETMASK), af),
                flags=nl.service_flag_names(flags, scheduler),
                pe_name=_text(data, found, nl.SVC_ATTR_PE_NAME) or None,
                stats=stats,
                rates=rates,
            )
        except (nl.Undecodable, struct.error, ValueError, OSError):
            skipped[_SKIP_UNDECODABLE] += 1
            return None

    @staticmethod
    def dest(msg: RawMessage, service_af: str, skipped: collections.Counter) -> model.Dest | None:
        try:
            data = msg.data
            first = msg.offset + ATTRIBUTES_START
            end = msg.offset + msg.length
            values = DEST_LAYOUTS.read(data, first, end, skipped)
            if values is None:
                start, stop = _only_nest(msg, nl.CMD_ATTR_DEST, skipped)
                values = dest_values(data, start, stop, skipped)
                DEST_LAYOUTS.learn(data, first, end)
            return _dest(values, service_af)
        except (nl.Undecodable, struct.error, ValueError, OSError):
            skipped[_SKIP_UNDECODABLE] += 1
            return None

    @staticmethod
    def dest_replies(marshal: BatchMarshal, service_af: str, skipped: collections.Counter, data,
                     sequence: int, memory: DestMemory | None = None) -> tuple[list[model.Dest | None], bool]:  # fmt: skip
        """The real servers in one datagram answering dest dump `sequence`, and whether it ends the
        dump (netlink.IpvsSocket's reader for dest dumps). A datagram of real servers of a shape
        seen before is read at once (DatagramLayout), a real server unchanged since the poll
        before coming back from `memory`; any other goes through marshal.replies() and dest(),
        and teaches its shape. None stands for a real server that could not be decoded."""
        found = DEST_LAYOUTS.read_datagram(data, sequence, skipped)
        if found is not None:
            rows, more = found
            return _dests_of_rows(rows, service_af, memory, skipped), not more
        messages, complete = marshal.replies(data, sequence)
        dests = [FastDecoder.dest(msg, service_af, skipped) for msg in messages]
        if messages and dests[0] is not None and isinstance(messages[0], RawMessage):
            DEST_LAYOUTS.learn_message(messages[0])
        return dests, complete

    @staticmethod
    def dest_config(msg: RawMessage, service_af: str) -> nl.DestConfig | None:
        try:
            data = msg.data
            start, stop = _outer(msg, nl.CMD_ATTR_DEST, collections.Counter())
            found, _ = attributes(data, start, stop)
            af = _FAMILIES.get(_number(data, found, nl.DEST_ATTR_ADDR_FAMILY, U16), service_af)
            forward = _number(data, found, nl.DEST_ATTR_FWD_METHOD, U32)
            if forward is None:
                raise nl.Undecodable("no forwarding method")
            return nl.DestConfig(
                address=_address(data, found.get(nl.DEST_ATTR_ADDR), af),
                port=_number(data, found, nl.DEST_ATTR_PORT, BE16),
                af=af,
                forward=forward & nl.FWD_MASK,
                weight=_number(data, found, nl.DEST_ATTR_WEIGHT, U32),
                upper_threshold=_number(data, found, nl.DEST_ATTR_U_THRESH, U32),
                lower_threshold=_number(data, found, nl.DEST_ATTR_L_THRESH, U32),
                tunnel_type=_number(data, found, nl.DEST_ATTR_TUN_TYPE, U8),
                tunnel_port=_number(data, found, nl.DEST_ATTR_TUN_PORT, BE16),
                tunnel_flags=_number(data, found, nl.DEST_ATTR_TUN_FLAGS, U16),
            )
        except (nl.Undecodable, struct.error, ValueError, OSError):
            return None

    @staticmethod
    def daemon(msg: RawMessage, skipped: collections.Counter) -> model.Daemon | None:
        try:
            data = msg.data
            start, stop = _outer(msg, nl.CMD_ATTR_DAEMON, skipped)
            found = _walk(data, start, stop, DAEMON_KNOWN, skipped)
            state = nl.DAEMON_STATES.get(_number(data, found, nl.DAEMON_ATTR_STATE, U32))
            if state is None:
                raise nl.Undecodable("unknown daemon state")
            group6 = found.get(nl.DAEMON_ATTR_MCAST_GROUP6)
            group4 = found.get(nl.DAEMON_ATTR_MCAST_GROUP)
            if group6 is not None:
                group = _address(data, group6, "inet6")
            elif group4 is not None:
                group = _address(data, group4, "inet")
            else:  # kernels before 4.3 send neither: they always use the default group
                group = nl.DEFAULT_SYNC_GROUP
            return model.Daemon(
                state=state,
                interface=_text(data, found, nl.DAEMON_ATTR_MCAST_IFN, ""),
                syncid=_number(data, found, nl.DAEMON_ATTR_SYNC_ID, U32, 0),
                maxlen=_number(data, found, nl.DAEMON_ATTR_SYNC_MAXLEN, U16, 0),
                group=group,
                port=_number(data, found, nl.DAEMON_ATTR_MCAST_PORT, U16, nl.DEFAULT_SYNC_PORT),
                ttl=_number(data, found, nl.DAEMON_ATTR_MCAST_TTL, U8, nl.DEFAULT_SYNC_TTL),
            )
        except (nl.Undecodable, struct.error, ValueError, OSError):
            skipped[_SKIP_UNDECODABLE] += 1
            return None
