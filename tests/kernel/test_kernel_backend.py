"""The kernel backend against real IPVS, with ipvsadm in the same namespace as the reference."""

from __future__ import annotations

import ctypes
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ipvsadm_ref as ref
import pytest

from ipvsman import model
from ipvsman.backend import BackendError, NotPermitted
from ipvsman.kernel.backend import KernelBackend, enter_netns
from waiting import wait_until

pytestmark = pytest.mark.kernel

CAP_NET_ADMIN = 12


class Worker:
    """One thread that runs what it is given; `setup` runs first in it (setns, capabilities)."""

    def __init__(self, setup=None, *args):
        self._pool = ThreadPoolExecutor(1, initializer=setup, initargs=args)

    def __call__(self, function, *args, timeout: float = 300):
        return self._pool.submit(function, *args).result(timeout)

    def start(self, function, *args):
        return self._pool.submit(function, *args)

    def close(self):
        self._pool.shutdown(wait=True)


class OpenBackend:
    """A KernelBackend for a namespace, opened and used in its own thread (as the poller does)."""

    def __init__(self, netns_name: str, read_only: bool = False, thread_setup=None):
        self.worker = Worker(thread_setup)
        self.backend = KernelBackend(netns=netns_name, read_only=read_only)
        self.worker(self.backend.open)

    def poll(self, connections: bool = True) -> model.RawState:
        return self.worker(self.backend.poll, connections)

    def __getattr__(self, name):
        method = getattr(self.backend, name)
        return lambda *args: self.worker(method, *args)

    def close(self):
        self.worker(self.backend.close)
        self.worker.close()


@pytest.fixture
def open_backend():
    opened = []

    def opener(*args, **kwargs):
        backend = OpenBackend(*args, **kwargs)
        opened.append(backend)
        return backend

    yield opener
    for backend in opened:
        backend.close()


def drop_cap_net_admin():
    """Drop CAP_NET_ADMIN from this thread's effective set, as a non-root user lacks it."""
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0] &= ~(1 << CAP_NET_ADMIN)
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


# The kernel folds each CPU's counters into the ones it reports from its estimator timer, every
# 2 s (ip_vs_est.c, Linux 6.1): until it has run, a service that just had traffic still shows 0.
ESTIMATOR_PERIOD = 2.0


def settled(read, what: str, timeout: float = 120.0):
    """Call `read` until its reading has stayed the same for longer than the estimator's period;
    return that reading. (Two equal readings in a row can both come before the timer.)"""
    readings = [(time.monotonic(), read())]

    def stable():
        now, reading = time.monotonic(), read()
        if reading != readings[-1][1]:
            readings.clear()
        readings.append((now, reading))
        return now - readings[0][0] > ESTIMATOR_PERIOD + 0.5

    wait_until(stable, what, timeout)
    return readings[-1][1]


# -- comparing with ipvsadm --------------------------------------------------------------------


def dest_id(service: model.Service, dest: model.Dest):
    return (service.key, (dest.address, dest.port))


def assert_listing_matches(state: model.RawState, ns):
    """Services, real servers, weights, counters and settings equal what ipvsadm prints."""
    listing = ns.run("ipvsadm -Ln").stdout
    listed = ref.parse_list(listing)
    assert {s.key for s in state.services} == set(listed)
    assert state.info == ref.parse_version(listing)
    for service in state.services:
        expected = listed[service.key]
        assert service.scheduler == expected.scheduler, service.key
        assert service.persistent == expected.persistent, service.key
        assert set(service.flags) == expected.flags, service.key
        assert service.pe_name == expected.pe, service.key
        if service.persistent is not None:
            full = "255.255.255.255" if service.key.af == "inet" else "128"
            assert service.netmask == (expected.mask or full), service.key
        assert {(d.address, d.port) for d in service.dests} == set(expected.dests), service.key
        for dest in service.dests:
            row = expected.dests[(dest.address, dest.port)]
            assert (model.FORWARD_LABELS[dest.forward], dest.weight, dest.active_conns, dest.inactive_conns) == (
                row.forward, row.weight, row.active, row.inactive
            ), dest
    thresholds = ref.parse_thresholds(ns.run("ipvsadm -Ln --thresholds").stdout)
    persistent = ref.parse_persistent(ns.run("ipvsadm -Ln --persistent-conn").stdout)
    for service in state.services:
        for dest in service.dests:
            key = dest_id(service, dest)
            assert thresholds[key][:2] == (dest.upper_threshold, dest.lower_threshold), key
            assert persistent[key][:2] == (dest.weight, dest.persist_conns), key
    assert state.timeouts == ref.parse_timeouts(ns.run("ipvsadm -L --timeout").stdout)


def assert_counters_match(state: model.RawState, ns):
    service_stats, dest_stats = ref.parse_stats(ns.run("ipvsadm -Ln --stats --exact").stdout)
    assert {s.key: s.stats for s in state.services} == service_stats
    assert {dest_id(s, d): d.stats for s in state.services for d in s.dests} == dest_stats


def connection_id(conn: model.Connection):
    return (conn.protocol, conn.state, (conn.client, conn.client_port), (conn.virtual, conn.virtual_port),
            (conn.dest, conn.dest_port))


def assert_connections_match(connections, ns, slack: int = 15):
    """Same entries as ipvsadm -Lnc, read after the poll: expiries may only have run down."""
    listed = ref.parse_connections(ns.run("ipvsadm -Lnc").stdout)
    ours = sorted(connections, key=connection_id)
    theirs = sorted(listed, key=lambda c: (c.protocol, c.state, c.source, c.virtual, c.destination))
    assert [connection_id(c) for c in ours] == [
        (c.protocol, c.state, c.source, c.virtual, c.destination) for c in theirs
    ]
    for conn, row in zip(ours, theirs):
        assert 0 <= conn.expires - row.expires <= slack, (conn, row)


# -- services of every kind ---------------------------------------------------------------------

SERVICES = """
ipvsadm -A -t 10.0.0.1:80 -s wlc
ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 3 -x 100 -y 10
ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.2:80 -g -w 0
ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.3:80 -i -w 5 -x 7
ipvsadm -A -u 10.0.0.1:53 -s rr -p 300 -M 255.255.255.0
ipvsadm -a -u 10.0.0.1:53 -r 10.0.1.1:53 -m
ipvsadm -A -u 10.0.0.2:5000 -s rr -p 60 -o
ipvsadm -A --sctp-service 10.0.0.1:9 -s sh -b sh-port,sh-fallback
ipvsadm -a --sctp-service 10.0.0.1:9 -r 10.0.1.4:9 -m -w 2
ipvsadm -A -f 7 -s wrr -p 60
ipvsadm -a -f 7 -r 10.0.1.5:0 -g -w 4
ipvsadm -A -f 8 -6 -s lc
ipvsadm -a -f 8 -6 -r [fd00::5]:0 -i
ipvsadm -A -t [fd00::1]:443 -s rr -p 30 -M 64
ipvsadm -a -t [fd00::1]:443 -r [fd00::2]:443 -m -w 7
ipvsadm -A -u [fd00::1]:53 -s wrr
"""


def test_services_of_every_kind_equal_ipvsadm(netns, open_backend):
    netns.run(SERVICES)
    backend = open_backend(netns.name)
    # ipvsadm has no switch for local-node forwarding: add that real server through the backend.
    tcp80 = model.ServiceKey("inet", "tcp", "10.0.0.1", 80)
    backend.add_dest(tcp80, "127.0.0.1", 80, "local", 2)
    state = backend.poll()

    assert not state.skipped and not state.warnings
    assert len(state.services) == 8
    assert_listing_matches(state, netns)
    assert_counters_match(state, netns)
    forwards = {d.forward for s in state.services for d in s.dests}
    assert forwards == {"masq", "route", "tunnel", "local"}
    assert ref.parse_list(netns.run("ipvsadm -Ln").stdout)[tcp80].dests[("127.0.0.1", 80)].forward == "Local"
    assert state.connections == ()
    assert state.sync_version == int(netns.run("cat /proc/sys/net/ipv4/vs/sync_version").stdout)

    backend.remove_dest(model.DestKey(tcp80, "127.0.0.1", 80))
    assert ("127.0.0.1", 80) not in ref.parse_list(netns.run("ipvsadm -Ln").stdout)[tcp80].dests
    with pytest.raises(BackendError, match="no such real server"):
        backend.remove_dest(model.DestKey(tcp80, "127.0.0.1", 80))


def test_a_service_with_the_sip_persistence_engine(netns, open_backend):
    added = netns.run("ipvsadm -A -u 10.0.0.2:5060 -s rr -p 60 --pe sip", check=False)
    if added.returncode != 0:
        pytest.skip(f"no SIP persistence engine in this kernel: {added.stderr.strip()}")
    state = open_backend(netns.name).poll()
    (service,) = state.services
    assert service.pe_name == "sip"
    assert_listing_matches(state, netns)


# -- changing weights ---------------------------------------------------------------------------


def test_weight_round_trip_keeps_forwarding_and_thresholds(netns, open_backend):
    netns.run(SERVICES)
    backend = open_backend(netns.name)
    before = ref.parse_list(netns.run("ipvsadm -Ln").stdout)
    thresholds_before = ref.parse_thresholds(netns.run("ipvsadm -Ln --thresholds").stdout)
    changes = {}
    for service in backend.poll(connections=False).services:
        for dest in service.dests:
            new_weight = dest.weight + 10
            backend.set_weight(service.dest_key(dest), new_weight)
            changes[dest_id(service, dest)] = new_weight
    assert len(changes) == 8

    after = ref.parse_list(netns.run("ipvsadm -Ln").stdout)
    assert set(after) == set(before)
    for key, listed in after.items():
        for address, row in listed.dests.items():
            old = before[key].dests[address]
            assert row.weight == changes[(key, address)]
            assert row.forward == old.forward  # a NAT server stays NAT, a tunnel a tunnel
    assert ref.parse_thresholds(netns.run("ipvsadm -Ln --thresholds").stdout) == thresholds_before
    assert_listing_matches(backend.poll(connections=False), netns)

    tcp80 = model.ServiceKey("inet", "tcp", "10.0.0.1", 80)
    with pytest.raises(BackendError, match="gone"):
        backend.set_weight(model.DestKey(tcp80, "10.0.9.9", 80), 1)
    with pytest.raises(BackendError, match="weight must be"):
        backend.set_weight(model.DestKey(tcp80, "10.0.1.1", 8080), 70000)

    read_only = open_backend(netns.name, read_only=True)
    assert not read_only.backend.writable and read_only.backend.read_only_reason
    with pytest.raises(NotPermitted):
        read_only.set_weight(model.DestKey(tcp80, "10.0.1.1", 8080), 1)
    assert ref.parse_list(netns.run("ipvsadm -Ln").stdout)[tcp80].dests[("10.0.1.1", 8080)].weight == 13


# -- real traffic through a NAT director --------------------------------------------------------

VIP = "10.99.0.100"
REAL = "10.98.2.2"
REAL_PORT = 8080
CONNECTIONS = 4


def is_template(conn: model.Connection) -> bool:
    """Persistence templates: state NONE, or ASSURED once a connection through them got going
    (ip_vs_ctpl_state_name_table); fwmark templates show protocol IP."""
    return conn.is_template or conn.state == "ASSURED"


def serve(listener: socket.socket, stop: threading.Event):
    """A tiny TCP server: read a request, answer, close."""
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        with conn:
            conn.settimeout(60)
            conn.recv(4096)
            conn.sendall(b"pong " * 200)


def listen() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", REAL_PORT))
    listener.listen(16)
    return listener


def make_requests(count: int) -> int:
    received = 0
    for _ in range(count):
        with socket.create_connection((VIP, 80), timeout=60) as conn:
            conn.sendall(b"ping " * 100)
            while chunk := conn.recv(65536):
                received += len(chunk)
    return received


def test_traffic_moves_stats_and_connections(netns_pair, netns, open_backend):
    client, director = netns_pair  # va 10.99.0.1 -- vb 10.99.0.2, as the harness made them
    real = netns
    link = subprocess.run(
        ["ip", "link", "add", "d1", "netns", director.name, "type", "veth", "peer", "name", "r0", "netns", real.name],
        capture_output=True, text=True,
    )
    assert link.returncode == 0, link.stderr
    director.run(
        f"ip addr add {VIP}/32 dev vb && ip addr add 10.98.2.1/24 dev d1 && ip link set d1 up"
        " && sysctl -qw net.ipv4.ip_forward=1"
        f" && ipvsadm -A -t {VIP}:80 -s rr -p 300 && ipvsadm -a -t {VIP}:80 -r {REAL}:{REAL_PORT} -m"
    )
    real.run(f"ip addr add {REAL}/24 dev r0 && ip link set r0 up && ip route add default via 10.98.2.1")
    wait_until(lambda: "UP" in real.run("ip -br link show r0").stdout, "veth r0 up")

    backend = open_backend(director.name)
    before = backend.poll()
    (service,) = before.services
    assert service.stats == model.Stats() and before.connections == ()

    # The real server and the client are threads of this process inside their namespaces.
    server_thread, client_thread = Worker(enter_netns, real.name), Worker(enter_netns, client.name)
    stop = threading.Event()
    try:
        listener = server_thread(listen)
        serving = server_thread.start(serve, listener, stop)
        try:
            assert client_thread(make_requests, CONNECTIONS) == CONNECTIONS * 1000
        finally:
            stop.set()
            serving.result(timeout=60)
            listener.close()
    finally:
        server_thread.close()
        client_thread.close()

    # The last ACKs may still be on their way: wait until ipvsadm's counters stand still.
    settled(lambda: director.run("ipvsadm -Ln --stats --exact").stdout, "counters to settle")
    after = backend.poll()
    assert_counters_match(after, director)
    assert_listing_matches(after, director)
    (service,) = after.services
    (dest,) = service.dests
    assert service.stats.conns == dest.stats.conns == CONNECTIONS
    assert service.stats.inpkts > before.services[0].stats.inpkts
    assert service.stats.outbytes >= CONNECTIONS * 1000  # the answers went out through the director
    assert dest.persist_conns == 1

    connections = after.connections
    templates = [c for c in connections if is_template(c)]
    assert [(t.client, t.client_port, t.virtual, t.virtual_port) for t in templates] == [("10.99.0.1", 0, VIP, 80)], (
        connections
    )
    real_conns = [c for c in connections if not is_template(c)]
    assert len(real_conns) == CONNECTIONS, connections
    assert {(c.virtual, c.virtual_port, c.dest, c.dest_port) for c in real_conns} == {(VIP, 80, REAL, REAL_PORT)}
    assert all(c.origin == "LOCAL" for c in connections)
    assert_connections_match(connections, director)

    # Without CAP_NET_ADMIN (a user that is not root) IPVS refuses every netlink request;
    # the connection table in /proc is still there to show.
    unprivileged = open_backend(director.name, thread_setup=drop_cap_net_admin)
    assert not unprivileged.backend.writable
    assert "root" in unprivileged.backend.read_only_reason
    limited = unprivileged.poll()
    assert limited.services == () and limited.warnings
    assert sorted(map(connection_id, limited.connections)) == sorted(map(connection_id, connections))
    with pytest.raises(NotPermitted):
        unprivileged.set_weight(service.dest_key(dest), 5)


# -- sync daemons ---------------------------------------------------------------------------------


def test_daemons_equal_ipvsadm(netns, open_backend):
    netns.run(
        "ipvsadm --start-daemon master --mcast-interface lo --syncid 5"
        " && ipvsadm --start-daemon backup --mcast-interface lo --syncid 6"
    )
    try:
        state = open_backend(netns.name).poll(connections=False)
        listed = ref.parse_daemons(netns.run("ipvsadm -L --daemon").stdout)
        assert len(listed) == 2
        assert list(state.daemons) == listed
        assert [(d.state, d.interface, d.syncid) for d in state.daemons] == [("master", "lo", 5), ("backup", "lo", 6)]
    finally:
        netns.run("ipvsadm --stop-daemon master; ipvsadm --stop-daemon backup", check=False)
