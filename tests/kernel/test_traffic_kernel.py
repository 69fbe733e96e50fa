"""ipvsman against ipvsadm while real clients connect through a NAT director (rates, IPv6 connections)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import ipvsadm_ref as ref
import pytest

from ipvsman import model
from ipvsman.kernel.backend import KernelBackend
from ipvsman.poller import aggregate_connections
from waiting import wait_until

pytestmark = pytest.mark.kernel

REAL_PORT = 8080
VIP4, VIP6 = "10.99.0.100", "fd00::80"
REALS4 = ("10.98.1.2", "10.98.1.3")
REALS6 = ("fd00:11::2", "fd00:11::3")
SERVICE4 = model.ServiceKey("inet", "tcp", VIP4, 80)
# The estimator (ip_vs_est.c, Linux 6.1) updates every 2 s and moves a quarter of the way to the
# last period's rate each time: after 8 periods it has covered 90% of a steady rate.
ESTIMATOR_PERIOD = 2.0
WARM_UP = 8 * ESTIMATOR_PERIOD

# A real server: answers each request with 1000 bytes, then keeps the connection until the
# client closes it, so the client decides what stays ESTABLISHED. It exits after `lifetime` s.
SERVER = r"""
import socket, sys, threading, time
lifetime = float(sys.argv[1])
listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
listener.bind(("::", %d))
listener.listen(128)
listener.settimeout(0.5)
def handle(conn):
    with conn:
        conn.settimeout(lifetime)
        try:
            got = 0
            while got < 100:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                got += len(chunk)
            conn.sendall(b"pong " * 200)
            while conn.recv(4096):
                pass
        except OSError:
            pass
deadline = time.monotonic() + lifetime
while time.monotonic() < deadline:
    try:
        conn, _ = listener.accept()
    except OSError:
        continue
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
""" % REAL_PORT

# A client: `held` connections it keeps open, then short ones (request, answer, close) paced at
# `rate` a second until `count` were made or `duration` s passed; then it waits `linger` s with
# the held ones still open and exits. Bounded in count and time whatever the test does.
CLIENT = r"""
import socket, sys, time
vip, port, held, count, rate, duration, linger = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
def request(conn):
    conn.sendall(b"ping " * 20)
    got = 0
    while got < 1000:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += len(chunk)
kept = []
for _ in range(int(held)):
    conn = socket.create_connection((vip, port), timeout=60)
    request(conn)
    kept.append(conn)
started = time.monotonic()
made = 0
while made < count and time.monotonic() - started < duration:
    with socket.create_connection((vip, port), timeout=60) as conn:
        request(conn)
    made += 1
    time.sleep(max(0.0, started + made / rate - time.monotonic()))
time.sleep(linger)
"""


@pytest.fixture
def director(netns_pair, netns):
    """client -- director (NAT, forwarding) -- one namespace holding both real servers of each family.

    The client is 10.99.0.1 and fd00::1; the VIPs live on the director's client-side link; the real
    servers 10.98.1.2/.3 and fd00:11::2/::3 route back through the director (10.98.1.1, fd00:11::1).
    """
    client, director = netns_pair
    real = netns
    link = subprocess.run(
        ["ip", "link", "add", "d1", "netns", director.name, "type", "veth", "peer", "name", "r0", "netns", real.name],
        capture_output=True, text=True,
    )
    assert link.returncode == 0, link.stderr
    client.run("ip -6 addr add fd00::1/64 dev va nodad")
    director.run(
        f"ip addr add {VIP4}/32 dev vb && ip -6 addr add fd00::2/64 dev vb nodad"
        f" && ip -6 addr add {VIP6}/128 dev vb nodad"
        " && ip addr add 10.98.1.1/24 dev d1 && ip -6 addr add fd00:11::1/64 dev d1 nodad && ip link set d1 up"
        " && sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1"
    )
    real.run(
        "".join(f"ip addr add {a}/24 dev r0 && " for a in REALS4)
        + "".join(f"ip -6 addr add {a}/64 dev r0 nodad && " for a in REALS6)
        + "ip link set r0 up && ip route add default via 10.98.1.1 && ip -6 route add default via fd00:11::1"
    )
    wait_until(lambda: "UP" in real.run("ip -br link show r0").stdout, "veth r0 up")
    real.popen(f"{sys.executable} -c {shlex.quote(SERVER)} 300")
    wait_until(lambda: f":{REAL_PORT}" in real.run("ss -Hltn").stdout, "the real servers to listen")
    return client, director


def start_client(client, vip: str, held: int, count: int, rate: float, duration: float, linger: float):
    return client.popen(
        f"{sys.executable} -c {shlex.quote(CLIENT)} {vip} 80 {held} {count} {rate} {duration} {linger}",
        stdout=subprocess.DEVNULL,
    )


class DirectorThread:
    """One thread inside the director's namespace: the backend is opened and polled there, and
    ipvsadm started from it runs in the same namespace with no `ip netns exec` to wait for."""

    def __init__(self, netns_name: str):
        self._pool = ThreadPoolExecutor(1)
        self.backend = KernelBackend(netns=netns_name)
        self.call(self.backend.open)

    def call(self, function, *args, timeout: float = 300):
        return self._pool.submit(function, *args).result(timeout)

    def close(self):
        self.call(self.backend.close)
        self._pool.shutdown()


@pytest.fixture
def director_thread(director):
    opened = DirectorThread(director[1].name)
    yield opened
    opened.close()


def ipvsadm(*args: str) -> str:
    proc = subprocess.run(["ipvsadm", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def rate_figures(state: model.RawState) -> dict:
    """Rates per service key and per (service key, (address, port)), as ipvsadm's columns."""
    figures = {}
    for service in state.services:
        figures[service.key] = tuple(service.rates)
        for dest in service.dests:
            figures[(service.key, (dest.address, dest.port))] = tuple(dest.rates)
    return figures


def listed_rates(text: str) -> dict:
    services, dests = ref._parse_dest_columns(text)  # CPS InPPS OutPPS InBPS OutBPS
    return {**services, **dests}


def read_rates_back_to_back(backend: KernelBackend):
    """ipvsadm, ipvsman, ipvsadm as close together as one thread can; and how long it took."""
    started = time.monotonic()
    before = listed_rates(ipvsadm("-Ln", "--rate", "--exact"))
    state = backend.poll(connections=True)
    after = listed_rates(ipvsadm("-Ln", "--rate", "--exact"))
    return time.monotonic() - started, before, state, after


def test_rates_under_traffic_equal_ipvsadm(director, director_thread):
    client, director_ns = director
    director_ns.run(
        f"ipvsadm -A -t {VIP4}:80 -s rr"
        + "".join(f" && ipvsadm -a -t {VIP4}:80 -r {real}:{REAL_PORT} -m" for real in REALS4)
    )
    rate = 8.0
    start_client(client, VIP4, held=0, count=rate * 90, rate=rate, duration=90, linger=0)
    wait_until(lambda: listed_rates(ipvsadm_in(director_ns))[SERVICE4][0] > 0, "a connection rate to show")
    time.sleep(WARM_UP / 2)
    t0, s0 = time.monotonic(), director_thread.call(director_thread.backend.poll, False)
    time.sleep(WARM_UP / 2)

    judged, rounds = [], []
    for _ in range(8):
        seconds, before, state, after = director_thread.call(read_rates_back_to_back, director_thread.backend)
        t1, s1 = time.monotonic(), state
        rounds.append(seconds)
        # Within one estimator period at most one update falls between the two ipvsadm runs, so
        # whatever ipvsman read is the value before it or after it, field by field.
        if seconds < ESTIMATOR_PERIOD * 0.9:
            judged.append((before, rate_figures(state), after))
        if len(judged) >= 3:
            break
        time.sleep(0.7)  # spread the rounds over the period, so some straddle an update
    assert len(judged) >= 2, f"readings took too long to compare: {rounds}"

    for before, ours, after in judged:
        assert set(ours) == set(before) == set(after) and len(ours) == 3, (ours, before)
        for key, figures in ours.items():
            for name, low, mine, high in zip(model.Rates._fields, before[key], figures, after[key]):
                assert min(low, high) <= mine <= max(low, high), (key, name, low, mine, high)
            assert all(value > 0 for value in figures), (key, figures)  # NAT: both directions pass

    # The estimate follows the traffic actually carried: compare cps and inbps with what the
    # cumulative counters grew by since halfway through the warm-up (the span the estimate mostly
    # reflects), loosely, since the client's pace wobbles in the guest.
    (service0,), (service1,) = s0.services, s1.services
    conns_rate = (service1.stats.conns - service0.stats.conns) / (t1 - t0)
    bytes_rate = (service1.stats.inbytes - service0.stats.inbytes) / (t1 - t0)
    assert conns_rate > 0 and bytes_rate > 0
    assert conns_rate / 4 <= service1.rates.cps <= conns_rate * 4, (service1.rates, conns_rate)
    assert bytes_rate / 4 <= service1.rates.inbps <= bytes_rate * 4, (service1.rates, bytes_rate)
    print(f"rates: {len(judged)} rounds judged, window {min(rounds):.2f}-{max(rounds):.2f} s; {service1.rates};"
          f" carried {conns_rate:.1f} conn/s, {bytes_rate:.0f} B/s in")


def ipvsadm_in(ns) -> str:
    return ns.run("ipvsadm -Ln --rate --exact").stdout


def connection_ids(connections) -> set:
    return {
        (c.protocol, c.client, c.client_port, c.virtual, c.virtual_port, c.dest, c.dest_port, c.state)
        for c in connections
    }


def listed_ids(listed: list[ref.ListedConnection]) -> set:
    return {(c.protocol, *c.source, *c.virtual, *c.destination, c.state) for c in listed}


def read_connections_back_to_back(backend: KernelBackend):
    before = ref.parse_connections(ipvsadm("-Lnc"))
    listing_before = ipvsadm("-Ln")
    state = backend.poll(connections=True)
    listing_after = ipvsadm("-Ln")
    after = ref.parse_connections(ipvsadm("-Lnc"))
    return before, listing_before, state, listing_after, after


def test_ipv6_connections_under_traffic_equal_ipvsadm(director, director_thread):
    client, director_ns = director
    director_ns.run(
        f"ipvsadm -A -t [{VIP6}]:80 -s rr"
        + "".join(f" && ipvsadm -a -t [{VIP6}]:80 -r [{real}]:{REAL_PORT} -m" for real in REALS6)
    )
    held, short = 6, 10
    start_client(client, VIP6, held=held, count=short, rate=5, duration=60, linger=240)

    def ready():
        states = [c.state for c in ref.parse_connections(director_ns.run("ipvsadm -Lnc").stdout)]
        return len(states) == held + short and states.count("ESTABLISHED") == held and (
            states.count("TIME_WAIT") == short
        )

    wait_until(ready, f"{held} held and {short} closed IPv6 connections", timeout=180)

    for _ in range(5):
        before, listing_before, state, listing_after, after = director_thread.call(
            read_connections_back_to_back, director_thread.backend
        )
        if listed_ids(before) == listed_ids(after) and listing_before == listing_after:
            break  # nothing changed state while ipvsman read: the comparison is exact
    else:
        pytest.fail("the connection table kept changing while it was read")

    ours = state.connections
    assert connection_ids(ours) == listed_ids(before), (ours, before)
    assert len(ours) == held + short
    assert {c.client for c in ours} == {"fd00::1"} and {c.virtual for c in ours} == {VIP6}
    assert {c.dest for c in ours} == set(REALS6)  # round robin used both real servers
    # Expiry counts down between the readings: ipvsman's lies between ipvsadm's.
    first = {(*c.source, c.state): c.expires for c in before}
    last = {(*c.source, c.state): c.expires for c in after}
    for c in ours:
        key = (c.client, c.client_port, c.state)
        assert last[key] <= c.expires <= first[key], (c, first[key], last[key])

    # Per real server: the kernel's counters (netlink) and ipvsman's own count of the table both
    # equal ipvsadm's ActiveConn / InActConn.
    listed = ref.parse_list(listing_before)[model.ServiceKey("inet6", "tcp", VIP6, 80)]
    (service,) = state.services
    _, dest_states = aggregate_connections(state.services, ours)
    for dest in service.dests:
        entry = listed.dests[(dest.address, dest.port)]
        counted = dest_states[service.dest_key(dest)]
        assert (dest.active_conns, dest.inactive_conns) == (entry.active, entry.inactive), (dest, entry)
        assert (counted["ESTABLISHED"], sum(counted.values()) - counted["ESTABLISHED"]) == (
            entry.active, entry.inactive
        ), (dest, dict(counted))
    assert sum(d.active_conns for d in service.dests) == held
    assert sum(d.inactive_conns for d in service.dests) == short
