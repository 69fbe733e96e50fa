"""IPVS messages decoded from bytes built with pyroute2's own encoder; backend refusals that need no IPVS."""

from __future__ import annotations

import collections
import socket
import sys

import pytest
from pyroute2.netlink import NLM_F_MULTI, genlmsg, nla

from ipvsman import model
from ipvsman.backend import BackendError, IpvsUnavailable
from ipvsman.kernel import netlink as nl
from ipvsman.kernel.backend import KernelBackend

FAMILY_ID = 0x23  # any generic netlink family id: decoding does not depend on it


def encode(command: int, attrs, cls=nl.ipvs_message) -> bytes:
    """A reply as the kernel would send it, encoded by pyroute2."""
    msg = cls()
    msg["cmd"] = command
    msg["version"] = nl.GENL_VERSION
    msg["header"]["type"] = FAMILY_ID
    msg["header"]["flags"] = NLM_F_MULTI
    msg["header"]["sequence_number"] = 7
    msg["attrs"] = attrs
    msg.encode()
    return bytes(msg.data)


def decode(data: bytes):
    msg = nl.message_for(data)
    msg.decode()
    return msg


def stats_nest(values: dict, pad: bool = True) -> dict:
    attrs = []
    for name, value in values.items():
        if pad and name in ("INBYTES", "OUTBYTES"):
            attrs.append(("IPVS_STATS_ATTR_PAD", None))  # what nla_put_u64_64bit adds
        attrs.append(("IPVS_STATS_ATTR_" + name, value))
    return {"attrs": attrs}


BIG = 2**40 + 5  # needs 64 bits
STATS64 = {
    "CONNS": BIG,
    "INPKTS": BIG + 1,
    "OUTPKTS": 12,
    "INBYTES": BIG * 3,
    "OUTBYTES": 99,
    "CPS": 4,
    "INPPS": 40,
    "OUTPPS": 41,
    "INBPS": 4000,
    "OUTBPS": 4100,
}
STATS32 = {name: value & 0xFFFFFFFF for name, value in STATS64.items()}


def v4(text: str) -> bytes:
    return socket.inet_aton(text) + bytes(12)  # union nf_inet_addr: always 16 bytes


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def service_nest(**overrides) -> dict:
    attrs = {
        "AF": socket.AF_INET,
        "PROTOCOL": socket.IPPROTO_TCP,
        "ADDR": v4("10.0.0.1"),
        "PORT": 80,
        "SCHED_NAME": "wlc",
        "FLAGS": {"flags": nl.SVC_F_PERSISTENT | nl.SVC_F_HASHED, "mask": 0xFFFFFFFF},
        "TIMEOUT": 300,
        "NETMASK": socket.inet_aton("255.255.255.0"),
        "STATS": stats_nest(STATS32),
        "STATS64": stats_nest(STATS64),
    }
    attrs.update(overrides)
    return {"attrs": [("IPVS_SVC_ATTR_" + name, value) for name, value in attrs.items() if value is not None]}


def service_message(**overrides) -> bytes:
    return encode(nl.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", service_nest(**overrides))])


def test_a_persistent_tcp_service_with_64_bit_stats():
    skipped = collections.Counter()
    service = nl.NlaDecoder.service(decode(service_message()), skipped)
    assert service.key == model.ServiceKey("inet", "tcp", "10.0.0.1", 80)
    assert (service.scheduler, service.persistent, service.netmask) == ("wlc", 300, "255.255.255.0")
    assert service.flags == ("persistent",)
    assert service.pe_name is None
    assert service.stats == model.Stats(BIG, BIG + 1, 12, BIG * 3, 99)
    assert service.rates == model.Rates(4, 40, 41, 4000, 4100)
    assert not skipped


def test_32_bit_stats_when_the_kernel_sends_no_stats64():
    service = nl.NlaDecoder.service(decode(service_message(STATS64=None)), collections.Counter())
    assert service.stats == model.Stats(*(STATS32[n] for n in ("CONNS", "INPKTS", "OUTPKTS", "INBYTES", "OUTBYTES")))


def test_an_ipv6_udp_service_with_a_prefix_length_and_a_pe():
    raw_prefix = (64).to_bytes(4, sys.byteorder)  # ipvsadm -M 64 sends the length as a host u32
    data = service_message(
        AF=socket.AF_INET6,
        PROTOCOL=socket.IPPROTO_UDP,
        ADDR=v6("fd00::1"),
        PORT=5060,
        NETMASK=raw_prefix,
        PE_NAME="sip",
        FLAGS={"flags": nl.SVC_F_PERSISTENT | nl.SVC_F_ONEPACKET, "mask": 0xFFFFFFFF},
    )
    service = nl.NlaDecoder.service(decode(data), collections.Counter())
    assert service.key == model.ServiceKey("inet6", "udp", "fd00::1", 5060)
    assert (service.netmask, service.pe_name, service.flags) == ("64", "sip", ("persistent", "ops"))


def test_fwmark_and_sctp_services():
    fwmark = service_message(PROTOCOL=None, ADDR=None, PORT=None, FWMARK=7, FLAGS={"flags": 0, "mask": 0})
    service = nl.NlaDecoder.service(decode(fwmark), collections.Counter())
    assert service.key == model.ServiceKey("inet", None, "", 0, 7)
    assert service.persistent is None and service.flags == ()
    sctp = service_message(PROTOCOL=socket.IPPROTO_SCTP, SCHED_NAME="sh",
                           FLAGS={"flags": nl.SVC_F_SCHED1 | nl.SVC_F_SCHED2, "mask": 0xFFFFFFFF})
    service = nl.NlaDecoder.service(decode(sctp), collections.Counter())
    assert service.key.protocol == "sctp"
    assert service.flags == ("sh-fallback", "sh-port")


# Not subclasses of the real classes: pyroute2 caches a compiled nla map per class hierarchy.
class service_from_a_newer_kernel(nla):
    """The service nest with two attributes this kernel's ip_vs.h does not have yet."""

    nla_map = nl.ipvs_service.nla_map + (
        (13, "IPVS_SVC_ATTR_FUTURE", "uint32"),
        (14, "IPVS_SVC_ATTR_FUTURE2", "asciiz"),
    )
    service_flags = nl.ipvs_service_flags
    stats = nl.ipvs_stats
    stats64 = nl.ipvs_stats64


class message_from_a_newer_kernel(genlmsg):
    nla_map = ((nl.CMD_ATTR_SERVICE, "IPVS_CMD_ATTR_SERVICE", "service"),)
    service = service_from_a_newer_kernel


def test_unknown_attributes_are_counted_and_the_rest_decoded():
    nest = service_nest()
    nest["attrs"] += [("IPVS_SVC_ATTR_FUTURE", 1), ("IPVS_SVC_ATTR_FUTURE2", "x")]
    data = encode(nl.CMD_NEW_SERVICE, [("IPVS_CMD_ATTR_SERVICE", nest)], cls=message_from_a_newer_kernel)
    skipped = collections.Counter()
    service = nl.NlaDecoder.service(decode(data), skipped)
    assert service.key == model.ServiceKey("inet", "tcp", "10.0.0.1", 80)
    assert skipped == {nl.SKIP_UNKNOWN_ATTRIBUTES: 2}


@pytest.mark.parametrize(
    "attrs",
    [
        [],  # no service nest at all
        [("IPVS_CMD_ATTR_SERVICE", service_nest(AF=99))],  # unknown family
        [("IPVS_CMD_ATTR_SERVICE", service_nest(PROTOCOL=47))],  # GRE is not an IPVS protocol
        [("IPVS_CMD_ATTR_SERVICE", service_nest(ADDR=b"\x01"))],  # too short for an address
    ],
)
def test_undecodable_services_are_skipped_and_counted(attrs):
    skipped = collections.Counter()
    assert nl.NlaDecoder.service(decode(encode(nl.CMD_NEW_SERVICE, attrs)), skipped) is None
    assert skipped[nl.SKIP_UNDECODABLE] == 1


def dest_message(**overrides) -> bytes:
    attrs = {
        "ADDR": v4("10.0.1.1"),
        "PORT": 8080,
        "FWD_METHOD": 0,
        "WEIGHT": 3,
        "U_THRESH": 100,
        "L_THRESH": 10,
        "ACTIVE_CONNS": 5,
        "INACT_CONNS": 6,
        "PERSIST_CONNS": 7,
        "STATS": stats_nest(STATS32),
        "ADDR_FAMILY": socket.AF_INET,
        "STATS64": stats_nest(STATS64),
        "TUN_TYPE": 0,
        "TUN_PORT": 0,
        "TUN_FLAGS": 0,
    }
    attrs.update(overrides)
    nest = {"attrs": [("IPVS_DEST_ATTR_" + name, value) for name, value in attrs.items() if value is not None]}
    return encode(nl.CMD_NEW_DEST, [("IPVS_CMD_ATTR_DEST", nest)])


@pytest.mark.parametrize("number, name", sorted(nl.FORWARD_METHODS.items()))
def test_real_servers_of_every_forwarding_method(number, name):
    dest = nl.NlaDecoder.dest(decode(dest_message(FWD_METHOD=number)), "inet", collections.Counter())
    assert dest == model.Dest(
        address="10.0.1.1",
        port=8080,
        forward=name,
        weight=3,
        upper_threshold=100,
        lower_threshold=10,
        active_conns=5,
        inactive_conns=6,
        persist_conns=7,
        stats=model.Stats(BIG, BIG + 1, 12, BIG * 3, 99),
        rates=model.Rates(4, 40, 41, 4000, 4100),
        af="inet",
    )


def test_an_ipv6_real_server_and_one_from_an_old_kernel_without_family():
    dest = nl.NlaDecoder.dest(
        decode(dest_message(ADDR=v6("fd00::2"), ADDR_FAMILY=socket.AF_INET6)), "inet", collections.Counter()
    )
    assert (dest.address, dest.af) == ("fd00::2", "inet6")
    # Before ADDR_FAMILY existed a real server always had its service's family.
    old = dest_message(ADDR=v6("fd00::3"), ADDR_FAMILY=None, STATS64=None, TUN_TYPE=None, TUN_PORT=None, TUN_FLAGS=None)
    dest = nl.NlaDecoder.dest(decode(old), "inet6", collections.Counter())
    assert (dest.address, dest.af, dest.stats.conns) == ("fd00::3", "inet6", BIG & 0xFFFFFFFF)


def test_unknown_forwarding_method_is_skipped():
    skipped = collections.Counter()
    assert nl.NlaDecoder.dest(decode(dest_message(FWD_METHOD=4)), "inet", skipped) is None  # bypass
    assert skipped[nl.SKIP_UNDECODABLE] == 1


def test_dest_config_keeps_what_set_dest_needs():
    data = dest_message(FWD_METHOD=2, TUN_TYPE=1, TUN_PORT=6080, TUN_FLAGS=1)
    config = nl.NlaDecoder.dest_config(decode(data), "inet")
    assert config == nl.DestConfig("10.0.1.1", 8080, "inet", 2, 3, 100, 10, 1, 6080, 1)


def test_set_dest_request_carries_every_field_of_the_live_real_server():
    """The pyroute2 trap: SET_DEST without FWD_METHOD etc. would turn a NAT server into DR."""
    config = nl.DestConfig("10.0.1.1", 8080, "inet", 0, 9, 100, 10)
    msg = nl.request_message(
        nl.CMD_SET_DEST,
        [
            ("IPVS_CMD_ATTR_SERVICE", nl.service_key_attrs(model.ServiceKey("inet", "tcp", "10.0.0.1", 80))),
            ("IPVS_CMD_ATTR_DEST", nl.dest_config_attrs(config)),
        ],
    )
    msg["header"]["type"] = FAMILY_ID
    msg.encode()
    sent = decode(bytes(msg.data))
    assert sent["cmd"] == nl.CMD_SET_DEST
    service = sent.get_attr("IPVS_CMD_ATTR_SERVICE")
    assert [name for name, _ in service["attrs"]] == [
        "IPVS_SVC_ATTR_AF", "IPVS_SVC_ATTR_PROTOCOL", "IPVS_SVC_ATTR_ADDR", "IPVS_SVC_ATTR_PORT"
    ]
    assert service.get_attr("IPVS_SVC_ATTR_ADDR") == v4("10.0.0.1")
    assert service.get_attr("IPVS_SVC_ATTR_PORT") == 80
    dest = sent.get_attr("IPVS_CMD_ATTR_DEST")
    assert {name: value for name, value in dest["attrs"]} == {
        "IPVS_DEST_ATTR_ADDR": v4("10.0.1.1"),
        "IPVS_DEST_ATTR_PORT": 8080,
        "IPVS_DEST_ATTR_ADDR_FAMILY": socket.AF_INET,
        "IPVS_DEST_ATTR_FWD_METHOD": 0,
        "IPVS_DEST_ATTR_WEIGHT": 9,
        "IPVS_DEST_ATTR_U_THRESH": 100,
        "IPVS_DEST_ATTR_L_THRESH": 10,
    }
    # Tunnel settings travel only when the kernel reported them (they would reset otherwise).
    tunnel = nl.dest_config_attrs(nl.DestConfig("10.0.1.1", 80, "inet", 2, 1, 0, 0, 1, 6080, 1))
    assert ("IPVS_DEST_ATTR_TUN_PORT", 6080) in tunnel["attrs"]


def test_fwmark_service_key_request():
    attrs = nl.service_key_attrs(model.ServiceKey("inet6", None, "", 0, 8))["attrs"]
    assert attrs == [("IPVS_SVC_ATTR_AF", socket.AF_INET6), ("IPVS_SVC_ATTR_FWMARK", 8)]


def test_daemons_master_and_backup():
    def daemon(**attrs):
        nest = {"attrs": [("IPVS_DAEMON_ATTR_" + name, value) for name, value in attrs.items()]}
        return decode(encode(nl.CMD_NEW_DAEMON, [("IPVS_CMD_ATTR_DAEMON", nest)]))

    skipped = collections.Counter()
    master = nl.NlaDecoder.daemon(
        daemon(STATE=1, MCAST_IFN="va", SYNC_ID=10, SYNC_MAXLEN=1472, MCAST_PORT=8848, MCAST_TTL=1,
               MCAST_GROUP=socket.inet_aton("224.0.0.81")),
        skipped,
    )
    assert master == model.Daemon("master", "va", 10, 1472, "224.0.0.81", 8848, 1)
    backup = nl.NlaDecoder.daemon(
        daemon(STATE=2, MCAST_IFN="vb", SYNC_ID=11, SYNC_MAXLEN=1452, MCAST_PORT=9000, MCAST_TTL=4,
               MCAST_GROUP6=v6("ff02::81")),
        skipped,
    )
    assert backup == model.Daemon("backup", "vb", 11, 1452, "ff02::81", 9000, 4)
    old_kernel = nl.NlaDecoder.daemon(daemon(STATE=2, MCAST_IFN="eth0", SYNC_ID=3), skipped)
    assert old_kernel == model.Daemon("backup", "eth0", 3, 0, "224.0.0.81", 8848, 1)
    assert not skipped
    assert nl.NlaDecoder.daemon(daemon(STATE=4, MCAST_IFN="x", SYNC_ID=1), skipped) is None
    assert skipped[nl.SKIP_UNDECODABLE] == 1


def test_info_reply_reuses_attribute_numbers_and_gets_its_own_class():
    data = encode(
        nl.CMD_SET_INFO,
        [("IPVS_INFO_ATTR_VERSION", 0x010201), ("IPVS_INFO_ATTR_CONN_TAB_SIZE", 4096)],
        cls=nl.ipvs_info_message,
    )
    msg = decode(data)
    assert isinstance(msg, nl.ipvs_info_message)
    assert nl.NlaDecoder.info(msg) == model.IpvsInfo("1.2.1", 4096)


def test_config_reply_gives_the_timeouts():
    data = encode(
        nl.CMD_SET_CONFIG,
        [
            ("IPVS_CMD_ATTR_TIMEOUT_TCP", 900),
            ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", 120),
            ("IPVS_CMD_ATTR_TIMEOUT_UDP", 300),
        ],
    )
    assert nl.NlaDecoder.timeouts(decode(data)) == model.Timeouts(900, 120, 300)


def test_flag_names():
    assert nl.service_flag_names(nl.SVC_F_HASHED, "rr") == ()
    assert nl.service_flag_names(nl.SVC_F_SCHED1 | nl.SVC_F_SCHED3, "wrr") == ("flag-1", "flag-3")
    assert nl.service_flag_names(nl.SVC_F_SCHED2, "mh") == ("mh-port",)
    assert nl.service_flag_names(0x100, "rr") == ("0x100",)


def test_services_sort_like_ipvsadm():
    def service(af, protocol, address, port, fwmark=0):
        return model.Service(model.ServiceKey(af, protocol, address, port, fwmark), "rr")

    services = [
        service("inet", None, "", 0, 8),
        service("inet6", "tcp", "fd00::1", 443),
        service("inet", "sctp", "10.0.0.1", 9),
        service("inet", "udp", "10.0.0.2", 5060),
        service("inet", "udp", "10.0.0.1", 53),
        service("inet", "tcp", "10.0.0.10", 80),
        service("inet", "tcp", "10.0.0.9", 80),
    ]
    ordered = sorted(services, key=nl.service_order)
    assert [s.key.endpoint for s in ordered] == [
        "10.0.0.9:80", "10.0.0.10:80", "10.0.0.1:53", "10.0.0.2:5060", "10.0.0.1:9", "[fd00::1]:443", "FWM 8"
    ]


def test_a_missing_ipvs_family_says_how_to_load_it(monkeypatch, capfd):
    """The kernel's generic netlink controller answers ENOENT for an unknown family."""
    monkeypatch.setattr(nl, "GENL_NAME", "IPVS-absent")
    backend = KernelBackend()
    with pytest.raises(IpvsUnavailable) as raised:
        backend.open()
    assert str(raised.value) == "the ip_vs module is not loaded: run 'modprobe ip_vs' as root"
    backend.close()
    assert capfd.readouterr().err == ""  # pyroute2 logs nothing on the terminal


@pytest.mark.parametrize(
    "name, message",
    [
        ("ipvsman-no-such-namespace", "no network namespace named 'ipvsman-no-such-namespace'"),
        ("../etc", "not a network namespace name: '../etc'"),
    ],
)
def test_a_bad_namespace_is_one_clear_line(name, message):
    backend = KernelBackend(netns=name)
    with pytest.raises(BackendError) as raised:
        backend.open()
    assert message in str(raised.value) and "\n" not in str(raised.value)
    backend.close()


def test_a_backend_that_is_not_open_refuses_politely():
    backend = KernelBackend()
    with pytest.raises(BackendError, match="not open"):
        backend.poll()
    with pytest.raises(BackendError, match="weight must be 0-65535"):
        backend.set_weight(model.DestKey(model.ServiceKey("inet", "tcp", "10.0.0.1", 80), "10.0.1.1", 80), -1)
    with pytest.raises(BackendError, match="not an IP address"):
        backend.add_dest(model.ServiceKey("inet", "tcp", "10.0.0.1", 80), "10.0.1.x", 80, "masq", 1)
    with pytest.raises(BackendError, match="forwarding method must be one of masq, local, tunnel, route"):
        backend.add_dest(model.ServiceKey("inet", "tcp", "10.0.0.1", 80), "10.0.1.1", 80, "nat", 1)
