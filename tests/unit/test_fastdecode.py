"""The fast decoder against pyroute2's own decoding (NlaDecoder) on messages encoded by pyroute2."""

from __future__ import annotations

import collections
import errno
import socket
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroute2.netlink import NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR, genlmsg, nla
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.marshal import Marshal

from ipvsman import model
from ipvsman.kernel import fastdecode as fd
from ipvsman.kernel import netlink as nl

FAMILY_ID = 0x23  # any generic netlink family id: decoding does not depend on it
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


# -- messages as the kernel sends them, encoded by pyroute2 ----------------------------------


# Message classes of a kernel newer than ip_vs.h as ipvsman knows it: one more attribute in each
# nest. Not subclasses of the real classes (pyroute2 caches compiled nla maps per hierarchy).
class stats64_newer(nla):
    nla_map = nl.ipvs_stats64.nla_map + ((12, "IPVS_STATS_ATTR_FUTURE", "uint32"),)


class service_newer(nla):
    nla_map = nl.ipvs_service.nla_map + ((13, "IPVS_SVC_ATTR_FUTURE", "uint32"),)
    service_flags = nl.ipvs_service_flags
    stats = nl.ipvs_stats
    stats64 = stats64_newer


class dest_newer(nla):
    nla_map = nl.ipvs_dest.nla_map + ((16, "IPVS_DEST_ATTR_FUTURE", "uint32"),)
    stats = nl.ipvs_stats
    stats64 = stats64_newer


class daemon_newer(nla):
    nla_map = nl.ipvs_daemon.nla_map + ((9, "IPVS_DAEMON_ATTR_FUTURE", "uint32"),)


class message_newer(genlmsg):
    nla_map = nl.ipvs_message.nla_map + ((7, "IPVS_CMD_ATTR_FUTURE", "uint32"),)
    service = service_newer
    dest = dest_newer
    daemon = daemon_newer


def encode(command: int, attrs, cls=nl.ipvs_message, sequence: int = 7) -> bytes:
    msg = cls()
    msg["cmd"] = command
    msg["version"] = nl.GENL_VERSION
    msg["header"]["type"] = FAMILY_ID
    msg["header"]["flags"] = NLM_F_MULTI
    msg["header"]["sequence_number"] = sequence
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def both(data: bytes):
    """The message decoded by pyroute2's classes and as a RawMessage, the way each marshal makes them."""
    slow = nl.message_for(data)
    slow.decode()
    fast = fd.FastDecoder.message(data)
    fast.decode()
    return slow, fast


def agree(method: str, data: bytes, *args):
    """Decode with both decoders; assert equal values and equal skip counts; return the value.

    The fast decoder decodes twice: real servers are walked the first time and read through
    the layout learnt from that walk the next, and both must give pyroute2's values.
    """
    slow, fast = both(data)
    slow_skipped = collections.Counter()
    slow_value = getattr(nl.NlaDecoder, method)(slow, *args, slow_skipped)
    for _ in range(2):
        fast_skipped = collections.Counter()
        fast_value = getattr(fd.FastDecoder, method)(fast, *args, fast_skipped)
        assert fast_value == slow_value
        assert fast_skipped == slow_skipped
    return fast_value, fast_skipped


def v4(text: str) -> bytes:
    return socket.inet_aton(text) + bytes(12)  # union nf_inet_addr: always 16 bytes


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


STAT_NAMES = ("CONNS", "INPKTS", "OUTPKTS", "INBYTES", "OUTBYTES", "CPS", "INPPS", "OUTPPS", "INBPS", "OUTBPS")


def stats_nest(values: dict, pad: bool, extra: bool = False) -> dict:
    attrs = []
    for name in STAT_NAMES:
        if name not in values:
            continue
        if pad and name in ("INBYTES", "OUTBYTES"):
            attrs.append(("IPVS_STATS_ATTR_PAD", None))  # what nla_put_u64_64bit adds where needed
        attrs.append(("IPVS_STATS_ATTR_" + name, values[name]))
    if extra:
        attrs.append(("IPVS_STATS_ATTR_FUTURE", 1))
    return {"attrs": attrs}


# -- strategies -------------------------------------------------------------------------------

addresses4 = st.integers(0, U32_MAX).map(lambda n: socket.inet_ntoa(n.to_bytes(4, "big")))
addresses6 = st.binary(min_size=16, max_size=16).map(lambda raw: socket.inet_ntop(socket.AF_INET6, raw))
stats64 = st.fixed_dictionaries({name: st.integers(0, U64_MAX) for name in STAT_NAMES})


@st.composite
def stats_attrs(draw, prefix: str, packed: bool = False):
    """STATS64 and/or STATS (32-bit but for the byte counts), as old and new kernels send them;
    `packed`: a whole STATS64 without padding, as Linux sends it on x86-64 (and maybe STATS)."""
    values = draw(stats64)
    small = {name: value & (U64_MAX if name.endswith("BYTES") else U32_MAX) for name, value in values.items()}
    pad = draw(st.booleans()) and not packed
    kinds = draw(st.sampled_from(["both", "64"] if packed else ["both", "64", "32", "none", "partial64"]))
    attrs = []
    if kinds in ("both", "32"):
        attrs.append((prefix + "STATS", stats_nest(small, pad)))
    if kinds in ("both", "64"):
        attrs.append((prefix + "STATS64", stats_nest(values, pad)))
    if kinds == "partial64":
        keep = draw(st.sets(st.sampled_from(STAT_NAMES)))
        attrs.append((prefix + "STATS64", stats_nest({k: v for k, v in values.items() if k in keep}, pad)))
    return attrs


@st.composite
def service_messages(draw, packed: bool = False) -> bytes:
    af = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    attrs = [("IPVS_SVC_ATTR_AF", af)]
    if draw(st.booleans()):
        attrs.append(("IPVS_SVC_ATTR_FWMARK", draw(st.integers(1, U32_MAX))))
    else:
        address = draw(addresses4.map(v4) if af == socket.AF_INET else addresses6.map(v6))
        attrs += [
            ("IPVS_SVC_ATTR_PROTOCOL", draw(st.sampled_from([6, 17, 132]))),
            ("IPVS_SVC_ATTR_ADDR", address),
            ("IPVS_SVC_ATTR_PORT", draw(st.integers(0, 65535))),
        ]
    scheduler = draw(st.sampled_from(sorted(model.SCHEDULER_NAMES)))
    flags = draw(st.integers(0, 0x3F) | st.integers(0, U32_MAX))
    attrs += [
        ("IPVS_SVC_ATTR_SCHED_NAME", scheduler),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": flags, "mask": U32_MAX}),
        ("IPVS_SVC_ATTR_TIMEOUT", draw(st.integers(0, U32_MAX))),
    ]
    if af == socket.AF_INET:
        attrs.append(("IPVS_SVC_ATTR_NETMASK", socket.inet_aton(draw(addresses4))))
    else:  # a prefix length, as ipvsadm -M 64 sends it: a u32 in host order
        attrs.append(("IPVS_SVC_ATTR_NETMASK", draw(st.integers(0, 128)).to_bytes(4, sys.byteorder)))
    if draw(st.booleans()):
        attrs.append(("IPVS_SVC_ATTR_PE_NAME", draw(st.sampled_from(["sip", ""]))))
    attrs += draw(stats_attrs("IPVS_SVC_ATTR_", packed))
    attrs = draw(st.permutations(attrs))
    newer = draw(st.booleans())
    if newer:
        attrs.append(("IPVS_SVC_ATTR_FUTURE", 5))
    top = [("IPVS_CMD_ATTR_SERVICE", {"attrs": attrs})] + ([("IPVS_CMD_ATTR_FUTURE", 1)] if newer else [])
    return encode(nl.CMD_NEW_SERVICE, top, cls=message_newer if newer else nl.ipvs_message)


@st.composite
def dest_messages(draw) -> bytes:
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6, None]))  # None: before ADDR_FAMILY
    six = family == socket.AF_INET6 or (family is None and draw(st.booleans()))
    attrs = [
        ("IPVS_DEST_ATTR_ADDR", draw(addresses6.map(v6) if six else addresses4.map(v4))),
        ("IPVS_DEST_ATTR_PORT", draw(st.integers(0, 65535))),
        ("IPVS_DEST_ATTR_FWD_METHOD", draw(st.integers(0, 7))),  # 4-7: no method ipvsman names
    ]
    for name in ("WEIGHT", "U_THRESH", "L_THRESH", "ACTIVE_CONNS", "INACT_CONNS", "PERSIST_CONNS"):
        attrs.append(("IPVS_DEST_ATTR_" + name, draw(st.integers(0, U32_MAX))))
    if family is not None:
        attrs.append(("IPVS_DEST_ATTR_ADDR_FAMILY", family))
    if draw(st.booleans()):  # since 5.3
        attrs += [
            ("IPVS_DEST_ATTR_TUN_TYPE", draw(st.integers(0, 2))),
            ("IPVS_DEST_ATTR_TUN_PORT", draw(st.integers(0, 65535))),
            ("IPVS_DEST_ATTR_TUN_FLAGS", draw(st.integers(0, 7))),
        ]
    attrs += draw(stats_attrs("IPVS_DEST_ATTR_"))
    attrs = draw(st.permutations(attrs))
    newer = draw(st.booleans())
    if newer:
        attrs.append(("IPVS_DEST_ATTR_FUTURE", 5))
    return encode(nl.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", {"attrs": attrs})],
                  cls=message_newer if newer else nl.ipvs_message)  # fmt: skip


EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@EXAMPLES
@given(service_messages())
def test_services_decode_the_same(data):
    agree("service", data)


@EXAMPLES
@given(dest_messages(), st.sampled_from(["inet", "inet6"]))
def test_real_servers_decode_the_same(data, service_af):
    agree("dest", data, service_af)
    slow, fast = both(data)
    assert fd.FastDecoder.dest_config(fast, service_af) == nl.NlaDecoder.dest_config(slow, service_af)


@EXAMPLES
@given(dest_messages(), st.sampled_from(["inet", "inet6"]))
def test_datagrams_of_real_servers_decode_the_same(data, service_af):
    messages = [data] * 3
    slow_skipped = collections.Counter()
    slow = [nl.NlaDecoder.dest(both(message)[0], service_af, slow_skipped) for message in messages]
    # The first datagram teaches its shape (when it is one a layout can read); the second is read by it.
    for sequence in (7, 8):
        skipped = collections.Counter()
        found = fd.FastDecoder.dest_replies(batch_marshal(), service_af, skipped, datagram(messages, sequence), sequence)
        assert found == (slow, False)
        assert skipped == slow_skipped


# -- fixed examples: every branch named ------------------------------------------------------

BIG = 2**40 + 5
STATS = {"CONNS": BIG, "INPKTS": BIG + 1, "OUTPKTS": 12, "INBYTES": BIG * 3, "OUTBYTES": 99,
         "CPS": 4, "INPPS": 40, "OUTPPS": 41, "INBPS": 4000, "OUTBPS": 4100}  # fmt: skip


def kernel_dest(**overrides) -> bytes:
    """A real server as Linux 6.1 on x86-64 sends it (attribute order of ip_vs_genl_fill_dest)."""
    attrs = {
        "ADDR": v4("10.0.1.1"), "PORT": 8080, "FWD_METHOD": 0, "WEIGHT": 3, "TUN_TYPE": 0, "TUN_PORT": 0,
        "TUN_FLAGS": 0, "U_THRESH": 100, "L_THRESH": 10, "ACTIVE_CONNS": 5, "INACT_CONNS": 6,
        "PERSIST_CONNS": 7, "ADDR_FAMILY": socket.AF_INET,
        "STATS": stats_nest({k: v & U32_MAX for k, v in STATS.items()}, pad=False),
        "STATS64": stats_nest(STATS, pad=False),
    }  # fmt: skip
    attrs.update(overrides)
    nest = {"attrs": [("IPVS_DEST_ATTR_" + name, value) for name, value in attrs.items() if value is not None]}
    return encode(nl.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", nest)])


def test_the_kernels_real_server_layout_takes_the_packed_stats_path(monkeypatch):
    expected = model.Dest("10.0.1.1", 8080, "masq", 3, 100, 10, 5, 6, 7,
                          model.Stats(BIG, BIG + 1, 12, BIG * 3, 99), model.Rates(4, 40, 41, 4000, 4100), "inet")  # fmt: skip
    assert agree("dest", kernel_dest(), "inet")[0] == expected
    walked = []
    real_walk = fd._walk
    monkeypatch.setattr(fd, "_walk", lambda *args: walked.append(args[3]) or real_walk(*args))
    fd.FastDecoder.dest(both(kernel_dest())[1], "inet", collections.Counter())
    assert fd.STATS_KNOWN not in walked  # the stats nest was unpacked at once, not walked
    padded = kernel_dest(STATS64=stats_nest(STATS, pad=True))
    assert agree("dest", padded, "inet")[0] == expected


def test_a_learnt_layout_is_only_used_for_nests_of_its_shape():
    fd.DEST_LAYOUTS.by_size.clear()
    fd.DEST_LAYOUTS.count = 0
    first = kernel_dest()
    assert agree("dest", first, "inet")[0].weight == 3
    assert fd.DEST_LAYOUTS.count == 1  # learnt from the walk of the first
    # The same attributes in another order: as long, but a different shape.
    attrs = {"ADDR_FAMILY": socket.AF_INET, "ADDR": v4("10.0.1.9"), "WEIGHT": 9, "PORT": 81, "FWD_METHOD": 3,
             "U_THRESH": 1, "L_THRESH": 2, "ACTIVE_CONNS": 3, "INACT_CONNS": 4, "PERSIST_CONNS": 5, "TUN_TYPE": 0,
             "TUN_PORT": 0, "TUN_FLAGS": 0, "STATS64": stats_nest(STATS, pad=False),
             "STATS": stats_nest({k: v & U32_MAX for k, v in STATS.items()}, pad=False)}  # fmt: skip
    nest = {"attrs": [("IPVS_DEST_ATTR_" + name, value) for name, value in attrs.items()]}
    other = encode(nl.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", nest)])
    assert len(other) == len(first)
    value = agree("dest", other, "inet")[0]
    assert (value.address, value.port, value.forward, value.weight) == ("10.0.1.9", 81, "route", 9)
    assert fd.DEST_LAYOUTS.count == 2
    # A real server whose counters are not the kernel's packed STATS64 is always walked.
    padded = kernel_dest(STATS64=stats_nest(STATS, pad=True))
    agree("dest", padded, "inet")
    assert fd.DEST_LAYOUTS.count == 2


def test_unknown_attributes_are_counted_at_every_level():
    nest = stats_nest(STATS, pad=False, extra=True)
    dest = {"attrs": [("IPVS_DEST_ATTR_ADDR", v4("10.0.1.1")), ("IPVS_DEST_ATTR_PORT", 80),
                      ("IPVS_DEST_ATTR_STATS64", nest), ("IPVS_DEST_ATTR_FUTURE", 1), ("IPVS_DEST_ATTR_FUTURE", 2)]}  # fmt: skip
    data = encode(nl.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", dest), ("IPVS_CMD_ATTR_FUTURE", 3)], cls=message_newer)
    value, skipped = agree("dest", data, "inet")
    assert value.stats.conns == BIG
    assert skipped == {nl.SKIP_UNKNOWN_ATTRIBUTES: 4}  # the repeated one counts twice


@pytest.mark.parametrize(
    "attrs",
    [
        [],  # no service nest
        [("IPVS_CMD_ATTR_SERVICE", {"attrs": [("IPVS_SVC_ATTR_AF", 99)]})],  # unknown family
        [("IPVS_CMD_ATTR_SERVICE", {"attrs": [("IPVS_SVC_ATTR_AF", 2), ("IPVS_SVC_ATTR_PROTOCOL", 47)]})],
        [("IPVS_CMD_ATTR_SERVICE", {"attrs": [("IPVS_SVC_ATTR_AF", 2), ("IPVS_SVC_ATTR_PROTOCOL", 6),
                                              ("IPVS_SVC_ATTR_ADDR", b"\x01"), ("IPVS_SVC_ATTR_PORT", 80)]})],  # fmt: skip
        [("IPVS_CMD_ATTR_SERVICE", {"attrs": [("IPVS_SVC_ATTR_AF", 2), ("IPVS_SVC_ATTR_PROTOCOL", 6),
                                              ("IPVS_SVC_ATTR_PORT", 80)]})],  # fmt: skip  # no address
    ],
)
def test_services_both_decoders_refuse(attrs):
    value, skipped = agree("service", encode(nl.CMD_NEW_SERVICE, attrs))
    assert value is None and skipped == {nl.SKIP_UNDECODABLE: 1}


def test_daemons_info_and_timeouts_decode_the_same():
    def daemon(**attrs):
        nest = {"attrs": [("IPVS_DAEMON_ATTR_" + name, value) for name, value in attrs.items()]}
        return encode(nl.CMD_NEW_DAEMON, [("IPVS_CMD_ATTR_DAEMON", nest)])

    master = daemon(STATE=1, MCAST_IFN="va", SYNC_ID=10, SYNC_MAXLEN=1472, MCAST_PORT=8848, MCAST_TTL=1,
                    MCAST_GROUP=socket.inet_aton("224.0.0.81"))  # fmt: skip
    assert agree("daemon", master)[0] == model.Daemon("master", "va", 10, 1472, "224.0.0.81", 8848, 1)
    backup = daemon(STATE=2, MCAST_IFN="vb", SYNC_ID=11, SYNC_MAXLEN=1452, MCAST_PORT=9000, MCAST_TTL=4,
                    MCAST_GROUP6=v6("ff02::81"))  # fmt: skip
    assert agree("daemon", backup)[0] == model.Daemon("backup", "vb", 11, 1452, "ff02::81", 9000, 4)
    assert agree("daemon", daemon(STATE=2, MCAST_IFN="eth0", SYNC_ID=3))[0].group == "224.0.0.81"
    assert agree("daemon", daemon(STATE=4, MCAST_IFN="x", SYNC_ID=1))[0] is None

    info = encode(nl.CMD_SET_INFO, [("IPVS_INFO_ATTR_VERSION", 0x010201), ("IPVS_INFO_ATTR_CONN_TAB_SIZE", 4096)],
                  cls=nl.ipvs_info_message)  # fmt: skip
    slow, fast = both(info)
    assert fd.FastDecoder.info(fast) == nl.NlaDecoder.info(slow) == model.IpvsInfo("1.2.1", 4096)
    config = encode(nl.CMD_SET_CONFIG, [("IPVS_CMD_ATTR_TIMEOUT_TCP", 900), ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", 120),
                                        ("IPVS_CMD_ATTR_TIMEOUT_UDP", 300)])  # fmt: skip
    slow, fast = both(config)
    assert fd.FastDecoder.timeouts(fast) == nl.NlaDecoder.timeouts(slow) == model.Timeouts(900, 120, 300)


# -- where the fast decoder is stricter -----------------------------------------------------


def test_an_attribute_running_past_its_nest_makes_the_message_undecodable():
    data = bytearray(kernel_dest())
    # The first attribute inside the dest nest (ADDR) claims more bytes than the nest holds.
    struct.pack_into("=H", data, fd.ATTRIBUTES_START + 4, 2000)
    msg = fd.RawMessage(bytes(data))
    msg.decode()
    skipped = collections.Counter()
    assert fd.FastDecoder.dest(msg, "inet", skipped) is None
    assert skipped == {nl.SKIP_UNDECODABLE: 1}


def test_a_value_shorter_than_its_type_makes_the_message_undecodable():
    nest = {"attrs": [("IPVS_DEST_ATTR_ADDR", v4("10.0.1.1")), ("IPVS_DEST_ATTR_PORT", 80),
                      ("IPVS_DEST_ATTR_TUN_FLAGS", 1)]}  # fmt: skip
    data = bytearray(encode(nl.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", nest)]))
    # Renumber TUN_FLAGS (a u16, 6 bytes with its header) as WEIGHT, a u32.
    position = bytes(data).rindex(struct.pack("=HH", 6, nl.DEST_ATTR_TUN_FLAGS))
    struct.pack_into("=HH", data, position, 6, nl.DEST_ATTR_WEIGHT)
    msg = fd.RawMessage(bytes(data))
    msg.decode()
    skipped = collections.Counter()
    assert fd.FastDecoder.dest(msg, "inet", skipped) is None
    assert skipped == {nl.SKIP_UNDECODABLE: 1}
    # A missing weight is 0, as in NlaDecoder: only a present but short one is refused.
    assert agree("dest", kernel_dest(WEIGHT=None), "inet")[0].weight == 0


# -- inside pyroute2's marshal ----------------------------------------------------------------


def marshal_for(decoder) -> Marshal:
    marshal = Marshal()
    marshal.msg_map[FAMILY_ID] = decoder.message
    return marshal


def done(sequence: int) -> bytes:
    return struct.pack("=IHHIIi", 20, NLMSG_DONE, NLM_F_MULTI, sequence, 0, 0)


def test_a_dump_buffer_parses_into_raw_messages_with_pyroute2s_headers():
    buffer = b"".join(kernel_dest(ADDR=v4(f"10.0.1.{i}")) for i in range(1, 6)) + done(7)
    fast = list(marshal_for(fd.FastDecoder).parse(buffer))
    slow = list(marshal_for(nl.NlaDecoder).parse(buffer))
    assert len(fast) == len(slow) == 6
    for fast_msg, slow_msg in zip(fast, slow):
        for field in ("length", "type", "flags", "sequence_number", "pid", "error"):
            assert fast_msg["header"].get(field) == slow_msg["header"].get(field)
    assert [fd.FastDecoder.dest(m, "inet", collections.Counter()).address for m in fast[:5]] == [
        f"10.0.1.{i}" for i in range(1, 6)
    ]
    assert fast[0]["cmd"] == nl.CMD_NEW_DEST and "header" in fast[0] and "event" not in fast[0]


def test_an_error_reply_echoing_the_request_is_read_through_a_raw_message():
    request = encode(nl.CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", nl.service_key_attrs(
        model.ServiceKey("inet", "tcp", "10.0.0.1", 80)))])  # fmt: skip
    error = struct.pack("=IHHIIi", 20 + len(request), NLMSG_ERROR, 0, 7, 0, -3) + request  # ESRCH
    (msg,) = marshal_for(fd.FastDecoder).parse(error)
    assert isinstance(msg["header"]["error"], NetlinkError) and msg["header"]["error"].code == 3
    echoed = msg["header"]["errmsg"]
    assert isinstance(echoed, fd.RawMessage) and echoed["cmd"] == nl.CMD_GET_DEST


def test_raw_messages_keep_what_pyroute2_sets_on_them():
    msg = fd.RawMessage(kernel_dest())
    msg.decode()
    msg["event"] = "x"
    msg["header"]["target"] = "localhost"
    assert msg.get("event") == "x" and msg["header"]["target"] == "localhost"
    assert msg.get("missing", 5) == 5
    with pytest.raises(KeyError):
        msg["missing"]


# -- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        model.ServiceKey("inet", "tcp", "10.0.0.1", 80),
        model.ServiceKey("inet", "sctp", "192.0.2.7", 0),
        model.ServiceKey("inet6", "udp", "fd00::1", 53),
        model.ServiceKey("inet", None, "", 0, 7),
        model.ServiceKey("inet6", None, "", 0, 2**32 - 1),
    ],
)
def test_dest_dump_requests_are_the_bytes_pyroute2_would_send(key):
    expected = nl.request_message(nl.CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", nl.service_key_attrs(key))])
    request = fd.dest_dump_request(key)
    for msg in (expected, request):  # what NetlinkRequest does before sending
        msg["header"]["type"] = FAMILY_ID
        msg["header"]["flags"] = nl.DUMP
        msg["header"]["sequence_number"] = 77
        msg["header"]["pid"] = 4242
        msg.reset()
        msg.encode()
    assert request.data == bytes(expected.data)


def test_sequence_numbers_come_back_only_after_the_whole_range():
    numbers = fd.SequenceNumbers(first=10, last=14)
    first = [numbers.alloc() for _ in range(3)]
    assert first == [10, 11, 12]
    numbers.free(11, ban=0xFF)
    assert [numbers.alloc(), numbers.alloc()] == [13, 14]
    assert numbers.alloc() == 11  # wrapped round; 10 and 12 are still in use
    with pytest.raises(KeyError):
        numbers.alloc()


# -- the batching marshal -------------------------------------------------------------------------


def batch_marshal() -> fd.BatchMarshal:
    marshal = fd.BatchMarshal()
    marshal.msg_map[FAMILY_ID] = fd.RawMessage
    return marshal


def test_a_datagram_of_real_servers_comes_out_as_one_batch_then_done():
    buffer = b"".join(kernel_dest(ADDR=v4(f"10.0.1.{i}")) for i in range(1, 11)) + done(7)
    batch, finished = batch_marshal().parse(buffer)
    assert isinstance(batch, fd.RawBatch) and len(batch) == 10
    assert batch["header"]["flags"] & NLM_F_MULTI and batch["header"]["error"] is None
    assert batch["header"]["sequence_number"] == 7
    assert finished["header"]["type"] == NLMSG_DONE
    addresses = [fd.FastDecoder.dest(msg, "inet", collections.Counter()).address for msg in batch.messages]
    assert addresses == [f"10.0.1.{i}" for i in range(1, 11)]
    assert list(batch) == batch.messages and not hasattr(finished, "messages")


def test_an_error_after_some_messages_follows_their_batch():
    error = struct.pack("=IHHIIi", 20 + 16, NLMSG_ERROR, 0, 7, 0, -4) + struct.pack("=IHHII", 16, FAMILY_ID, 0, 7, 0)
    items = list(batch_marshal().parse(kernel_dest() + error))
    assert [type(item) for item in items[:1]] == [fd.RawBatch] and len(items) == 2
    assert isinstance(items[1]["header"]["error"], NetlinkError) and items[1]["header"]["error"].code == 4


def test_messages_of_other_types_are_parsed_by_pyroute2_one_by_one():
    marshal = batch_marshal()
    marshal.msg_map[FAMILY_ID] = nl.message_for  # not RawMessage: nothing is batched
    items = list(marshal.parse(kernel_dest() + kernel_dest()))
    assert len(items) == 2 and all(isinstance(item, nl.ipvs_message) for item in items)


# -- a whole poll through pyroute2's socket, against a stand-in kernel ------------------------------


def kernel_service(index: int) -> tuple[model.ServiceKey, bytes]:
    key = model.ServiceKey("inet", "tcp", f"10.0.{index // 250}.{index % 250}", 80)
    nest = {"attrs": [("IPVS_SVC_ATTR_AF", socket.AF_INET), ("IPVS_SVC_ATTR_PROTOCOL", 6),
                      ("IPVS_SVC_ATTR_ADDR", v4(key.address)), ("IPVS_SVC_ATTR_PORT", 80),
                      ("IPVS_SVC_ATTR_SCHED_NAME", "wlc"), ("IPVS_SVC_ATTR_FLAGS", {"flags": 2, "mask": U32_MAX}),
                      ("IPVS_SVC_ATTR_TIMEOUT", 0), ("IPVS_SVC_ATTR_NETMASK", b"\xff" * 4),
                      ("IPVS_SVC_ATTR_STATS64", stats_nest(STATS, pad=False))]}  # fmt: skip
    return key, encode(nl.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", nest)])


class StandInKernel:
    """Answers IPVS requests on one end of a datagram socket pair as the kernel would (dumps end
    with DONE; a datagram holds at most 40 messages), from a thread."""

    def __init__(self, services: int, dests: int, answers=None):
        import threading

        # How dest dumps are answered, by the service's dump payload: "vanished" (an ESRCH error
        # reply), "failed" (a dump ending in a DONE whose status is -ENOMEM), "late" (a stale
        # reply to another sequence number first) or "silent" (no reply at all).
        self.answers = answers or {}

        self.sock, self.peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.services, self.dumps = [], {}
        for index in range(services):
            key, message = kernel_service(index)
            self.services.append(message)
            self.dumps[fd._dest_dump_payload(key)] = [
                kernel_dest(ADDR=v4(f"172.16.{index % 250}.{number + 1}"), WEIGHT=number, PORT=8000 + number)
                for number in range(dests)
            ]
        self.info = encode(nl.CMD_SET_INFO, [("IPVS_INFO_ATTR_VERSION", 0x010201),
                                             ("IPVS_INFO_ATTR_CONN_TAB_SIZE", 4096)], cls=nl.ipvs_info_message)  # fmt: skip
        self.config = encode(nl.CMD_SET_CONFIG, [("IPVS_CMD_ATTR_TIMEOUT_TCP", 900)])
        self.requests: list[bytes] = []
        self.peer.settimeout(0.1)
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @staticmethod
    def stamped(messages: list[bytes], sequence: int, flags: int) -> bytes:
        out = bytearray()
        for message in messages:
            message = bytearray(message)
            struct.pack_into("=HI", message, 6, flags, sequence)
            out += message
        return bytes(out)

    def serve(self) -> None:
        while self.running:
            try:
                request = self.peer.recv(65536)
            except TimeoutError:
                continue
            self.requests.append(request)
            sequence = struct.unpack_from("=I", request, 8)[0]
            command = request[16]
            if command in (nl.CMD_GET_INFO, nl.CMD_GET_CONFIG):
                self.peer.send(self.stamped([self.info if command == nl.CMD_GET_INFO else self.config], sequence, 0))
                continue
            if command == nl.CMD_GET_SERVICE:
                replies = self.services
            elif command == nl.CMD_GET_DEST:
                replies = self.dumps[request[16:]]
            else:
                replies = []
            answer = self.answers.get(request[16:]) if command == nl.CMD_GET_DEST else None
            if answer == "silent":
                continue
            if answer == "vanished":
                self.peer.send(struct.pack("=IHHIIi", 20 + len(request), NLMSG_ERROR, 0, sequence, 0, -3) + request)
                continue
            if answer == "late":
                self.peer.send(self.stamped(replies[:1], sequence - 1, NLM_F_MULTI) + done(sequence - 1))
            for start in range(0, len(replies), 40):
                self.peer.send(self.stamped(replies[start : start + 40], sequence, NLM_F_MULTI))
            status = -12 if answer == "failed" else 0  # ENOMEM
            self.peer.send(struct.pack("=IHHIIi", 20, NLMSG_DONE, NLM_F_MULTI, sequence, 0, status))

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()
        self.peer.close()


def poll_through_socket(kernel: StandInKernel, decoder) -> nl.IpvsDump:
    sock = nl.IpvsSocket(decoder, use_socket=kernel.sock)
    # What open_family() learns from the generic netlink controller, which the stand-in lacks.
    sock.asyncore.marshal.msg_map[FAMILY_ID] = decoder.message
    sock.asyncore._prid = FAMILY_ID
    try:
        return sock.read_all(collections.Counter())
    finally:
        sock.close()


def test_a_whole_poll_reads_the_same_with_either_decoder():
    polls, requests = {}, {}
    for decoder in (fd.FastDecoder, nl.NlaDecoder):
        kernel = StandInKernel(services=60, dests=7)  # pyroute2 closes the socket it was given
        try:
            polls[decoder] = poll_through_socket(kernel, decoder)
            requests[decoder] = [request[16:] for request in kernel.requests]
        finally:
            kernel.close()
    fast = polls[fd.FastDecoder]
    assert fast == polls[nl.NlaDecoder]
    assert len(fast.services) == 60 and {len(service.dests) for service in fast.services} == {7}
    assert fast.info == model.IpvsInfo("1.2.1", 4096) and fast.timeouts.tcp == 900
    # The same requests went out (but for their sequence numbers): one dump per service.
    assert requests[fd.FastDecoder] == requests[nl.NlaDecoder]
    assert sum(request[0] == nl.CMD_GET_DEST for request in requests[fd.FastDecoder]) == 60


def dest_payload(index: int) -> bytes:
    return fd._dest_dump_payload(kernel_service(index)[0])


def test_a_poll_skips_a_service_that_vanished_and_ignores_replies_to_other_requests():
    kernel = StandInKernel(services=5, dests=3, answers={dest_payload(1): "vanished", dest_payload(3): "late"})
    try:
        skipped = collections.Counter()
        sock = nl.IpvsSocket(fd.FastDecoder, use_socket=kernel.sock)
        sock.asyncore.marshal.msg_map[FAMILY_ID] = fd.FastDecoder.message
        sock.asyncore._prid = FAMILY_ID
        dump = sock.read_all(skipped)
    finally:
        kernel.close()
    assert len(dump.services) == 4 and skipped[nl.SKIP_VANISHED] == 1
    assert {len(service.dests) for service in dump.services} == {3}  # the stale reply's dest is not counted
    assert kernel_service(1)[0] not in {service.key for service in dump.services}


def poll_raising(exception, services: int, answers: dict) -> BaseException:
    """What a whole poll of a stand-in kernel answering so raises."""
    kernel = StandInKernel(services=services, dests=2, answers=answers)
    try:
        with pytest.raises(exception) as raised:
            poll_through_socket(kernel, fd.FastDecoder)
    finally:
        kernel.close()
    return raised.value


def test_a_dump_that_fails_part_way_raises_the_kernels_error():
    assert poll_raising(NetlinkError, 3, {dest_payload(2): "failed"}).code == 12


def test_a_kernel_that_does_not_answer_gives_a_timeout_not_a_hang(monkeypatch):
    monkeypatch.setattr(nl, "REPLY_TIMEOUT", 0.3)
    error = poll_raising(OSError, 2, {dest_payload(0): "silent"})
    assert error.errno == errno.ETIMEDOUT and "0.3 s" in str(error)


def test_the_real_server_tuple_is_built_in_the_order_of_dests_fields():
    # FastDecoder.dest makes model.Dest positionally (tuple.__new__): the order is part of the contract.
    assert model.Dest._fields == ("address", "port", "forward", "weight", "upper_threshold", "lower_threshold",
                                  "active_conns", "inactive_conns", "persist_conns", "stats", "rates", "af")  # fmt: skip
    assert model.Stats._fields == ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
    assert model.Rates._fields == ("cps", "inpps", "outpps", "inbps", "outbps")


def test_a_service_with_its_real_servers_is_the_same_as_dataclasses_replace():
    import dataclasses

    service = model.Service(model.ServiceKey("inet6", "udp", "2001:db8::1", 53), "wlc", persistent=300,
                            netmask="64", flags=("persistent", "hashed"), pe_name="sip",
                            stats=model.Stats(1, 2, 3, 4, 5), rates=model.Rates(6, 7, 8, 9, 10))  # fmt: skip
    dests = (model.Dest("2001:db8::2", 53, "masq", 3),)
    assert nl.with_dests(service, dests) == dataclasses.replace(service, dests=dests)
    # with_dests names every field positionally: a new field must be added there too.
    assert [f.name for f in dataclasses.fields(model.Service)] == ["key", "scheduler", "persistent", "netmask",
                                                                   "flags", "pe_name", "stats", "rates", "dests"]


# -- whole datagrams of real servers, and services, read by their shape ------------------------


def datagram(messages: list[bytes], sequence: int) -> bytes:
    return StandInKernel.stamped(messages, sequence, NLM_F_MULTI)


def read_dests(data: bytes, sequence: int) -> tuple[list, bool, collections.Counter]:
    skipped = collections.Counter()
    dests, complete = fd.FastDecoder.dest_replies(batch_marshal(), "inet", skipped, data, sequence)
    return dests, complete, skipped


@pytest.fixture
def fresh_layouts(monkeypatch):
    monkeypatch.setattr(fd, "DEST_LAYOUTS", fd.DestLayouts())
    monkeypatch.setattr(fd, "SERVICE_SHAPES", fd.ServiceShapes())


def spy(monkeypatch, owner, name: str) -> list:
    """Record the calls of owner.name (still made) in the list returned."""
    calls, real = [], getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *args: calls.append(args) or real(*args))
    return calls


def test_a_datagram_of_real_servers_of_a_known_shape_is_read_at_once(fresh_layouts, monkeypatch):
    messages = [kernel_dest(ADDR=v4(f"10.0.2.{i}"), WEIGHT=i, PORT=9000 + i, FWD_METHOD=i % 4) for i in range(12)]
    expected = [nl.NlaDecoder.dest(both(message)[0], "inet", collections.Counter()) for message in messages]
    replies = spy(monkeypatch, fd.BatchMarshal, "replies")
    assert read_dests(datagram(messages, 7), 7) == (expected, False, {})
    assert len(replies) == 1 and fd.DEST_LAYOUTS.by_length  # walked once, and its shape kept
    assert read_dests(datagram(messages, 8), 8) == (expected, False, {})
    assert read_dests(datagram(messages[3:5], 9), 9) == (expected[3:5], False, {})  # any number of them
    assert len(replies) == 1  # neither went through the marshal


def test_a_datagram_is_read_by_its_shape_only_when_every_header_of_every_message_matches(fresh_layouts, monkeypatch):
    messages = [kernel_dest(ADDR=v4(f"10.0.3.{i}"), WEIGHT=i) for i in range(1, 6)]
    expected = [nl.NlaDecoder.dest(both(message)[0], "inet", collections.Counter()) for message in messages]
    read_dests(datagram(messages, 7), 7)
    replies = spy(monkeypatch, fd.BatchMarshal, "replies")
    # A reply to an earlier request (another sequence number) is no real server of this one.
    assert read_dests(datagram(messages, 6), 7) == ([], False, {})
    # One header changed in the middle message: the weight's attribute type is one of a newer kernel.
    other = bytearray(messages[2])
    weight_type = other.index(struct.pack("=HHI", 8, nl.DEST_ATTR_WEIGHT, 3)) + 2
    struct.pack_into("=H", other, weight_type, 99)  # an attribute type the decoder does not know
    mixed = messages[:2] + [bytes(other)] + messages[3:]
    dests, complete, skipped = read_dests(datagram(mixed, 8), 8)
    assert dests[2].weight == 0 and dests[:2] + dests[3:] == expected[:2] + expected[3:]
    assert skipped == {nl.SKIP_UNKNOWN_ATTRIBUTES: 1} and not complete
    # A dump's end in the same datagram: not a real server, and the answer is complete.
    assert read_dests(datagram(messages, 9) + done(9), 9) == (expected, True, {})
    assert len(replies) == 3  # each of these went through the marshal


def test_services_are_read_by_their_shape_after_the_first_poll(fresh_layouts, monkeypatch):
    def service(scheduler: str, conns: int, address: str = "10.0.9.1") -> bytes:
        counters = dict(STATS, CONNS=conns)
        nest = {"attrs": [("IPVS_SVC_ATTR_AF", socket.AF_INET), ("IPVS_SVC_ATTR_PROTOCOL", 6),
                          ("IPVS_SVC_ATTR_ADDR", v4(address)), ("IPVS_SVC_ATTR_PORT", 443),
                          ("IPVS_SVC_ATTR_SCHED_NAME", scheduler),
                          ("IPVS_SVC_ATTR_FLAGS", {"flags": 1, "mask": U32_MAX}),
                          ("IPVS_SVC_ATTR_TIMEOUT", 300), ("IPVS_SVC_ATTR_NETMASK", b"\xff" * 4),
                          ("IPVS_SVC_ATTR_STATS", stats_nest({k: v & U32_MAX for k, v in counters.items()}, pad=False)),
                          ("IPVS_SVC_ATTR_STATS64", stats_nest(counters, pad=False))]}  # fmt: skip
        return encode(nl.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", nest)])

    walked = spy(monkeypatch, fd.FastDecoder, "_service")
    first = agree("service", service("wlc", 5))[0]
    assert (first.scheduler, first.persistent, first.stats.conns) == ("wlc", 300, 5) and len(walked) == 1
    # The next poll: new counters behind the same bytes, read without a walk.
    later = agree("service", service("wlc", 6))[0]
    assert later.stats.conns == 6 and later.key == first.key and len(walked) == 1
    # Anything before the counters changed (here the scheduler, as long as before; the address):
    # decoded anew, read in one unpack where the first message of that length had its values, not walked.
    laid_out = spy(monkeypatch, fd, "service_from_values")
    changed = agree("service", service("sed", 6))[0]
    assert changed.scheduler == "sed" and len(walked) == 1 and len(laid_out) == 1  # then read by its bytes
    assert agree("service", service("wlc", 7, "10.0.9.2"))[0].key.address == "10.0.9.2" and len(laid_out) == 2
    # The same length but a header that differs ("rr" pads to the length of "wlc", but its
    # attribute says 7 bytes, not 8): that layout does not fit, so it is walked.
    assert len(service("rr", 7)) == len(service("wlc", 7))
    assert agree("service", service("rr", 7))[0].scheduler == "rr" and len(walked) == 2 and len(laid_out) == 2


@EXAMPLES
@given(service_messages(packed=True), service_messages(packed=True))
def test_a_service_read_through_the_values_of_a_layout_decodes_the_same(data, other):
    """A layout reads a service's values by position: whatever the message it was learnt from,
    the values it reads of that message and of any other that fits its headers decode as
    pyroute2 decodes them (unknown attributes counted as the layout counts them), or not at all
    (None: the caller then decodes the attributes as before)."""
    learnt_from = both(data)[1]
    if fd.ATTRIBUTES_START + struct.unpack_from("=H", data, fd.ATTRIBUTES_START)[0] != len(data):
        return  # a layout is learnt of a message that is one service nest (ServiceShapes._shape)
    layout = fd.ServiceLayout.learn(learnt_from, (0, 0))  # where the counters are matters only to ServiceShapes
    if layout is None:
        return
    for message in (data, other):
        slow, fast = both(message)
        expected_skipped = collections.Counter()
        expected = nl.NlaDecoder.service(slow, expected_skipped)
        values = layout.values(fast.data, fast.offset) if fast.length == learnt_from.length else None
        found = fd.service_from_values(values) if values is not None else None
        if found is not None:
            assert found == expected
            assert layout.unknown == expected_skipped
        elif message is data and layout.pick is not None:
            # Its own values always fit; they decode unless pyroute2's decoding refuses them too.
            assert values is not None and (expected is None or expected.key.fwmark == 0 and expected.key.port is None)


def test_a_first_poll_of_services_of_one_layout_reads_their_values_in_one_unpack(fresh_layouts, monkeypatch):
    walked = spy(monkeypatch, fd.FastDecoder, "_service")
    by_attributes = spy(monkeypatch, fd.FastDecoder, "_service_of")
    messages = [kernel_service(index) for index in range(30)]
    for key, message in messages:
        skipped = collections.Counter()
        service = fd.FastDecoder.service(both(message)[1], skipped)
        assert service == nl.NlaDecoder.service(both(message)[0], collections.Counter()) and service.key == key
        assert not skipped
    assert len(walked) == 1 and len(by_attributes) == 1  # the first one only, walked and decoded from its attributes
    # One that fits the layout's headers but whose values do not decode (an unknown protocol) is
    # decoded from its attributes, and counted as undecodable as before.
    odd = bytearray(messages[5][1])
    protocol_at = odd.index(struct.pack("=HHH", 6, nl.SVC_ATTR_PROTOCOL, 6)) + 4
    struct.pack_into("=H", odd, protocol_at, 99)
    skipped = collections.Counter()
    assert fd.FastDecoder.service(both(bytes(odd))[1], skipped) is None
    assert skipped == {nl.SKIP_UNDECODABLE: 1} and len(walked) == 1 and len(by_attributes) == 2


def test_a_service_whose_counters_do_not_end_it_is_always_walked(fresh_layouts, monkeypatch):
    nest = {"attrs": [("IPVS_SVC_ATTR_AF", socket.AF_INET), ("IPVS_SVC_ATTR_FWMARK", 7),
                      ("IPVS_SVC_ATTR_STATS64", stats_nest(STATS, pad=False)), ("IPVS_SVC_ATTR_SCHED_NAME", "rr"),
                      ("IPVS_SVC_ATTR_FLAGS", {"flags": 0, "mask": U32_MAX})]}  # fmt: skip
    walked = spy(monkeypatch, fd.FastDecoder, "_service")
    for _ in range(3):
        assert agree("service", encode(nl.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", nest)]))[0].key.fwmark == 7
    assert len(walked) == 6  # agree decodes twice a call


# -- real servers unchanged since the poll before ----------------------------------------------


def polls_through_one_socket(kernel: StandInKernel, changes) -> list[nl.IpvsDump]:
    """A poll, then one more after each of `changes` (a function changing the stand-in's answers)."""
    sock = nl.IpvsSocket(fd.FastDecoder, use_socket=kernel.sock)
    sock.asyncore.marshal.msg_map[FAMILY_ID] = fd.FastDecoder.message
    sock.asyncore._prid = FAMILY_ID
    try:
        polls = [sock.read_all(collections.Counter())]
        for change in changes:
            change()
            polls.append(sock.read_all(collections.Counter()))
        return polls
    finally:
        sock.close()


def test_a_real_server_unchanged_since_the_poll_before_is_the_same_object(fresh_layouts):
    kernel = StandInKernel(services=3, dests=5)
    dumps = kernel.dumps[dest_payload(1)]

    def busier():  # the second real server of the second service: one connection more
        dumps[1] = kernel_dest(ADDR=v4("172.16.1.2"), WEIGHT=1, PORT=8001, ACTIVE_CONNS=6)

    def removed():
        del dumps[4]

    def unchanged():
        pass

    try:
        first, second, third, fourth, fifth = polls_through_one_socket(
            kernel, [unchanged, busier, removed, unchanged])  # fmt: skip
    finally:
        kernel.close()
    # The first poll kept nothing (a --once process polls once): only the third is the second's again.
    assert not any(a is b for s, t in zip(first.services, second.services) for a, b in zip(s.dests, t.dests))
    identical = [[a is b for a, b in zip(s.dests, t.dests)] for s, t in zip(second.services, third.services)]
    assert identical == [[True] * 5, [True, False, True, True, True], [True] * 5]
    assert third.services[1].dests[1].active_conns == 6 and second.services[1].dests[1].active_conns == 5
    assert len(fourth.services[1].dests) == 4 and all(a is b for a, b in zip(third.services[1].dests, fourth.services[1].dests))
    assert all(a is b for s, t in zip(fourth.services, fifth.services) for a, b in zip(s.dests, t.dests))
    # Equal values whichever way they came: the same as a fresh decoder's (first) and pyroute2's.
    kernel = StandInKernel(services=3, dests=5)
    try:
        slow = poll_through_socket(kernel, nl.NlaDecoder)
    finally:
        kernel.close()
    assert first == second == slow


def test_the_memory_forgets_real_servers_gone_and_keeps_none_of_another_family():
    memory = fd.DestMemory()
    memory.turn()  # past a socket's first poll, which keeps nothing
    row = (v4("10.0.0.1"), socket.htons(80), 0, 1, 0, 0, 0, 0, 0, socket.AF_INET) + (0,) * 10
    foreign = row[:9] + (99,) + row[10:]  # a family the decoder does not know: the service's decides
    skipped = collections.Counter()
    first = fd._dests_of_rows([row, foreign], "inet", memory, skipped)
    memory.turn()
    again = fd._dests_of_rows([row, foreign], "inet6", memory, skipped)
    assert again[0] is first[0] and first[0].af == "inet"
    assert (first[1].af, again[1].af) == ("inet", "inet6")  # decoded anew under each service
    assert list(memory.current) == [row]
    memory.turn()
    memory.turn()  # a poll that did not see it
    assert fd._dests_of_rows([row], "inet", memory, skipped)[0] is not first[0] and not skipped


@pytest.mark.parametrize("remembering", [False, True])
def test_an_undecodable_real_server_is_counted_and_its_neighbours_kept(remembering):
    memory = None
    if remembering:
        memory = fd.DestMemory()
        memory.turn()  # past a socket's first poll, which keeps nothing
    row = (v4("10.0.0.1"), socket.htons(80), 0, 1, 0, 0, 0, 0, 0, socket.AF_INET) + (0,) * 10
    unknown_method = row[:2] + (5,) + row[3:]  # forwarding method 5: none the kernel has
    other = (v4("10.0.0.2"),) + row[1:]
    skipped = collections.Counter()
    dests = fd._dests_of_rows([row, unknown_method, other], "inet", memory, skipped)
    assert [dest and dest.address for dest in dests] == ["10.0.0.1", None, "10.0.0.2"]
    assert skipped == {nl.SKIP_UNDECODABLE: 1}
