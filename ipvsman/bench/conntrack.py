"""Is conntrack's netlink dump a cheaper, exact source of a director's connection table? Measures both.

`python -m ipvsman.bench.conntrack [--sizes 10000,100000] [--skip-exactness]` runs in a QEMU guest
booted as the kernel tests boot it (ipvsman.guest), or directly where IPVS is (as root; it then
makes and deletes its own network namespaces, and never touches the host's tables).

Exactness: real TCP connections from a client namespace through a director namespace with
net.ipv4.vs.conntrack=1, to a NAT and a DR real server, synced by the master daemon to a backup
namespace; every IPVS connection is looked up in the conntrack table of the same namespace (by
its client-side tuple) to see whether it is there, with its real server and its state.

Cost: a namespace whose IPVS table is filled to N entries through the sync protocol (a backup
daemon, as ipvsman.bench.conns does) and whose conntrack table is filled to N entries through
ctnetlink (IPCTNL_MSG_CT_NEW, batched); then the time to read /proc/net/ip_vs_conn against a
ctnetlink dump (IPCTNL_MSG_CT_GET with NLM_F_DUMP), each raw and with decoding, and `conntrack -L`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from ipvsman import guest
from ipvsman.bench.director import Netns, NetnsWorker, run
from ipvsman.kernel import procfs
from ipvsman.model import Connection
from ipvsman.sync import protocol, sender

# -- ctnetlink (include/uapi/linux/netfilter/nfnetlink_conntrack.h) ----------------------------

NETLINK_NETFILTER = 12
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x200, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
CT_NEW, CT_GET = (1 << 8) | 0, (1 << 8) | 1  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_*
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO, CTA_TIMEOUT = 1, 2, 3, 4, 7
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
NLMSG = struct.Struct("=IHHII")
NFGEN = struct.Struct("=BBH")
NLA = struct.Struct("=HH")
# enum tcp_conntrack; "LISTEN" is SYN_SENT2 (a simultaneous open), named as /proc/net/ip_vs_conn would.
CT_TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
                 "TIME_WAIT", "CLOSE", "LISTEN")  # fmt: skip
PROTO_NAMES = {6: "TCP", 17: "UDP", 132: "SCTP"}


class CtEntry(NamedTuple):
    """The fields of a conntrack entry that a connection-table view would need."""

    protocol: str
    src: str  # original direction: the client ...
    sport: int
    dst: str  # ... to the virtual address
    dport: int
    reply_src: str  # reply direction: who answers (the real server, for IPVS NAT)
    reply_sport: int
    state: str  # conntrack's TCP state ("" for other protocols)
    timeout: int


def _nla(kind: int, payload: bytes) -> bytes:
    return NLA.pack(NLA.size + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _tuple(src: bytes, dst: bytes, proto: int, sport: int, dport: int) -> bytes:
    ip = _nla(CTA_TUPLE_IP | NLA_F_NESTED, _nla(CTA_IP_V4_SRC, src) + _nla(CTA_IP_V4_DST, dst))
    ports = (_nla(CTA_PROTO_NUM, bytes((proto,))) + _nla(CTA_PROTO_SRC_PORT, struct.pack("!H", sport))
             + _nla(CTA_PROTO_DST_PORT, struct.pack("!H", dport)))  # fmt: skip
    return ip + _nla(CTA_TUPLE_PROTO | NLA_F_NESTED, ports)


def _message(kind: int, flags: int, seq: int, family: int, body: bytes) -> bytes:
    return NLMSG.pack(NLMSG.size + NFGEN.size + len(body), kind, flags, seq, 0) + NFGEN.pack(family, 0, 0) + body


def open_ctnetlink() -> socket.socket:
    """A ctnetlink socket in the calling thread's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.bind((0, 0))
    try:  # a dump arrives faster than Python reads it at first; room avoids ENOBUFS
        sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (root)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    return sock


def insert_entries(count: int, first: int = 0, batch: int = 500) -> int:
    """Create `count` ESTABLISHED TCP entries client -> 10.50.0.1:80, answered by 10.51.0.1:8080
    (as an IPVS NAT connection's would be); returns how many the kernel refused."""
    sock = open_ctnetlink()
    vip, rip = socket.inet_aton("10.50.0.1"), socket.inet_aton("10.51.0.1")
    tail = (_nla(CTA_TIMEOUT, struct.pack("!I", 7200))
            + _nla(CTA_PROTOINFO | NLA_F_NESTED, _nla(CTA_PROTOINFO_TCP | NLA_F_NESTED,
                                                      _nla(CTA_PROTOINFO_TCP_STATE, bytes((3,))))))  # fmt: skip
    refused = 0
    try:
        for start in range(first, first + count, batch):
            messages = []
            numbers = range(start, min(start + batch, first + count))
            for number in numbers:
                client, port = socket.inet_aton(client_address(number)), client_port(number)
                body = (_nla(CTA_TUPLE_ORIG | NLA_F_NESTED, _tuple(client, vip, 6, port, 80))
                        + _nla(CTA_TUPLE_REPLY | NLA_F_NESTED, _tuple(rip, client, 6, 8080, port)) + tail)  # fmt: skip
                messages.append(_message(CT_NEW, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, number,
                                         socket.AF_INET, body))  # fmt: skip
            sock.send(b"".join(messages))  # netlink takes many requests in one datagram
            acked = 0
            while acked < len(numbers):
                data = sock.recv(1 << 20)
                offset = 0
                while offset < len(data):
                    length, kind, _, _, _ = NLMSG.unpack_from(data, offset)
                    if kind == NLMSG_ERROR:
                        acked += 1
                        if struct.unpack_from("=i", data, offset + NLMSG.size)[0] != 0:
                            refused += 1
                    offset += (length + 3) & ~3
    finally:
        sock.close()
    return refused


def dump_raw(family: int = socket.AF_INET) -> tuple[int, list[bytes]]:
    """The kernel's side of a dump: (entries, the datagrams as received), nothing decoded."""
    sock = open_ctnetlink()
    chunks, entries = [], 0
    try:
        sock.send(_message(CT_GET, NLM_F_REQUEST | NLM_F_DUMP, 1, family, b""))
        while True:
            data = sock.recv(1 << 20)
            chunks.append(data)
            offset = 0
            while offset < len(data):
                length, kind, _, _, _ = NLMSG.unpack_from(data, offset)
                if kind == NLMSG_DONE:
                    return entries, chunks
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + NLMSG.size)[0]
                    raise OSError(code, f"conntrack dump: {os.strerror(code)}")
                entries += 1
                offset += (length + 3) & ~3
    finally:
        sock.close()


def _attrs(data: bytes, offset: int, end: int) -> dict[int, tuple[int, int]]:
    found = {}
    while offset + NLA.size <= end:
        length, kind = NLA.unpack_from(data, offset)
        if length < NLA.size:
            break
        found[kind & NLA_TYPE_MASK] = (offset + NLA.size, offset + length)
        offset += (length + 3) & ~3
    return found


def _decode_tuple(data: bytes, span: tuple[int, int]) -> tuple[int, str, int, str, int]:
    parts = _attrs(data, *span)
    ip = _attrs(data, *parts[CTA_TUPLE_IP])
    ports = _attrs(data, *parts[CTA_TUPLE_PROTO])
    if CTA_IP_V4_SRC in ip:
        src, dst = (socket.inet_ntoa(data[slice(*ip[k])]) for k in (CTA_IP_V4_SRC, CTA_IP_V4_DST))
    else:
        src, dst = (socket.inet_ntop(socket.AF_INET6, data[slice(*ip[k])]) for k in (CTA_IP_V6_SRC, CTA_IP_V6_DST))
    proto = data[ports[CTA_PROTO_NUM][0]]
    sport = struct.unpack_from("!H", data, ports[CTA_PROTO_SRC_PORT][0])[0] if CTA_PROTO_SRC_PORT in ports else 0
    dport = struct.unpack_from("!H", data, ports[CTA_PROTO_DST_PORT][0])[0] if CTA_PROTO_DST_PORT in ports else 0
    return proto, src, sport, dst, dport


# An IPv4 tuple as the kernel lays it out (ctnetlink_dump_tuples): the nests and attributes always
# come in this order with these sizes, so one unpack reads it; anything else takes the slow path.
TUPLE4 = struct.Struct("=4s4s4s4s4s4s4s4sB3x4s2s2x4s2s2x")


def _tuple4_headers(kind: int, nested: int) -> tuple[bytes, ...]:
    return tuple(NLA.pack(*h) for h in ((52, kind | nested), (20, CTA_TUPLE_IP | nested), (8, CTA_IP_V4_SRC),
                                        (8, CTA_IP_V4_DST), (28, CTA_TUPLE_PROTO | nested), (5, CTA_PROTO_NUM),
                                        (6, CTA_PROTO_SRC_PORT), (6, CTA_PROTO_DST_PORT)))  # fmt: skip


# Nests carry NLA_F_NESTED from nla_nest_start(); older kernels sent them without it.
_ORIG4 = {_tuple4_headers(CTA_TUPLE_ORIG, flag) for flag in (NLA_F_NESTED, 0)}
_REPLY4 = {_tuple4_headers(CTA_TUPLE_REPLY, flag) for flag in (NLA_F_NESTED, 0)}
_inet_ntoa = socket.inet_ntoa
# What follows the tuples of a TCP entry without zone or accounting (ctnetlink_fill_info):
# status, timeout, then protoinfo > tcp > state first.
TAIL4 = struct.Struct("=4s4s4s4s4s4s4sB")
_TAIL4_HEADERS = (NLA.pack(8, CTA_STATUS), NLA.pack(8, CTA_TIMEOUT), NLA.pack(5, CTA_PROTOINFO_TCP_STATE))
_INFO_TYPE = struct.pack("=H", CTA_PROTOINFO | NLA_F_NESTED)
_TCP_TYPE = struct.pack("=H", CTA_PROTOINFO_TCP | NLA_F_NESTED)


def _fast_entry(data: bytes, start: int, end: int) -> CtEntry | None:
    if end - start < 2 * TUPLE4.size:
        return None
    o = TUPLE4.unpack_from(data, start)
    r = TUPLE4.unpack_from(data, start + TUPLE4.size)
    if (o[0], o[1], o[2], o[4], o[6], o[7], o[9], o[11]) not in _ORIG4 or (
        (r[0], r[1], r[2], r[4], r[6], r[7], r[9], r[11]) not in _REPLY4
    ):
        return None
    state, timeout = "", 0
    offset = start + 2 * TUPLE4.size
    if end - offset >= TAIL4.size:
        status_h, _, timeout_h, timeout_b, info_h, tcp_h, state_h, state_b = TAIL4.unpack_from(data, offset)
        if (status_h, timeout_h, state_h) == _TAIL4_HEADERS and info_h[2:] == _INFO_TYPE and tcp_h[2:] == _TCP_TYPE:
            state, timeout = CT_TCP_STATES[state_b], int.from_bytes(timeout_b, "big")
            offset = end  # the rest is not wanted
    while offset + 4 <= end:
        length, kind = NLA.unpack_from(data, offset)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        if kind == CTA_TIMEOUT:
            timeout = int.from_bytes(data[offset + 4 : offset + 8], "big")
        elif kind == CTA_PROTOINFO:
            tcp = _attrs(data, offset + 4, offset + length).get(CTA_PROTOINFO_TCP)
            where = _attrs(data, *tcp).get(CTA_PROTOINFO_TCP_STATE) if tcp else None
            state = CT_TCP_STATES[data[where[0]]] if where else ""
        offset += (length + 3) & ~3
    return CtEntry(PROTO_NAMES.get(o[8], str(o[8])), _inet_ntoa(o[3]), int.from_bytes(o[10], "big"), _inet_ntoa(o[5]),
                   int.from_bytes(o[12], "big"), _inet_ntoa(r[3]), int.from_bytes(r[10], "big"), state, timeout)  # fmt: skip


def decode_dump(chunks: list[bytes]) -> list[CtEntry]:
    entries = []
    for data in chunks:
        offset = 0
        while offset < len(data):
            length, kind, _, _, _ = NLMSG.unpack_from(data, offset)
            if kind == CT_NEW:
                start = offset + NLMSG.size + NFGEN.size
                fast = _fast_entry(data, start, offset + length)
                if fast is not None:
                    entries.append(fast)
                    offset += (length + 3) & ~3
                    continue
                attrs = _attrs(data, start, offset + length)
                proto, src, sport, dst, dport = _decode_tuple(data, attrs[CTA_TUPLE_ORIG])
                _, rsrc, rsport, _, _ = _decode_tuple(data, attrs[CTA_TUPLE_REPLY])
                state = ""
                if CTA_PROTOINFO in attrs:
                    tcp = _attrs(data, *attrs[CTA_PROTOINFO]).get(CTA_PROTOINFO_TCP)
                    if tcp:
                        where = _attrs(data, *tcp).get(CTA_PROTOINFO_TCP_STATE)
                        state = CT_TCP_STATES[data[where[0]]] if where else ""
                timeout = struct.unpack_from("!I", data, attrs[CTA_TIMEOUT][0])[0] if CTA_TIMEOUT in attrs else 0
                entries.append(CtEntry(PROTO_NAMES.get(proto, str(proto)), src, sport, dst, dport, rsrc, rsport,
                                       state, timeout))  # fmt: skip
            offset += (length + 3) & ~3
    return entries


def dump_entries() -> list[CtEntry]:
    entries = []
    for family in (socket.AF_INET, socket.AF_INET6):
        entries += decode_dump(dump_raw(family)[1])
    return entries


# -- filling the IPVS table through the sync protocol --------------------------------------------

SYNC_ID = 9
V1_HEADER = struct.Struct("!BBHBbH")
V1_CONN4 = struct.Struct("!BBHIHHHHII4s4s4s")
PER_MESSAGE = (protocol.DEFAULT_MAXLEN - V1_HEADER.size) // V1_CONN4.size
IP_VS_TCP_S_ESTABLISHED = 1


def client_address(number: int) -> str:
    return f"100.{64 + (number >> 16)}.{(number >> 8) & 255}.{number & 255}"


def client_port(number: int) -> int:
    return 1024 + number * 7919 % 60000


def sync_messages(count: int) -> list[protocol.EncodedMessage]:
    """v1 messages for `count` ESTABLISHED NAT connections to 10.50.0.1:80 -> 10.51.0.1:8080.

    Packed here with one struct a record: ipvsman.sync.protocol builds an object per connection,
    minutes for 100,000 in the emulated guest. The first record is checked against it.
    """
    vip, rip = socket.inet_aton("10.50.0.1"), socket.inet_aton("10.51.0.1")
    messages = []
    for start in range(0, count, PER_MESSAGE):
        numbers = range(start, min(start + PER_MESSAGE, count))
        body = b"".join(V1_CONN4.pack(0, 6, V1_CONN4.size, 0, IP_VS_TCP_S_ESTABLISHED, client_port(n), 80, 8080, 0,
                                      7200, socket.inet_aton(client_address(n)), vip, rip) for n in numbers)  # fmt: skip
        size = V1_HEADER.size + len(body)
        messages.append(protocol.EncodedMessage(V1_HEADER.pack(0, SYNC_ID, size, len(numbers), 1, 0) + body,
                                                len(numbers)))  # fmt: skip
    reference = protocol.from_connection(
        Connection("TCP", client_address(0), client_port(0), "10.50.0.1", 80, "10.51.0.1", 8080, "ESTABLISHED", 7200))
    expected = protocol.pack([reference], SYNC_ID).messages[0].data
    if messages and messages[0].data[: len(expected)][V1_HEADER.size:] != expected[V1_HEADER.size:]:
        raise RuntimeError("the fast sync encoder disagrees with ipvsman.sync.protocol")
    return messages


def ipvs_table_size() -> int:
    """ActiveConn + InActConn of every real server (/proc/net/ip_vs): cheap, unlike ip_vs_conn."""
    return procfs.counted_connections(procfs.read_text(f"{procfs.net_dir()}/ip_vs"))


def conntrack_count() -> int:
    return int(Path("/proc/sys/net/netfilter/nf_conntrack_count").read_text())


def shell(command: str, check: bool = True) -> subprocess.CompletedProcess:
    """A command in the calling thread's namespace (a NetnsWorker thread passes it on)."""
    return run(["sh", "-c", command], check=check)


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def read_ipvs_text() -> str:
    return procfs.read_text(f"{procfs.net_dir()}/{procfs.CONN_FILE}")


def conntrack_tool() -> int:
    proc = subprocess.run(["conntrack", "-L"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    return proc.stdout.count(b"\n")


def measure_cost(sizes: list[int], log=print) -> list[dict]:
    """Fill one namespace's IPVS and conntrack tables to each size in turn; time dumping them."""
    backup, master = Netns("ct-cost"), Netns("ct-master")
    figures = []
    worker = NetnsWorker(backup)
    try:
        run(["ip", "link", "add", "va", "netns", master.name, "type", "veth", "peer", "name", "vb", "netns",
             backup.name])  # fmt: skip
        master.run("ip addr add 10.99.0.1/24 dev va && ip link set va up")
        backup.run("ip addr add 10.99.0.2/24 dev vb && ip link set vb up")
        if guest.in_guest():  # our own machine: let the backup and conntrack hold what we send
            Path("/proc/sys/net/core/rmem_max").write_text(str(32 << 20))
            Path("/proc/sys/net/netfilter/nf_conntrack_max").write_text(str(max(sizes) * 2 + 1000))
        worker.call(shell, f"sysctl -qw net.ipv4.vs.sync_sock_size={16 << 20} && ipvsadm -A -t 10.50.0.1:80 -s rr"
                           " && ipvsadm -a -t 10.50.0.1:80 -r 10.51.0.1:8080 -m"
                           f" && ipvsadm --start-daemon backup --mcast-interface vb --syncid {SYNC_ID}")  # fmt: skip
        time.sleep(1.0)  # the backup thread joins the group
        messages = sync_messages(max(sizes))
        sock = sender.SyncSocket("va", protocol.DEFAULT_GROUP, protocol.DEFAULT_PORT, netns=master.name)
        sent = inserted = 0
        try:
            for size in sorted(sizes):
                batch = messages[sent // PER_MESSAGE : (size + PER_MESSAGE - 1) // PER_MESSAGE]
                for _ in range(5):
                    sender.send_messages(sock, batch, rate=10_000.0)
                    deadline = time.monotonic() + 60
                    while worker.call(ipvs_table_size) < size and time.monotonic() < deadline:
                        time.sleep(1.0)
                    if worker.call(ipvs_table_size) >= size:
                        break
                    log(f"conntrack bench: {worker.call(ipvs_table_size)} of {size} synced; sending again")
                sent = size
                refused = worker.call(insert_entries, size - inserted, inserted)
                inserted = size
                ipvs_entries, ct_entries = worker.call(ipvs_table_size), worker.call(conntrack_count)
                read_s, text = worker.call(timed, read_ipvs_text)
                parse_s, (table, _) = timed(procfs.parse_conn, text)
                dump_s, (dumped, chunks) = worker.call(timed, dump_raw)
                decode_s, entries = timed(decode_dump, chunks)
                tool_s, tool_lines = worker.call(timed, conntrack_tool)
                figure = dict(
                    size=size, ipvs_entries=ipvs_entries, ipvs_lines=len(table), conntrack_entries=ct_entries,
                    refused=refused, dumped=dumped, decoded=len(entries), tool_lines=tool_lines,
                    proc_read_s=read_s, proc_parse_s=parse_s, ct_dump_s=dump_s, ct_decode_s=decode_s,
                    conntrack_L_s=tool_s,
                )  # fmt: skip
                figures.append(figure)
                log(format_cost(figure))
        finally:
            sock.close()
    finally:
        worker.call(shell, "ipvsadm --stop-daemon backup", False)
        worker.close()
        backup.close()
        master.close()
    return figures


def format_cost(f: dict) -> str:
    ratio = f["proc_read_s"] / f["ct_dump_s"] if f["ct_dump_s"] else float("inf")
    return (
        f"N={f['size']:>7}: /proc/net/ip_vs_conn read {f['proc_read_s']:8.2f} s + parse {f['proc_parse_s']:6.2f} s "
        f"({f['ipvs_lines']} entries) | ctnetlink dump {f['ct_dump_s']:6.2f} s + decode {f['ct_decode_s']:6.2f} s "
        f"({f['dumped']} entries) | conntrack -L {f['conntrack_L_s']:6.2f} s | read/dump {ratio:6.1f}x "
        f"[tables: IPVS {f['ipvs_entries']}, conntrack {f['conntrack_entries']}, {f['refused']} inserts refused]"
    )


# -- exactness under real traffic ----------------------------------------------------------------

SERVER = r"""
import select, socket, sys, threading, time
ports, lifetime = [int(p) for p in sys.argv[1].split(",")], float(sys.argv[2])
listeners = []
for port in ports:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(64)
    listeners.append(listener)
def handle(conn):
    with conn:
        conn.settimeout(lifetime)
        try:
            if conn.recv(4096):
                conn.sendall(b"pong " * 200)
                while conn.recv(4096):
                    pass
        except OSError:
            pass
deadline = time.monotonic() + lifetime
while time.monotonic() < deadline:
    for listener in select.select(listeners, [], [], 0.5)[0]:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""

# Held connections stay ESTABLISHED; short ones close (client first) into TIME_WAIT. Each gets
# a few request/answer rounds so that the master daemon syncs it (sync_threshold: 3 packets).
CLIENT = r"""
import socket, sys, time
vip, port, held, short, linger = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
def talk(conn):
    for _ in range(3):
        conn.sendall(b"ping " * 20)
        time.sleep(0.05)
    conn.recv(65536)
kept = []
for _ in range(held):
    conn = socket.create_connection((vip, port), timeout=30)
    talk(conn)
    kept.append(conn)
for _ in range(short):
    with socket.create_connection((vip, port), timeout=30) as conn:
        talk(conn)
print("done", flush=True)
time.sleep(linger)
"""

VIP = "10.97.0.100"
NAT_REAL, DR_REAL = "10.98.1.2", "10.97.0.3"


def _link(a: Netns, a_dev: str, b: Netns, b_dev: str) -> None:
    run(["ip", "link", "add", a_dev, "netns", a.name, "type", "veth", "peer", "name", b_dev, "netns", b.name])


def build_lan() -> dict[str, Netns]:
    """client, director, DR real server on one bridge (lan); NAT real server behind the director;
    a backup director on a sync link."""
    names = ("lan", "client", "director", "natreal", "drreal", "backup")
    spaces: dict[str, Netns] = {}
    try:
        for role in names:
            spaces[role] = Netns(f"ct-{role}")
        lan = spaces["lan"]
        lan.run("ip link add br0 type bridge && ip link set br0 up")
        for role, dev, address in (("client", "c0", "10.97.0.1"), ("director", "d0", "10.97.0.2"),
                                   ("drreal", "x0", DR_REAL)):  # fmt: skip
            _link(spaces[role], dev, lan, f"p-{dev}")
            lan.run(f"ip link set p-{dev} master br0 && ip link set p-{dev} up")
            spaces[role].run(f"ip addr add {address}/24 dev {dev} && ip link set {dev} up")
        _link(spaces["director"], "d1", spaces["natreal"], "r0")
        _link(spaces["director"], "s0", spaces["backup"], "s1")
        spaces["director"].run(
            f"ip addr add {VIP}/32 dev d0 && ip addr add 10.98.1.1/24 dev d1 && ip link set d1 up"
            " && ip addr add 10.96.0.1/24 dev s0 && ip link set s0 up && sysctl -qw net.ipv4.ip_forward=1"
        )
        spaces["backup"].run("ip addr add 10.96.0.2/24 dev s1 && ip link set s1 up")
        spaces["natreal"].run(f"ip addr add {NAT_REAL}/24 dev r0 && ip link set r0 up"
                              " && ip route add default via 10.98.1.1")  # fmt: skip
        # DR: the real server owns the VIP but must not answer ARP for it.
        spaces["drreal"].run(f"ip addr add {VIP}/32 dev lo && sysctl -qw net.ipv4.conf.all.arp_ignore=1"
                             " && sysctl -qw net.ipv4.conf.all.arp_announce=2")  # fmt: skip
        return spaces
    except BaseException:
        for space in spaces.values():
            space.close()
        raise


# (NAT port, DR port) of each phase: each phase's connections are told apart by their ports.
PHASES = (("conntrack=1", 80, 81), ("conntrack=1 + nft ct rule", 82, 83))
# A rule that uses conntrack: what makes the kernel track a namespace's packets at all (IPVS itself
# asks for conntrack only for FTP-NAT services: ip_vs_register_conntrack, in ip_vs_ctl.c).
NFT_CT_RULE = ("nft add table inet ipvsmanbench && nft 'add chain inet ipvsmanbench pre"
               " { type filter hook prerouting priority -150 ; }' && nft add rule inet ipvsmanbench pre ct state new counter")  # fmt: skip


def _services() -> str:
    commands = []
    for _, nat, dr in PHASES:
        commands += [f"ipvsadm -A -t {VIP}:{nat} -s rr", f"ipvsadm -a -t {VIP}:{nat} -r {NAT_REAL}:8080 -m",
                     f"ipvsadm -A -t {VIP}:{dr} -s rr", f"ipvsadm -a -t {VIP}:{dr} -r {DR_REAL}:{dr} -g"]  # fmt: skip
    return " && ".join(commands)


def compare(connections, entries: list[CtEntry]) -> dict:
    """For each IPVS connection (templates aside): is there a conntrack entry with its client
    tuple, does that name its real server, does it have the same state?"""
    by_tuple = {(e.protocol, e.src, e.sport, e.dst, e.dport): e for e in entries}
    result = Counter()
    examples = {}
    for conn in connections:
        if conn.is_template:
            continue
        result["ipvs"] += 1
        entry = by_tuple.get((conn.protocol, conn.client, conn.client_port, conn.virtual, conn.virtual_port))
        if entry is None:
            result["missing"] += 1
            continue
        result["found"] += 1
        if (entry.reply_src, entry.reply_sport) == (conn.dest, conn.dest_port):
            result["real server"] += 1
        if entry.state == conn.state:
            result["same state"] += 1
        else:
            examples.setdefault(f"{conn.state}->{entry.state or '-'}", 0)
            examples[f"{conn.state}->{entry.state or '-'}"] += 1
        result["expiry gap s"] = max(result["expiry gap s"], abs(entry.timeout - conn.expires))
    result["conntrack entries"] = len(entries)
    return {**result, "state pairs (ipvs->conntrack)": examples}


def _listening(space: Netns, port: int) -> bool:
    return f":{port} " in space.run("ss -Hltn").stdout


def measure_exactness(held: int = 3, short: int = 5, log=print) -> dict:
    """Real connections in each phase (see PHASES); the director's and the backup's IPVS tables
    against their conntrack tables, per forwarding method."""
    spaces = build_lan()
    workers: dict[str, NetnsWorker] = {}
    procs: list[subprocess.Popen] = []
    results = {}
    try:
        director, backup = spaces["director"], spaces["backup"]
        for role in ("director", "backup"):
            spaces[role].run("sysctl -qw net.ipv4.vs.conntrack=1")
            workers[role] = NetnsWorker(spaces[role])
        director.run(_services() + f" && ipvsadm --start-daemon master --mcast-interface s0 --syncid {SYNC_ID}")
        backup.run(_services() + f" && ipvsadm --start-daemon backup --mcast-interface s1 --syncid {SYNC_ID}")
        dr_ports = ",".join(str(dr) for _, _, dr in PHASES)
        for role, ports in (("natreal", "8080"), ("drreal", dr_ports)):
            argv = spaces[role].exec_argv([sys.executable, "-c", SERVER, ports, "600"])
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 120
        while not (_listening(spaces["natreal"], 8080) and all(_listening(spaces["drreal"], p) for _, _, p in PHASES)):
            if time.monotonic() > deadline:
                raise RuntimeError("the real servers did not start listening")
            time.sleep(0.3)
        for phase, nat, dr in PHASES:
            if "nft" in phase:
                for role in ("director", "backup"):
                    spaces[role].run(NFT_CT_RULE)
            clients = [subprocess.Popen(spaces["client"].exec_argv(
                [sys.executable, "-c", CLIENT, VIP, str(port), str(held), str(short), "600"]),
                stdout=subprocess.PIPE, text=True) for port in (nat, dr)]  # fmt: skip
            procs += clients
            for client in clients:
                if client.stdout.readline().strip() != "done":
                    raise RuntimeError("a client failed")
            time.sleep(3.0)  # the last FINs, and the master daemon's next send
            for role in ("director", "backup"):
                table = workers[role].call(lambda: procfs.read_connections(procfs.net_dir())[0])
                entries = workers[role].call(dump_entries)
                for port, method in ((nat, "NAT"), (dr, "DR")):
                    mine = [c for c in table if c.virtual_port == port]
                    results[f"{phase}: {role} {method}"] = compare(mine, entries)
            log(f"exactness: phase {phase!r} measured")
        return results
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for worker in workers.values():
            worker.close()
        for space in spaces.values():
            space.close()


def format_exactness(results: dict) -> list[str]:
    lines = []
    for where, r in results.items():
        lines.append(
            f"{where}: {r.get('ipvs', 0)} IPVS conns, {r.get('found', 0)} in conntrack, "
            f"{r.get('real server', 0)} naming the real server, {r.get('same state', 0)} with the same state, "
            f"expiry differs by up to {r.get('expiry gap s', 0)} s; conntrack holds {r['conntrack entries']} entries; "
            f"states {r['state pairs (ipvs->conntrack)']}"
        )
    return lines


OUT = "conntrack-bench: "  # marks the figures among the guest's boot messages


def say(line: str) -> None:
    print(OUT + line, flush=True)


def main_in_place(sizes: list[int], exactness: bool) -> int:
    for module in ("nf_conntrack", "nf_conntrack_netlink", "nf_tables", "nft_ct", "bridge", "veth", "ip_vs", "ip_vs_rr"):
        subprocess.run(["modprobe", "-q", module], check=False)
    if exactness:
        started = time.monotonic()
        for line in format_exactness(measure_exactness(log=say)):
            say(line)
        say(f"(exactness run: {time.monotonic() - started:.0f} s)")
    if sizes:
        measure_cost(sizes, log=say)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipvsman.bench.conntrack", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="table sizes for the cost side (comma-separated; '' for none)")
    parser.add_argument("--skip-exactness", action="store_true")
    parser.add_argument("--here", action="store_true", help="run in this machine's kernel (needs IPVS and root)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.here or guest.in_guest() or guest.host_has_ipvs():
        return main_in_place(sizes, not args.skip_exactness)
    if shutil.which("conntrack") is None:
        print("conntrack-tools is needed (apt-get install conntrack)", file=sys.stderr)
        return 2
    rwdir = Path(tempfile.mkdtemp(prefix="ipvsman-conntrack-"))
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "ipvsman.bench.conntrack", "--here",
                                                 "--sizes", args.sizes) + (("--skip-exactness",) if args.skip_exactness else ()))  # fmt: skip
    repository = str(Path(__file__).resolve().parents[2])
    result = guest.run_in_guest(command, rwdir, timeout=60 * 60, cwd=repository)
    for line in result.output.splitlines():
        if line.startswith(OUT):
            print(line[len(OUT):])
    print(f"guest exit {result.returncode}; log {rwdir / 'guest.log'}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
