"""The fast decoder and pyroute2's own decoding agree on every field of real kernel dumps."""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import pytest

from ipvsman import model
from ipvsman.kernel import netlink as nl
from ipvsman.kernel.backend import KernelBackend, enter_netns
from ipvsman.kernel.fastdecode import FastDecoder, RawMessage

pytestmark = pytest.mark.kernel

# Every kind of service and real server the kernel can report: both families, fwmarks, SCTP,
# persistence with netmasks, one-packet scheduling, scheduler flags, a persistence engine,
# every forwarding method, thresholds and tunnel settings.
SERVICES = """
set -e
ipvsadm -A -t 10.0.0.1:80 -s wlc
ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 3 -x 100 -y 10
ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 0
ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.3:80 -i -w 5 -x 7
ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.6:80 -i --tun-type gue --tun-port 6080 --tun-nocsum
ipvsadm -A -u 10.0.0.1:53 -s rr -p 300 -M 255.255.255.0
ipvsadm -a -u 10.0.0.1:53 -r 10.0.1.1:53 -m
ipvsadm -A -u 10.0.0.2:5000 -s rr -p 60 -o
ipvsadm -A -u 10.0.0.3:5060 -s rr -p 60 --pe sip
ipvsadm -a -u 10.0.0.3:5060 -r 10.0.1.7:5060 -m
ipvsadm -A --sctp-service 10.0.0.1:9 -s sh -b sh-port,sh-fallback
ipvsadm -a --sctp-service 10.0.0.1:9 -r 10.0.1.4:9 -m -w 2
ipvsadm -A -f 7 -s wrr -p 60
ipvsadm -a -f 7 -r 10.0.1.5:0 -g -w 4
ipvsadm -A -f 8 -6 -s lc
ipvsadm -a -f 8 -6 -r [fd00::5]:0 -i
ipvsadm -A -t [fd00::1]:443 -s rr -p 30 -M 64
ipvsadm -a -t [fd00::1]:443 -r [fd00::2]:443 -m -w 7
ipvsadm -A -u [fd00::1]:53 -s wrr
ip link add sync0 type veth peer name sync1
ip link set sync0 up
ip link set sync1 up
ipvsadm --start-daemon master --mcast-interface sync0 --syncid 3
ipvsadm --start-daemon backup --mcast-interface sync1 --syncid 4
"""


def raw_dump(sock: nl.IpvsSocket) -> dict:
    """The byte strings of every reply of one poll's requests, kept apart from any decoding."""

    def data(msg: RawMessage) -> bytes:
        return bytes(msg.data[msg.offset : msg.offset + msg.length])

    def request(*args):
        return [data(msg) for msg in sock._run(sock.asyncore.request, *args)]

    services = request(nl.CMD_GET_SERVICE, (), nl.DUMP)
    dests = {}
    for raw in services:
        msg = RawMessage(raw)
        msg.decode()
        key = FastDecoder.service(msg, collections.Counter()).key
        dests[key] = request(nl.CMD_GET_DEST, [("IPVS_CMD_ATTR_SERVICE", nl.service_key_attrs(key))], nl.DUMP)
    return {
        "info": request(nl.CMD_GET_INFO),
        "config": request(nl.CMD_GET_CONFIG),
        "services": services,
        "dests": dests,
        "daemons": request(nl.CMD_GET_DAEMON, (), nl.DUMP),
    }


def decoded(raw: bytes):
    """The message as each decoder's marshal would hand it over: (pyroute2's, RawMessage)."""
    slow = nl.message_for(raw)
    slow.decode()
    fast = RawMessage(raw)
    fast.decode()
    return slow, fast


def both(method: str, raw: bytes, *args):
    slow, fast = decoded(raw)
    slow_skipped, fast_skipped = collections.Counter(), collections.Counter()
    slow_value = getattr(nl.NlaDecoder, method)(slow, *args, slow_skipped)
    fast_value = getattr(FastDecoder, method)(fast, *args, fast_skipped)
    return (slow_value, slow_skipped), (fast_value, fast_skipped)


@pytest.fixture
def in_netns(netns):
    pool = ThreadPoolExecutor(1, initializer=enter_netns, initargs=(netns.name,))
    yield lambda function, *args: pool.submit(function, *args).result(timeout=600)
    pool.shutdown()


def add_local_dest():
    """ipvsadm has no switch for local-node forwarding; the backend can add such a real server."""
    backend = KernelBackend()
    backend.open()
    try:
        backend.add_dest(model.ServiceKey("inet", "tcp", "10.0.0.1", 80), "127.0.0.1", 80, "local", 2)
    finally:
        backend.close()


def test_both_decoders_agree_on_every_field_of_a_real_dump(netns, in_netns, monkeypatch):
    netns.run(SERVICES)
    in_netns(add_local_dest)

    def dump():
        sock = nl.IpvsSocket(FastDecoder)  # RawMessage keeps the bytes; both decoders read them
        sock.open_family()
        try:
            return raw_dump(sock)
        finally:
            sock.close()

    raw = in_netns(dump)
    assert len(raw["services"]) == 9 and len(raw["daemons"]) == 2

    services = []
    for message in raw["services"]:
        slow, fast = both("service", message)
        assert fast == slow and not fast[1], fast
        services.append(fast[0])
    for service in services:
        messages = raw["dests"][service.key]
        assert messages or service.key.port in (5000, 53), service.key  # two services have no real server
        for message in messages:
            slow, fast = both("dest", message, service.key.af)
            assert fast == slow and not fast[1], fast
            slow_msg, fast_msg = decoded(message)
            config = FastDecoder.dest_config(fast_msg, service.key.af)
            assert config == nl.NlaDecoder.dest_config(slow_msg, service.key.af) and config is not None
    for message in raw["daemons"]:
        slow, fast = both("daemon", message)
        assert fast == slow and fast[0] is not None
    (info,), (config,) = raw["info"], raw["config"]
    assert FastDecoder.info(decoded(info)[1]) == nl.NlaDecoder.info(decoded(info)[0])
    assert FastDecoder.timeouts(decoded(config)[1]) == nl.NlaDecoder.timeouts(decoded(config)[0])

    # What the dump held, so that the comparisons above covered every kind.
    by_key = {service.key: service for service in services}
    forwards = {d.forward for s in services for d in raw_dests(raw, s)}
    assert forwards == {"masq", "local", "tunnel", "route"}
    assert {"inet", "inet6"} == {key.af for key in by_key} and any(key.fwmark for key in by_key)
    assert by_key[model.ServiceKey("inet", "udp", "10.0.0.3", 5060)].pe_name == "sip"
    tunnel = [c for s in services for c in raw_configs(raw, s) if c.tunnel_port == 6080]
    assert len(tunnel) == 1 and tunnel[0].tunnel_type is not None

    # And the whole poll through the backend: the same state either way.
    def poll(decoder):
        backend = KernelBackend(decoder=decoder)
        backend.open()
        try:
            state = backend.poll()
        finally:
            backend.close()
        return state

    fast_state, slow_state = in_netns(poll, FastDecoder), in_netns(poll, nl.NlaDecoder)
    assert fast_state.services == slow_state.services
    assert (fast_state.info, fast_state.timeouts, fast_state.daemons) == (
        slow_state.info, slow_state.timeouts, slow_state.daemons
    )
    assert fast_state.skipped == slow_state.skipped == {}

    # The poll after: every service read by its shape, every real server by its datagram's layout
    # (the poll above learnt them from the kernel's own messages), and still the same state.
    walked = []
    for name in ("_service", "dest"):
        real = getattr(FastDecoder, name)
        monkeypatch.setattr(FastDecoder, name, staticmethod(lambda *args, real=real, name=name: walked.append(name)
                                                            or real(*args)))  # fmt: skip
    again = in_netns(poll, FastDecoder)
    assert walked == [] and again.services == slow_state.services


def raw_dests(raw: dict, service: model.Service):
    return [FastDecoder.dest(decoded(m)[1], service.key.af, collections.Counter()) for m in raw["dests"][service.key]]


def raw_configs(raw: dict, service: model.Service):
    return [FastDecoder.dest_config(decoded(m)[1], service.key.af) for m in raw["dests"][service.key]]
