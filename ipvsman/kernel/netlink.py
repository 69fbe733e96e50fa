"""IPVS over generic netlink: pyroute2 message classes for ip_vs.h, requests, and decoding to model values.

Every attribute number below is its position in the matching enum of include/uapi/linux/ip_vs.h
(checked against Linux 6.1; the uapi enums only ever grow at the end). pyroute2 is the transport:
its socket (made in the thread's namespace and bound to the IPVS family by pyroute2) carries
every request, its marshal splits the replies, and changes go through its request machinery;
the reads of a poll (1,000 requests at 1,000 services) wait for their replies on that socket
directly, see IpvsSocket. `NlaDecoder` is the one place that turns a message decoded by the nla
classes here into a model value; a faster decoder can replace it without touching the transport
or the backend, as long as its `message` factory returns objects the marshal and socket can read
the netlink header from (`msg["header"]` with type, flags, sequence_number and error). A decoder
also makes the one request sent per service (`dest_dump_request`) and may bring its own pyroute2
Marshal class (`marshal`); fastdecode.FastDecoder, the backend's default, does both.

pyroute2's own IPVS classes (pyroute2.netlink.generic.ipvs, pyroute2.ipvs) are not used: they
decode IPVS_CMD_ATTR_DAEMON as hex, have no GET_INFO / GET_CONFIG / GET_DAEMON, map "update" to
a delete, and default a real server's forwarding method to direct routing. Nor are they
subclassed: pyroute2 caches a compiled attribute map in class attributes that a subclass
inherits, so once the parent class has decoded a message, a subclass's own map is ignored.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import socket
import struct
import sys
from dataclasses import dataclass

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_MULTI, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, genlmsg, nla
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket, GenericNetlinkSocket

from ipvsman import model

GENL_NAME = "IPVS"
GENL_VERSION = 1

# enum of IPVS_CMD_*
CMD_NEW_SERVICE = 1
CMD_SET_SERVICE = 2
CMD_DEL_SERVICE = 3
CMD_GET_SERVICE = 4
CMD_NEW_DEST = 5
CMD_SET_DEST = 6
CMD_DEL_DEST = 7
CMD_GET_DEST = 8
CMD_NEW_DAEMON = 9
CMD_DEL_DAEMON = 10
CMD_GET_DAEMON = 11
CMD_SET_CONFIG = 12
CMD_GET_CONFIG = 13
CMD_SET_INFO = 14  # the command of the reply to GET_INFO
CMD_GET_INFO = 15
CMD_ZERO = 16
CMD_FLUSH = 17

# enum of IPVS_CMD_ATTR_* (first level of every message but the GET_INFO reply)
CMD_ATTR_SERVICE = 1
CMD_ATTR_DEST = 2
CMD_ATTR_DAEMON = 3
CMD_ATTR_TIMEOUT_TCP = 4
CMD_ATTR_TIMEOUT_TCP_FIN = 5
CMD_ATTR_TIMEOUT_UDP = 6

# enum of IPVS_INFO_ATTR_* (first level of the GET_INFO reply, overlapping the numbers above)
INFO_ATTR_VERSION = 1
INFO_ATTR_CONN_TAB_SIZE = 2

# enum of IPVS_SVC_ATTR_*
SVC_ATTR_AF = 1
SVC_ATTR_PROTOCOL = 2
SVC_ATTR_ADDR = 3
SVC_ATTR_PORT = 4
SVC_ATTR_FWMARK = 5
SVC_ATTR_SCHED_NAME = 6
SVC_ATTR_FLAGS = 7
SVC_ATTR_TIMEOUT = 8
SVC_ATTR_NETMASK = 9
SVC_ATTR_STATS = 10
SVC_ATTR_PE_NAME = 11
SVC_ATTR_STATS64 = 12

# enum of IPVS_DEST_ATTR_*
DEST_ATTR_ADDR = 1
DEST_ATTR_PORT = 2
DEST_ATTR_FWD_METHOD = 3
DEST_ATTR_WEIGHT = 4
DEST_ATTR_U_THRESH = 5
DEST_ATTR_L_THRESH = 6
DEST_ATTR_ACTIVE_CONNS = 7
DEST_ATTR_INACT_CONNS = 8
DEST_ATTR_PERSIST_CONNS = 9
DEST_ATTR_STATS = 10
DEST_ATTR_ADDR_FAMILY = 11
DEST_ATTR_STATS64 = 12
DEST_ATTR_TUN_TYPE = 13
DEST_ATTR_TUN_PORT = 14
DEST_ATTR_TUN_FLAGS = 15

# enum of IPVS_DAEMON_ATTR_*
DAEMON_ATTR_STATE = 1
DAEMON_ATTR_MCAST_IFN = 2
DAEMON_ATTR_SYNC_ID = 3
DAEMON_ATTR_SYNC_MAXLEN = 4
DAEMON_ATTR_MCAST_GROUP = 5
DAEMON_ATTR_MCAST_GROUP6 = 6
DAEMON_ATTR_MCAST_PORT = 7
DAEMON_ATTR_MCAST_TTL = 8

# enum of IPVS_STATS_ATTR_*
STATS_ATTR_CONNS = 1
STATS_ATTR_INPKTS = 2
STATS_ATTR_OUTPKTS = 3
STATS_ATTR_INBYTES = 4
STATS_ATTR_OUTBYTES = 5
STATS_ATTR_CPS = 6
STATS_ATTR_INPPS = 7
STATS_ATTR_OUTPPS = 8
STATS_ATTR_INBPS = 9
STATS_ATTR_OUTBPS = 10
STATS_ATTR_PAD = 11  # alignment filler before 64-bit values; carries nothing

# IP_VS_SVC_F_* service flags
SVC_F_PERSISTENT = 0x0001
SVC_F_HASHED = 0x0002
SVC_F_ONEPACKET = 0x0004
SVC_F_SCHED1 = 0x0008
SVC_F_SCHED2 = 0x0010
SVC_F_SCHED3 = 0x0020

# IP_VS_CONN_F_* forwarding methods (IP_VS_CONN_F_FWD_MASK bits of a real server)
FWD_MASK = 0x0007
FORWARD_METHODS = {0: "masq", 1: "local", 2: "tunnel", 3: "route"}
FORWARD_NUMBERS = {name: number for number, name in FORWARD_METHODS.items()}

# IP_VS_STATE_* of a sync daemon, and what a daemon uses unless told otherwise (ip_vs_sync.c)
DAEMON_STATES = {1: "master", 2: "backup"}
DEFAULT_SYNC_GROUP = "224.0.0.81"
DEFAULT_SYNC_PORT = 8848
DEFAULT_SYNC_TTL = 1

FAMILIES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
FAMILY_NUMBERS = {name: number for number, name in FAMILIES.items()}
PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", socket.IPPROTO_SCTP: "sctp"}
PROTOCOL_NUMBERS = {name: number for number, name in PROTOCOLS.items()}

# Reasons for RawState.skipped
SKIP_UNKNOWN_ATTRIBUTES = "unknown attributes"
SKIP_UNDECODABLE = "undecodable messages"
SKIP_VANISHED = "vanished"

ADDRESS_SIZE = 16  # union nf_inet_addr: the kernel sends and expects 16 bytes for both families


# -- message classes ------------------------------------------------------------------------


class ipvs_stats(nla):
    """IPVS_SVC_ATTR_STATS / IPVS_DEST_ATTR_STATS: counters truncated to 32 bits."""

    prefix = "IPVS_STATS_ATTR_"
    nla_map = (
        (STATS_ATTR_CONNS, "IPVS_STATS_ATTR_CONNS", "uint32"),
        (STATS_ATTR_INPKTS, "IPVS_STATS_ATTR_INPKTS", "uint32"),
        (STATS_ATTR_OUTPKTS, "IPVS_STATS_ATTR_OUTPKTS", "uint32"),
        (STATS_ATTR_INBYTES, "IPVS_STATS_ATTR_INBYTES", "uint64"),
        (STATS_ATTR_OUTBYTES, "IPVS_STATS_ATTR_OUTBYTES", "uint64"),
        (STATS_ATTR_CPS, "IPVS_STATS_ATTR_CPS", "uint32"),
        (STATS_ATTR_INPPS, "IPVS_STATS_ATTR_INPPS", "uint32"),
        (STATS_ATTR_OUTPPS, "IPVS_STATS_ATTR_OUTPPS", "uint32"),
        (STATS_ATTR_INBPS, "IPVS_STATS_ATTR_INBPS", "uint32"),
        (STATS_ATTR_OUTBPS, "IPVS_STATS_ATTR_OUTBPS", "uint32"),
        (STATS_ATTR_PAD, "IPVS_STATS_ATTR_PAD", "none"),
    )


class ipvs_stats64(nla):
    """IPVS_SVC_ATTR_STATS64 / IPVS_DEST_ATTR_STATS64: the same counters and rates, 64 bits each."""

    prefix = "IPVS_STATS_ATTR_"
    nla_map = (
        (STATS_ATTR_CONNS, "IPVS_STATS_ATTR_CONNS", "uint64"),
        (STATS_ATTR_INPKTS, "IPVS_STATS_ATTR_INPKTS", "uint64"),
        (STATS_ATTR_OUTPKTS, "IPVS_STATS_ATTR_OUTPKTS", "uint64"),
        (STATS_ATTR_INBYTES, "IPVS_STATS_ATTR_INBYTES", "uint64"),
        (STATS_ATTR_OUTBYTES, "IPVS_STATS_ATTR_OUTBYTES", "uint64"),
        (STATS_ATTR_CPS, "IPVS_STATS_ATTR_CPS", "uint64"),
        (STATS_ATTR_INPPS, "IPVS_STATS_ATTR_INPPS", "uint64"),
        (STATS_ATTR_OUTPPS, "IPVS_STATS_ATTR_OUTPPS", "uint64"),
        (STATS_ATTR_INBPS, "IPVS_STATS_ATTR_INBPS", "uint64"),
        (STATS_ATTR_OUTBPS, "IPVS_STATS_ATTR_OUTBPS", "uint64"),
        (STATS_ATTR_PAD, "IPVS_STATS_ATTR_PAD", "none"),
    )


class ipvs_service_flags(nla):
    """struct ip_vs_flags: the flags and which of them a request sets."""

    fields = (("flags", "I"), ("mask", "I"))


class ipvs_service(nla):
    """IPVS_CMD_ATTR_SERVICE. ADDR and NETMASK stay raw bytes: their meaning depends on AF."""

    prefix = "IPVS_SVC_ATTR_"
    nla_map = (
        (SVC_ATTR_AF, "IPVS_SVC_ATTR_AF", "uint16"),
        (SVC_ATTR_PROTOCOL, "IPVS_SVC_ATTR_PROTOCOL", "uint16"),
        (SVC_ATTR_ADDR, "IPVS_SVC_ATTR_ADDR", "cdata"),
        (SVC_ATTR_PORT, "IPVS_SVC_ATTR_PORT", "be16"),
        (SVC_ATTR_FWMARK, "IPVS_SVC_ATTR_FWMARK", "uint32"),
        (SVC_ATTR_SCHED_NAME, "IPVS_SVC_ATTR_SCHED_NAME", "asciiz"),
        (SVC_ATTR_FLAGS, "IPVS_SVC_ATTR_FLAGS", "service_flags"),
        (SVC_ATTR_TIMEOUT, "IPVS_SVC_ATTR_TIMEOUT", "uint32"),
        (SVC_ATTR_NETMASK, "IPVS_SVC_ATTR_NETMASK", "cdata"),
        (SVC_ATTR_STATS, "IPVS_SVC_ATTR_STATS", "stats"),
        (SVC_ATTR_PE_NAME, "IPVS_SVC_ATTR_PE_NAME", "asciiz"),
        (SVC_ATTR_STATS64, "IPVS_SVC_ATTR_STATS64", "stats64"),
    )
    service_flags = ipvs_service_flags
    stats = ipvs_stats
    stats64 = ipvs_stats64


class ipvs_dest(nla):
    """IPVS_CMD_ATTR_DEST: a real server."""

    prefix = "IPVS_DEST_ATTR_"
    nla_map = (
        (DEST_ATTR_ADDR, "IPVS_DEST_ATTR_ADDR", "cdata"),
        (DEST_ATTR_PORT, "IPVS_DEST_ATTR_PORT", "be16"),
        (DEST_ATTR_FWD_METHOD, "IPVS_DEST_ATTR_FWD_METHOD", "uint32"),
        (DEST_ATTR_WEIGHT, "IPVS_DEST_ATTR_WEIGHT", "uint32"),
        (DEST_ATTR_U_THRESH, "IPVS_DEST_ATTR_U_THRESH", "uint32"),
        (DEST_ATTR_L_THRESH, "IPVS_DEST_ATTR_L_THRESH", "uint32"),
        (DEST_ATTR_ACTIVE_CONNS, "IPVS_DEST_ATTR_ACTIVE_CONNS", "uint32"),
        (DEST_ATTR_INACT_CONNS, "IPVS_DEST_ATTR_INACT_CONNS", "uint32"),
        (DEST_ATTR_PERSIST_CONNS, "IPVS_DEST_ATTR_PERSIST_CONNS", "uint32"),
        (DEST_ATTR_STATS, "IPVS_DEST_ATTR_STATS", "stats"),
        (DEST_ATTR_ADDR_FAMILY, "IPVS_DEST_ATTR_ADDR_FAMILY", "uint16"),
        (DEST_ATTR_STATS64, "IPVS_DEST_ATTR_STATS64", "stats64"),
        (DEST_ATTR_TUN_TYPE, "IPVS_DEST_ATTR_TUN_TYPE", "uint8"),
        (DEST_ATTR_TUN_PORT, "IPVS_DEST_ATTR_TUN_PORT", "be16"),
        (DEST_ATTR_TUN_FLAGS, "IPVS_DEST_ATTR_TUN_FLAGS", "uint16"),
    )
    stats = ipvs_stats
    stats64 = ipvs_stats64


class ipvs_daemon(nla):
    """IPVS_CMD_ATTR_DAEMON: a connection-sync daemon. The port is in host byte order."""

    prefix = "IPVS_DAEMON_ATTR_"
    nla_map = (
        (DAEMON_ATTR_STATE, "IPVS_DAEMON_ATTR_STATE", "uint32"),
        (DAEMON_ATTR_MCAST_IFN, "IPVS_DAEMON_ATTR_MCAST_IFN", "asciiz"),
        (DAEMON_ATTR_SYNC_ID, "IPVS_DAEMON_ATTR_SYNC_ID", "uint32"),
        (DAEMON_ATTR_SYNC_MAXLEN, "IPVS_DAEMON_ATTR_SYNC_MAXLEN", "uint16"),
        (DAEMON_ATTR_MCAST_GROUP, "IPVS_DAEMON_ATTR_MCAST_GROUP", "cdata"),
        (DAEMON_ATTR_MCAST_GROUP6, "IPVS_DAEMON_ATTR_MCAST_GROUP6", "cdata"),
        (DAEMON_ATTR_MCAST_PORT, "IPVS_DAEMON_ATTR_MCAST_PORT", "uint16"),
        (DAEMON_ATTR_MCAST_TTL, "IPVS_DAEMON_ATTR_MCAST_TTL", "uint8"),
    )


class ipvs_message(genlmsg):
    """Every IPVS message but the GET_INFO reply: requests, dumps, GET_CONFIG's reply."""

    prefix = "IPVS_CMD_ATTR_"
    nla_map = (
        (CMD_ATTR_SERVICE, "IPVS_CMD_ATTR_SERVICE", "service"),
        (CMD_ATTR_DEST, "IPVS_CMD_ATTR_DEST", "dest"),
        (CMD_ATTR_DAEMON, "IPVS_CMD_ATTR_DAEMON", "daemon"),
        (CMD_ATTR_TIMEOUT_TCP, "IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
        (CMD_ATTR_TIMEOUT_TCP_FIN, "IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
        (CMD_ATTR_TIMEOUT_UDP, "IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
    )
    service = ipvs_service
    dest = ipvs_dest
    daemon = ipvs_daemon


class ipvs_info_message(genlmsg):
    """The reply to IPVS_CMD_GET_INFO (command SET_INFO): its attributes reuse numbers 1 and 2."""

    prefix = "IPVS_INFO_ATTR_"
    nla_map = (
        (INFO_ATTR_VERSION, "IPVS_INFO_ATTR_VERSION", "uint32"),
        (INFO_ATTR_CONN_TAB_SIZE, "IPVS_INFO_ATTR_CONN_TAB_SIZE", "uint32"),
    )


GENL_COMMAND_OFFSET = 16  # struct nlmsghdr is 16 bytes; genlmsghdr.cmd comes first after it


def message_for(data, offset=0, **kwargs):
    """Stand in for a message class in pyroute2's marshal: the class depends on the command."""
    position = offset + GENL_COMMAND_OFFSET
    command = data[position] if position < len(data) else None
    cls = ipvs_info_message if command == CMD_SET_INFO else ipvs_message
    return cls(data, offset=offset, **kwargs)


# -- decoding to model values ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DestConfig:
    """The settable fields of a real server, as IPVS_CMD_SET_DEST needs them all."""

    address: str
    port: int
    af: str
    forward: int  # IP_VS_CONN_F_* forwarding method
    weight: int
    upper_threshold: int
    lower_threshold: int
    tunnel_type: int | None = None  # None when the kernel did not send it (before 5.3)
    tunnel_port: int | None = None
    tunnel_flags: int | None = None


@dataclass(frozen=True, slots=True)
class IpvsDump:
    """Everything one round of netlink requests returned; see unread() for a round that could not run."""

    info: model.IpvsInfo
    timeouts: model.Timeouts
    services: tuple[model.Service, ...]
    daemons: tuple[model.Daemon, ...]

    def __post_init__(self):
        # read_all() gets the info first or raises, so a dump without it asked nothing: its
        # daemons are unknown even when given as () (as the kernel backend does without
        # CAP_NET_ADMIN), or view 5 and --once would say "no sync daemon running".
        if not self.info.known and model.daemons_known(self.daemons):
            object.__setattr__(self, "daemons", model.UNKNOWN_DAEMONS)

    @classmethod
    def unread(cls) -> IpvsDump:
        """The dump of a round that could not run (netlink refused): nothing in it is known."""
        return cls(model.IpvsInfo(), model.Timeouts(), (), model.UNKNOWN_DAEMONS)


class Undecodable(ValueError):
    """A message lacks what identifies it, or carries a value the model has no name for."""


DECODE_ERRORS = (Undecodable, KeyError, TypeError, ValueError, OSError, struct.error, AttributeError)


def _attributes(nest, skipped: collections.Counter) -> dict:
    """The nla slots of a decoded message or nest by name, counting unknown attributes.

    Slots decode lazily: a nest that is never looked at (the 32-bit stats) costs nothing.
    """
    found = {}
    for slot in nest["attrs"]:
        name = slot.name
        if name == "UNKNOWN":
            skipped[SKIP_UNKNOWN_ATTRIBUTES] += 1
        else:
            found[name] = slot
    return found


def _value(attrs: dict, name: str, default=None):
    slot = attrs.get(name)
    return default if slot is None else slot.value


def _address(af: str, raw: bytes) -> str:
    if af == "inet":
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw[:16])


def _netmask(af: str, raw: bytes | None) -> str:
    """IPv4: a dotted mask in network order. IPv6: a prefix length in host order (ipvsadm -M 64)."""
    if raw is None or len(raw) < 4:
        return ""
    if af == "inet":
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return str(int.from_bytes(raw[:4], sys.byteorder))


# Scheduler flags mean something only to their scheduler; ipvsadm names them like this.
SCHEDULER_FLAG_NAMES = {
    "sh": {SVC_F_SCHED1: "sh-fallback", SVC_F_SCHED2: "sh-port"},
    "mh": {SVC_F_SCHED1: "mh-fallback", SVC_F_SCHED2: "mh-port"},
}
GENERIC_FLAG_NAMES = {SVC_F_SCHED1: "flag-1", SVC_F_SCHED2: "flag-2", SVC_F_SCHED3: "flag-3"}


def service_flag_names(flags: int, scheduler: str) -> tuple[str, ...]:
    """Names of a service's flags; HASHED is left out (set on every live service, internal)."""
    names = []
    if flags & SVC_F_PERSISTENT:
        names.append("persistent")
    if flags & SVC_F_ONEPACKET:
        names.append("ops")
    scheduler_names = SCHEDULER_FLAG_NAMES.get(scheduler, GENERIC_FLAG_NAMES)
    for bit in (SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3):
        if flags & bit:
            names.append(scheduler_names.get(bit, GENERIC_FLAG_NAMES[bit]))
    known = SVC_F_PERSISTENT | SVC_F_HASHED | SVC_F_ONEPACKET | SVC_F_SCHED1 | SVC_F_SCHED2 | SVC_F_SCHED3
    if flags & ~known:
        names.append(f"0x{flags & ~known:x}")
    return tuple(names)


def _stats_and_rates(attrs: dict, prefix: str, skipped) -> tuple[model.Stats, model.Rates]:
    slot = attrs.get(prefix + "STATS64") or attrs.get(prefix + "STATS")
    if slot is None:
        return model.Stats(), model.Rates()
    values = _attributes(slot.value, skipped)

    def get(name):
        return _value(values, "IPVS_STATS_ATTR_" + name, 0)

    return (
        model.Stats(get("CONNS"), get("INPKTS"), get("OUTPKTS"), get("INBYTES"), get("OUTBYTES")),
        model.Rates(get("CPS"), get("INPPS"), get("OUTPPS"), get("INBPS"), get("OUTBPS")),
    )


def _nest(msg, name: str, skipped) -> dict:
    slot = _attributes(msg, skipped).get(name)
    if slot is None:
        raise Undecodable(f"message without {name}")
    return _attributes(slot.value, skipped)


def dest_dump_request(key: model.ServiceKey) -> ipvs_message:
    """IPVS_CMD_GET_DEST for one service, encoded by pyroute2's nla classes."""
    return request_message(CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", service_key_attrs(key))])


class NlaDecoder:
    """Turns messages decoded by the nla classes above into model values.

    Each method takes one message and a Counter of skip reasons; it returns None (and counts
    SKIP_UNDECODABLE) for a message it cannot make sense of, instead of raising.
    """

    message = staticmethod(message_for)
    dest_dump_request = staticmethod(dest_dump_request)

    @staticmethod
    def info(msg) -> model.IpvsInfo:
        attrs = _attributes(msg, collections.Counter())
        version = _value(attrs, "IPVS_INFO_ATTR_VERSION", 0)
        return model.IpvsInfo(
            version=f"{(version >> 16) & 0xFF}.{(version >> 8) & 0xFF}.{version & 0xFF}",
            conn_table_size=_value(attrs, "IPVS_INFO_ATTR_CONN_TAB_SIZE", 0),
        )

    @staticmethod
    def timeouts(msg) -> model.Timeouts:
        attrs = _attributes(msg, collections.Counter())
        return model.Timeouts(
            tcp=_value(attrs, "IPVS_CMD_ATTR_TIMEOUT_TCP", 0),
            tcp_fin=_value(attrs, "IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", 0),
            udp=_value(attrs, "IPVS_CMD_ATTR_TIMEOUT_UDP", 0),
        )

    @staticmethod
    def service(msg, skipped: collections.Counter) -> model.Service | None:
        try:
            attrs = _nest(msg, "IPVS_CMD_ATTR_SERVICE", skipped)
            af = FAMILIES.get(_value(attrs, "IPVS_SVC_ATTR_AF"))
            if af is None:
                raise Undecodable("unknown address family")
            fwmark = _value(attrs, "IPVS_SVC_ATTR_FWMARK", 0)
            if fwmark:
                key = model.ServiceKey(af, None, "", 0, fwmark)
            else:
                protocol = PROTOCOLS.get(_value(attrs, "IPVS_SVC_ATTR_PROTOCOL"))
                if protocol is None:
                    raise Undecodable("unknown protocol")
                address = _address(af, _value(attrs, "IPVS_SVC_ATTR_ADDR"))
                key = model.ServiceKey(af, protocol, address, _value(attrs, "IPVS_SVC_ATTR_PORT"))
            scheduler = _value(attrs, "IPVS_SVC_ATTR_SCHED_NAME", "")
            flags_slot = attrs.get("IPVS_SVC_ATTR_FLAGS")
            flags = flags_slot.value["flags"] if flags_slot is not None else 0
            stats, rates = _stats_and_rates(attrs, "IPVS_SVC_ATTR_", skipped)
            return model.Service(
                key=key,
                scheduler=scheduler,
                persistent=_value(attrs, "IPVS_SVC_ATTR_TIMEOUT", 0) if flags & SVC_F_PERSISTENT else None,
                netmask=_netmask(af, _value(attrs, "IPVS_SVC_ATTR_NETMASK")),
                flags=service_flag_names(flags, scheduler),
                pe_name=_value(attrs, "IPVS_SVC_ATTR_PE_NAME") or None,
                stats=stats,
                rates=rates,
            )
        except DECODE_ERRORS:
            skipped[SKIP_UNDECODABLE] += 1
            return None

    @staticmethod
    def dest(msg, service_af: str, skipped: collections.Counter) -> model.Dest | None:
        try:
            attrs = _nest(msg, "IPVS_CMD_ATTR_DEST", skipped)
            af = FAMILIES.get(_value(attrs, "IPVS_DEST_ATTR_ADDR_FAMILY"), service_af)
            forward = FORWARD_METHODS.get(_value(attrs, "IPVS_DEST_ATTR_FWD_METHOD", 0) & FWD_MASK)
            if forward is None:
                raise Undecodable("unknown forwarding method")
            stats, rates = _stats_and_rates(attrs, "IPVS_DEST_ATTR_", skipped)
            return model.Dest(
                address=_address(af, _value(attrs, "IPVS_DEST_ATTR_ADDR")),
                port=_value(attrs, "IPVS_DEST_ATTR_PORT"),
                forward=forward,
                weight=_value(attrs, "IPVS_DEST_ATTR_WEIGHT", 0),
                upper_threshold=_value(attrs, "IPVS_DEST_ATTR_U_THRESH", 0),
                lower_threshold=_value(attrs, "IPVS_DEST_ATTR_L_THRESH", 0),
                active_conns=_value(attrs, "IPVS_DEST_ATTR_ACTIVE_CONNS", 0),
                inactive_conns=_value(attrs, "IPVS_DEST_ATTR_INACT_CONNS", 0),
                persist_conns=_value(attrs, "IPVS_DEST_ATTR_PERSIST_CONNS", 0),
                stats=stats,
                rates=rates,
                af=af,
            )
        except DECODE_ERRORS:
            skipped[SKIP_UNDECODABLE] += 1
            return None

    @staticmethod
    def dest_config(msg, service_af: str) -> DestConfig | None:
        try:
            attrs = _nest(msg, "IPVS_CMD_ATTR_DEST", collections.Counter())
            af = FAMILIES.get(_value(attrs, "IPVS_DEST_ATTR_ADDR_FAMILY"), service_af)
            return DestConfig(
                address=_address(af, _value(attrs, "IPVS_DEST_ATTR_ADDR")),
                port=_value(attrs, "IPVS_DEST_ATTR_PORT"),
                af=af,
                forward=_value(attrs, "IPVS_DEST_ATTR_FWD_METHOD") & FWD_MASK,
                weight=_value(attrs, "IPVS_DEST_ATTR_WEIGHT"),
                upper_threshold=_value(attrs, "IPVS_DEST_ATTR_U_THRESH"),
                lower_threshold=_value(attrs, "IPVS_DEST_ATTR_L_THRESH"),
                tunnel_type=_value(attrs, "IPVS_DEST_ATTR_TUN_TYPE"),
                tunnel_port=_value(attrs, "IPVS_DEST_ATTR_TUN_PORT"),
                tunnel_flags=_value(attrs, "IPVS_DEST_ATTR_TUN_FLAGS"),
            )
        except DECODE_ERRORS:
            return None

    @staticmethod
    def daemon(msg, skipped: collections.Counter) -> model.Daemon | None:
        try:
            attrs = _nest(msg, "IPVS_CMD_ATTR_DAEMON", skipped)
            state = DAEMON_STATES.get(_value(attrs, "IPVS_DAEMON_ATTR_STATE"))
            if state is None:
                raise Undecodable("unknown daemon state")
            group4 = _value(attrs, "IPVS_DAEMON_ATTR_MCAST_GROUP")
            group6 = _value(attrs, "IPVS_DAEMON_ATTR_MCAST_GROUP6")
            if group6 is not None:
                group = socket.inet_ntop(socket.AF_INET6, group6[:16])
            elif group4 is not None:
                group = socket.inet_ntop(socket.AF_INET, group4[:4])
            else:  # kernels before 4.3 send neither: they always use the default group
                group = DEFAULT_SYNC_GROUP
            return model.Daemon(
                state=state,
                interface=_value(attrs, "IPVS_DAEMON_ATTR_MCAST_IFN", ""),
                syncid=_value(attrs, "IPVS_DAEMON_ATTR_SYNC_ID", 0),
                maxlen=_value(attrs, "IPVS_DAEMON_ATTR_SYNC_MAXLEN", 0),
                group=group,
                port=_value(attrs, "IPVS_DAEMON_ATTR_MCAST_PORT", DEFAULT_SYNC_PORT),
                ttl=_value(attrs, "IPVS_DAEMON_ATTR_MCAST_TTL", DEFAULT_SYNC_TTL),
            )
        except DECODE_ERRORS:
            skipped[SKIP_UNDECODABLE] += 1
            return None


# -- requests -------------------------------------------------------------------------------


def _packed_address(af: str, address: str) -> bytes:
    return socket.inet_pton(FAMILY_NUMBERS[af], address).ljust(ADDRESS_SIZE, b"\0")


def service_key_attrs(key: model.ServiceKey) -> dict:
    """The nest that identifies a service in a request: AF and a fwmark, or protocol, address, port."""
    af = FAMILY_NUMBERS[key.af]
    if key.fwmark:
        attrs = [("IPVS_SVC_ATTR_AF", af), ("IPVS_SVC_ATTR_FWMARK", key.fwmark)]
    else:
        attrs = [
            ("IPVS_SVC_ATTR_AF", af),
            ("IPVS_SVC_ATTR_PROTOCOL", PROTOCOL_NUMBERS[key.protocol]),
            ("IPVS_SVC_ATTR_ADDR", _packed_address(key.af, key.address)),
            ("IPVS_SVC_ATTR_PORT", key.port),
        ]
    return {"attrs": attrs}


def service_config_attrs(key: model.ServiceKey, scheduler: str, persistent: int | None, netmask: str) -> tuple:
    """IPVS_CMD_ATTR_SERVICE for NEW_SERVICE / SET_SERVICE: the kernel wants all of scheduler,
    flags, timeout and netmask (EINVAL otherwise). The netmask is an IPv4 mask in network order,
    or an IPv6 prefix length in host order, as ipvsadm sends them; "" is one address."""
    nest = service_key_attrs(key)
    if key.af == "inet":
        mask = socket.inet_aton(netmask if netmask and not netmask.isdigit() else "255.255.255.255")
    else:
        mask = int(netmask.lstrip("/") or 128).to_bytes(4, sys.byteorder)
    flags = SVC_F_PERSISTENT if persistent else 0
    nest["attrs"] += [
        ("IPVS_SVC_ATTR_SCHED_NAME", scheduler),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", persistent or 0),
        ("IPVS_SVC_ATTR_NETMASK", mask),
    ]
    return ("IPVS_CMD_ATTR_SERVICE", nest)


def dest_key_attrs(af: str, address: str, port: int) -> dict:
    """The nest that identifies a real server (enough for IPVS_CMD_DEL_DEST)."""
    return {
        "attrs": [
            ("IPVS_DEST_ATTR_ADDR", _packed_address(af, address)),
            ("IPVS_DEST_ATTR_PORT", port),
            ("IPVS_DEST_ATTR_ADDR_FAMILY", FAMILY_NUMBERS[af]),
        ]
    }


def dest_config_attrs(config: DestConfig) -> dict:
    """The full nest IPVS_CMD_NEW_DEST / SET_DEST need: the kernel resets whatever is missing."""
    nest = dest_key_attrs(config.af, config.address, config.port)
    nest["attrs"] += [
        ("IPVS_DEST_ATTR_FWD_METHOD", config.forward),
        ("IPVS_DEST_ATTR_WEIGHT", config.weight),
        ("IPVS_DEST_ATTR_U_THRESH", config.upper_threshold),
        ("IPVS_DEST_ATTR_L_THRESH", config.lower_threshold),
    ]
    for name, value in (
        ("IPVS_DEST_ATTR_TUN_TYPE", config.tunnel_type),
        ("IPVS_DEST_ATTR_TUN_PORT", config.tunnel_port),
        ("IPVS_DEST_ATTR_TUN_FLAGS", config.tunnel_flags),
    ):
        if value is not None:
            nest["attrs"].append((name, value))
    return nest


def request_message(command: int, attrs=()) -> ipvs_message:
    msg = ipvs_message()
    msg["cmd"] = command
    msg["version"] = GENL_VERSION
    msg["attrs"] = list(attrs)
    return msg


def _address_order(af: str, address: str) -> bytes:
    return socket.inet_pton(FAMILY_NUMBERS[af], address) if address else b""


def service_order(service: model.Service) -> tuple:
    """Sort services as ipvsadm does (libipvs ipvs_cmp_services): fwmark, family, protocol, address, port."""
    key = service.key
    return (
        key.fwmark,
        FAMILY_NUMBERS[key.af],
        PROTOCOL_NUMBERS.get(key.protocol, 0),
        _address_order(key.af, key.address),
        key.port,
    )


def dest_order(dest: model.Dest) -> tuple:
    return _dest_order(dest.af, dest.address, dest.port)


# The same real servers come back every poll: their keys are worth keeping (10,000 a poll).
@functools.lru_cache(maxsize=1 << 17)
def _dest_order(af: str, address: str, port: int | None) -> tuple:
    return (af, _address_order(af, address), port)


def with_dests(service: model.Service, dests: tuple[model.Dest, ...]) -> model.Service:
    """dataclasses.replace(service, dests=dests), at half the cost (once per service a poll)."""
    return model.Service(service.key, service.scheduler, service.persistent, service.netmask, service.flags,
                         service.pe_name, service.stats, service.rates, dests)  # fmt: skip


# -- the socket -----------------------------------------------------------------------------

DUMP = NLM_F_REQUEST | NLM_F_DUMP
# A GET that replies must not ask for an ACK too: the ACK would arrive after the request is
# finished and pile up in pyroute2's queue of unclaimed messages, one per poll.
GET = NLM_F_REQUEST
CHANGE = NLM_F_REQUEST | NLM_F_ACK


class AsyncIpvsSocket(AsyncGenericNetlinkSocket):
    """pyroute2's generic netlink socket speaking IPVS with the classes above."""

    # A missing family is reported by the backend as IpvsUnavailable; pyroute2 would also log it.
    module_err_level = "debug"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # pyroute2's sequence number pool walks a list of 255 banned numbers on every request
        # (about 45 us; a poll of 1,000 services makes 1,000 requests); see fastdecode.SequenceNumbers.
        from ipvsman.kernel.fastdecode import SequenceNumbers

        self.addr_pool = SequenceNumbers()

    async def request(self, command: int, attrs=(), flags: int = GET, message=None) -> list:
        """The replies to one request (made from command and attrs unless `message` is given)."""
        message = request_message(command, attrs) if message is None else message
        response = await self.nlm_request(message, msg_type=self.prid, msg_flags=flags)
        # A batching marshal (fastdecode.BatchMarshal) hands over a datagram's messages at once.
        return [msg async for item in response for msg in getattr(item, "messages", (item,))]


# The kernel answers a request about a service or real server that is gone with one of these.
VANISHED_ERRORS = (errno.ESRCH, errno.ENOENT)

REPLY_TIMEOUT = 10.0  # seconds; the kernel answers at once, so this only ends a hang
RECEIVE_SIZE = 1 << 16  # the kernel fills a dump's datagrams up to the reader's buffer (32 KB at most)
# Reads number their requests apart from pyroute2's pool (SequenceNumbers: 0xFF-0xFFFF), so
# that a late answer to one can never be taken for the other's.
SEQUENCE_FIRST, SEQUENCE_LAST = 0x10000, 0x7FFFFFFF


def _timeval(seconds: float) -> bytes:
    """struct timeval for SO_RCVTIMEO."""
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))


def replies_by_parse(marshal, data, sequence: int) -> tuple[list, bool]:
    """The messages of one datagram answering request `sequence`, and whether they end the answer,
    through any pyroute2 Marshal's parse() (fastdecode.BatchMarshal.replies does it faster)."""
    found: list = []
    for msg in marshal.parse(data):
        header = msg["header"]
        if header.get("sequence_number") != sequence:
            continue  # an answer to a request given up on earlier
        if header.get("error") is not None:
            raise header["error"]
        kind = header.get("type")
        if kind == NLMSG_DONE or kind == NLMSG_ERROR:  # the end of a dump, or an acknowledgement
            return found, True
        found.extend(getattr(msg, "messages", (msg,)))  # a BatchMarshal batch, or one message
        if not header.get("flags", 0) & NLM_F_MULTI:
            return found, True
    return found, False


class IpvsSocket(GenericNetlinkSocket):
    """A blocking IPVS socket for one thread: create, use and close it in the same thread."""

    async_class = AsyncIpvsSocket

    def __init__(self, decoder=NlaDecoder, **socket_options):
        super().__init__(**socket_options)
        self.decoder = decoder
        self._sequence = SEQUENCE_FIRST
        # A decoder may keep the real servers of the poll before (FastDecoder: fastdecode.DestMemory).
        new_memory = getattr(decoder, "dest_memory", None)
        self._dest_memory = new_memory() if new_memory is not None else None
        marshal = getattr(decoder, "marshal", None)
        if marshal is not None:
            self.asyncore.set_marshal(marshal())

    def open_family(self) -> None:
        """Look up the IPVS family; NetlinkError ENOENT when the ip_vs module is not loaded."""
        self.bind(GENL_NAME, self.decoder.message)

    def _run(self, coroutine_function, *args):
        # One event-loop run per call: pyroute2's generator API would run the loop once per message.
        return self._run_with_cleanup(coroutine_function, *args)

    # -- reading: straight off pyroute2's socket ------------------------------------------------
    # A poll of 1,000 services makes 1,003 requests. pyroute2's request machinery (NetlinkRequest,
    # its asyncio queue and a loop turn per datagram) costs 50-80 us a request on the host, more
    # than ipvsadm's whole request; measured in the guest it alone took 1.8-2.7x ipvsadm's poll.
    # So reads send on pyroute2's socket (made, placed in the namespace and bound to the IPVS
    # family by pyroute2) and parse what comes back with the socket's marshal, but wait for the
    # replies themselves. Changes still go through pyroute2's requests (_change).

    def _next_sequence(self) -> int:
        self._sequence = self._sequence + 1 if self._sequence < SEQUENCE_LAST else SEQUENCE_FIRST
        return self._sequence

    @contextlib.contextmanager
    def _waiting_for_replies(self):
        """Reads block (up to REPLY_TIMEOUT) inside; outside, the socket is non-blocking again, as
        pyroute2's asyncio transport expects it.

        The timeout is the kernel's (SO_RCVTIMEO on a blocking socket), not Python's socket
        timeout, which polls before every send and receive: two system calls more for each of a
        poll's 1,000 dumps."""
        sock, marshal = self.asyncore.socket, self.asyncore.marshal
        replies_of = getattr(marshal, "replies", None) or functools.partial(replies_by_parse, marshal)
        self._reader = (sock, replies_of)
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(REPLY_TIMEOUT))
        try:
            yield
        finally:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(0))
            sock.setblocking(False)

    def _get(self, message, flags: int = GET, replies_of=None) -> list:
        """The messages replying to one request: a GET's one reply, or a dump's until NLMSG_DONE;
        or what `replies_of(datagram, sequence)` makes of each datagram instead of its messages.

        Raises NetlinkError for an error reply, OSError when the kernel does not answer in time.
        Call inside _waiting_for_replies().
        """
        sock, marshal_replies = self._reader
        replies_of = replies_of or marshal_replies
        sequence = self._next_sequence()
        header = message["header"]
        header["type"], header["flags"], header["sequence_number"], header["pid"] = self.prid, flags, sequence, 0
        message.reset()
        message.encode()
        sock.send(message.data)
        replies: list = []
        while True:
            try:
                datagram = sock.recv(RECEIVE_SIZE)
            except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO ran out: EAGAIN
                raise OSError(errno.ETIMEDOUT, f"no reply from IPVS within {REPLY_TIMEOUT:g} s") from None
            found, complete = replies_of(datagram, sequence)
            replies += found
            if complete:
                return replies

    def _request(self, command: int, attrs=(), flags: int = GET) -> list:
        return self._get(request_message(command, attrs), flags)

    def _dests(self, key: model.ServiceKey, skipped) -> list[model.Dest] | None:
        """A service's real servers, or None when the service vanished since it was listed."""
        request = self.decoder.dest_dump_request(key)
        # A decoder may read a datagram of real servers at once (FastDecoder.dest_replies).
        dest_replies = getattr(self.decoder, "dest_replies", None)
        try:
            if dest_replies is not None:
                reader = functools.partial(dest_replies, self.asyncore.marshal, key.af, skipped, memory=self._dest_memory)
                dests = self._get(request, DUMP, reader)
            else:
                decode = self.decoder.dest
                dests = [decode(msg, key.af, skipped) for msg in self._get(request, DUMP)]
        except NetlinkError as exc:
            if exc.code in VANISHED_ERRORS:
                return None
            raise
        if not dests and self._vanished(key):
            # Linux (6.1) answers a real-server dump of a service deleted meanwhile with an empty
            # list, not an error: only asking for the service itself tells the two apart.
            return None
        return sorted((dest for dest in dests if dest is not None), key=dest_order)

    def _vanished(self, key: model.ServiceKey) -> bool:
        try:
            self._request(CMD_GET_SERVICE, [("IPVS_CMD_ATTR_SERVICE", service_key_attrs(key))])
        except NetlinkError as exc:
            if exc.code in VANISHED_ERRORS:
                return True
            raise
        return False

    def read_all(self, skipped: collections.Counter) -> IpvsDump:
        """Info, timeouts, services with their real servers, and daemons."""
        with self._waiting_for_replies():
            return self._read_all(skipped)

    def _read_all(self, skipped: collections.Counter) -> IpvsDump:
        decoder = self.decoder
        (info_msg,) = self._request(CMD_GET_INFO)
        (config_msg,) = self._request(CMD_GET_CONFIG)
        services = []
        for msg in self._request(CMD_GET_SERVICE, flags=DUMP):
            service = decoder.service(msg, skipped)
            if service is None:
                continue
            dests = self._dests(service.key, skipped)
            if dests is None:
                skipped[SKIP_VANISHED] += 1
                continue
            services.append(with_dests(service, tuple(dests)))
        daemons = [decoder.daemon(msg, skipped) for msg in self._request(CMD_GET_DAEMON, flags=DUMP)]
        if self._dest_memory is not None:
            self._dest_memory.turn()
        return IpvsDump(
            info=decoder.info(info_msg),
            timeouts=decoder.timeouts(config_msg),
            services=tuple(sorted(services, key=service_order)),
            daemons=tuple(sorted((d for d in daemons if d is not None), key=lambda d: d.state != "master")),
        )

    def info(self) -> model.IpvsInfo:
        with self._waiting_for_replies():
            (msg,) = self._request(CMD_GET_INFO)
        return self.decoder.info(msg)

    def dest_configs(self, key: model.ServiceKey) -> list[DestConfig]:
        with self._waiting_for_replies():
            messages = self._get(self.decoder.dest_dump_request(key), DUMP)
        configs = [self.decoder.dest_config(msg, key.af) for msg in messages]
        return [config for config in configs if config is not None]

    # -- changing: through pyroute2's requests --------------------------------------------------
    def set_dest(self, key: model.ServiceKey, config: DestConfig) -> None:
        self._change(CMD_SET_DEST, key, dest_config_attrs(config))

    def new_dest(self, key: model.ServiceKey, config: DestConfig) -> None:
        self._change(CMD_NEW_DEST, key, dest_config_attrs(config))

    def del_dest(self, key: model.ServiceKey, af: str, address: str, port: int) -> None:
        self._change(CMD_DEL_DEST, key, dest_key_attrs(af, address, port))

    def new_service(self, key: model.ServiceKey, scheduler: str, persistent: int | None, netmask: str) -> None:
        attrs = [service_config_attrs(key, scheduler, persistent, netmask)]
        self._run(self.asyncore.request, CMD_NEW_SERVICE, attrs, CHANGE)

    def set_service(self, key: model.ServiceKey, scheduler: str, persistent: int | None, netmask: str) -> None:
        attrs = [service_config_attrs(key, scheduler, persistent, netmask)]
        self._run(self.asyncore.request, CMD_SET_SERVICE, attrs, CHANGE)

    def _change(self, command: int, key: model.ServiceKey, dest_nest: dict) -> None:
        attrs = [("IPVS_CMD_ATTR_SERVICE", service_key_attrs(key)), ("IPVS_CMD_ATTR_DEST", dest_nest)]
        self._run(self.asyncore.request, command, attrs, CHANGE)
