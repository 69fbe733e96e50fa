"""The demo director: deterministic, consistent with its own connection table, and steerable by weight."""

from __future__ import annotations

import collections
import ipaddress

import pytest

from ipvsman.backend import Backend, BackendError
from ipvsman.demo import TCP_TIMEOUTS, UDP_TIMEOUT, DemoBackend
from ipvsman.model import FORWARD_LABELS, Connection, DestKey, RawState, Service, ServiceKey

LDAP = ServiceKey("inet", "tcp", "10.10.10.100", 389)
LDAPS = ServiceKey("inet", "tcp", "10.10.10.100", 636)
WEB = ServiceKey("inet", "tcp", "10.10.10.80", 80)
WEB_TLS = ServiceKey("inet", "tcp", "10.10.10.80", 443)
DNS = ServiceKey("inet", "udp", "10.10.10.53", 53)
MAIL = ServiceKey("inet", None, "", 0, fwmark=10)
DRAINED = DestKey(LDAP, "10.10.10.204", 389)
WEB3 = DestKey(WEB, "10.10.20.13", 80)
UNKNOWN = ServiceKey("inet", "tcp", "10.9.9.9", 80)


def run(backend: DemoBackend, polls: int, connections: bool = True) -> list[RawState]:
    return [backend.poll(connections=connections) for _ in range(polls)]


def find_service(state: RawState, key: ServiceKey) -> Service:
    for service in state.services:
        if service.key == key:
            return service
    raise AssertionError(f"{key} not in the demo")


def dest_conns(state: RawState, key: DestKey) -> int:
    dest = find_service(state, key.service).find_dest(key.address, key.port)
    assert dest is not None, key
    return dest.stats.conns


def service_of(state: RawState, conn: Connection) -> ServiceKey:
    """Which service a table entry belongs to, worked out here independently of the poller."""
    for service in state.services:
        key = service.key
        if key.fwmark:
            if conn.protocol == "IP" and conn.virtual == str(ipaddress.ip_address(key.fwmark)):
                return key
            if conn.protocol != "IP" and service.find_dest(conn.dest, conn.dest_port):
                if (conn.protocol.lower(), conn.virtual, conn.virtual_port) not in {
                    (s.key.protocol, s.key.address, s.key.port) for s in state.services
                }:
                    return key
        elif (key.protocol, key.address, key.port) == (conn.protocol.lower(), conn.virtual, conn.virtual_port):
            return key
    raise AssertionError(f"no service for {conn}")


def identity(conn: Connection) -> tuple:
    return conn[:7]


def test_is_a_writable_backend_named_demo():
    backend = DemoBackend(tick=1.0)
    assert isinstance(backend, Backend)
    assert backend.name == "demo"
    assert backend.writable
    assert backend.read_only_reason is None


def test_the_director_it_shows():
    state = DemoBackend(tick=1.0).poll()
    keys = {service.key for service in state.services}
    assert {LDAP, LDAPS, WEB, WEB_TLS, DNS, MAIL} <= keys
    assert any(key.af == "inet6" for key in keys)
    ldap = find_service(state, LDAP)
    assert (ldap.scheduler, ldap.persistent, ldap.flags) == ("wlc", 300, ("persistent",))
    assert [d.address for d in ldap.dests] == [f"10.10.10.{n}" for n in range(201, 205)]
    assert find_service(state, WEB).scheduler == "wrr"
    assert find_service(state, DNS).scheduler == "rr"
    forwards = {dest.forward for service in state.services for dest in service.dests}
    assert forwards == set(FORWARD_LABELS)
    assert any(dest.weight == 0 for service in state.services for dest in service.dests)
    assert all(len(service.dests) >= 2 for service in state.services)
    assert (state.info.version, state.info.conn_table_size) == ("1.2.1", 4096)
    assert (state.timeouts.tcp, state.timeouts.tcp_fin, state.timeouts.udp) == (900, 120, 300)
    assert state.sync_version == 1
    [daemon] = state.daemons
    assert (daemon.state, daemon.interface, daemon.syncid, daemon.maxlen) == ("master", "eth0", 1, 1472)
    assert (daemon.group, daemon.port, daemon.ttl) == ("224.0.0.81", 8848, 1)
    for service in state.services:
        for address in [service.key.address, *(d.address for d in service.dests)]:
            if address:
                assert str(ipaddress.ip_address(address)) == address  # compressed text


def test_same_seed_and_ticks_give_identical_snapshots():
    first, second = DemoBackend(seed=7, tick=0.5), DemoBackend(seed=7, tick=0.5)
    assert run(first, 30) == run(second, 30)


def test_different_seeds_give_different_directors():
    one, other = DemoBackend(seed=1, tick=1.0).poll(), DemoBackend(seed=2, tick=1.0).poll()
    assert one.connections != other.connections
    assert [s.stats for s in one.services] != [s.stats for s in other.services]


def test_without_tick_a_poll_advances_by_the_clock():
    now = [100.0]
    backend = DemoBackend(seed=3, clock=lambda: now[0])
    backend.open()
    warmed = backend.simulated_time
    first = backend.poll()
    assert backend.simulated_time == warmed  # the first poll shows the warm-up's end, whatever the clock
    now[0] += 2.5
    backend.poll()
    assert backend.simulated_time == pytest.approx(warmed + 2.5)
    backend.poll()  # no time passed: nothing moves
    assert backend.simulated_time == pytest.approx(warmed + 2.5)
    now[0] += 30
    later = backend.poll()
    assert backend.simulated_time == pytest.approx(warmed + 32.5)
    assert later.connections != first.connections
    # ... and the first poll of a clock-driven demo equals that of a ticking one: --once is reproducible.
    assert first == DemoBackend(seed=3, tick=1.0).poll()


def test_dest_counts_match_the_connection_table():
    backend = DemoBackend(seed=5, tick=1.0)
    for state in run(backend, 40)[::4]:
        counted: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
        for conn in state.connections:
            key = (service_of(state, conn), conn.dest, conn.dest_port)
            if conn.is_template:
                counted[key]["persist"] += 1
            elif conn.state == "ESTABLISHED":
                counted[key]["active"] += 1
            else:
                counted[key]["inactive"] += 1
        for service in state.services:
            for dest in service.dests:
                seen = counted[(service.key, dest.address, dest.port)]
                assert (dest.active_conns, dest.inactive_conns, dest.persist_conns) == (
                    seen["active"],
                    seen["inactive"],
                    seen["persist"],
                ), (service.key, dest)


def test_stats_count_exactly_the_new_connections():
    backend = DemoBackend(seed=11, tick=1.0)
    states = run(backend, 25)
    for before, after in zip(states, states[1:]):
        old = {identity(c) for c in before.connections if not c.is_template}
        new_by_dest = collections.Counter(
            (service_of(after, c), c.dest, c.dest_port)
            for c in after.connections
            if not c.is_template and identity(c) not in old
        )
        for service in after.services:
            previous = find_service(before, service.key)
            assert service.stats.conns - previous.stats.conns == sum(
                n for (key, _, _), n in new_by_dest.items() if key == service.key
            )
            for dest in service.dests:
                was = previous.find_dest(dest.address, dest.port)
                assert dest.stats.conns - was.stats.conns == new_by_dest[(service.key, dest.address, dest.port)]
            # Counters only grow, and a service's are the sum of its real servers'.
            for field in ("conns", "inpkts", "outpkts", "inbytes", "outbytes"):
                assert getattr(service.stats, field) >= getattr(previous.stats, field)
                assert abs(getattr(service.stats, field) - sum(getattr(d.stats, field) for d in service.dests)) <= len(
                    service.dests
                )  # each real server's float counter is truncated on its own


def test_rates_agree_with_the_counters():
    backend = DemoBackend(seed=2, tick=1.0)
    states = run(backend, 60)
    start, end = states[-21], states[-1]
    for field, rate in (("inpkts", "inpps"), ("inbytes", "inbps"), ("conns", "cps")):
        counted = sum(getattr(s.stats, field) for s in end.services)
        counted -= sum(getattr(s.stats, field) for s in start.services)
        reported = sum(getattr(s.rates, rate) for s in end.services)
        assert counted / 20 * 0.6 <= reported <= counted / 20 * 1.6, (field, counted / 20, reported)
    for service in end.services:
        for dest in service.dests:
            # The director sees the real server's replies only when it masquerades.
            if dest.forward != "masq":
                assert dest.stats.outpkts == dest.rates.outpps == dest.stats.outbytes == 0
            elif dest.stats.conns:
                assert dest.stats.outpkts > 0


def test_connections_move_through_kernel_states_and_expire():
    backend = DemoBackend(seed=4, tick=1.0)
    first = backend.poll()
    states = [first, *run(backend, 40)]
    seen = {conn.state for state in states for conn in state.connections}
    assert {"SYN_RECV", "ESTABLISHED", "FIN_WAIT", "TIME_WAIT", "CLOSE", "UDP", "NONE"} <= seen
    limits = {**TCP_TIMEOUTS, "UDP": UDP_TIMEOUT, "NONE": 300}
    for conn in states[-1].connections:
        assert 0 <= conn.expires <= limits[conn.state], conn
        assert conn.origin == "LOCAL"
        if conn.is_template:
            assert conn.client_port == 0 and conn.state == "NONE"
    assert any(c.protocol == "IP" and c.virtual == "0.0.0.10" for c in first.connections)  # a fwmark template
    # A TIME_WAIT entry counts down one second per second, then leaves the table.
    waiting = {identity(c): c.expires for c in first.connections if c.state == "TIME_WAIT"}
    later = {identity(c): c for c in states[10].connections}
    for ident, expires in waiting.items():
        if expires >= 10:
            assert later[ident].state == "TIME_WAIT"
            assert later[ident].expires == expires - 10
        else:
            assert ident not in later
    # Every connection of the first poll (templates aside) is gone after the longest timeout.
    run(backend, UDP_TIMEOUT + 5, connections=False)
    remaining = {identity(c) for c in backend.poll().connections if c.state != "ESTABLISHED"}
    assert not remaining & {identity(c) for c in first.connections if not c.is_template}


def test_a_persistent_client_sticks_to_its_real_server():
    backend = DemoBackend(seed=6, tick=1.0)
    for state in run(backend, 30)[::5]:
        chosen = {
            (service_of(state, c), c.client): (c.dest, c.dest_port) for c in state.connections if c.is_template
        }
        sticky = 0
        for conn in state.connections:
            key = (service_of(state, conn), conn.client)
            if not conn.is_template and key[0] in (LDAP, LDAPS, MAIL):
                assert chosen[key] == (conn.dest, conn.dest_port), conn
                sticky += 1
        assert sticky > 0


def test_a_weight_of_zero_gets_no_connections():
    backend = DemoBackend(seed=8, tick=1.0)
    # The table every 10 s: a connection stays in it longer than that, and reading it every time is slow.
    states = [backend.poll(connections=n % 10 == 0) for n in range(120)]
    assert all(dest_conns(state, DRAINED) == 0 for state in states)
    assert not any(c.dest == DRAINED.address for state in states for c in state.connections or ())
    # Others of the same service are busy meanwhile.
    assert dest_conns(states[-1], DestKey(LDAP, "10.10.10.201", 389)) > dest_conns(
        states[0], DestKey(LDAP, "10.10.10.201", 389)
    )


def test_set_weight_changes_the_share_of_new_connections():
    backend = DemoBackend(seed=9, tick=1.0)

    def share(polls: int) -> float:
        before = backend.poll(connections=False)
        after = run(backend, polls, connections=False)[-1]
        total = find_service(after, WEB).stats.conns - find_service(before, WEB).stats.conns
        assert total > 50
        return (dest_conns(after, WEB3) - dest_conns(before, WEB3)) / total

    low = share(120)  # weight 50 of 250
    backend.set_weight(WEB3, 200)
    assert find_service(backend.poll(), WEB).find_dest(WEB3.address, WEB3.port).weight == 200
    high = share(120)  # weight 200 of 400
    assert low == pytest.approx(0.2, abs=0.05)
    assert high == pytest.approx(0.5, abs=0.05)
    backend.set_weight(WEB3, 0)
    backend.poll()
    assert share(60) == 0


def test_a_drained_server_comes_back_with_a_weight():
    backend = DemoBackend(seed=10, tick=1.0)
    backend.set_weight(DRAINED, 100)
    assert dest_conns(run(backend, 60)[-1], DRAINED) > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.set_weight(DestKey(UNKNOWN, "10.0.0.1", 80), 1), "no virtual service tcp 10.9.9.9:80"),
        (lambda b: b.set_weight(DestKey(WEB, "10.10.20.99", 80), 1), "no real server 10.10.20.99:80"),
        (lambda b: b.set_weight(WEB3, 65536), "weight must be"),
        (lambda b: b.set_weight(WEB3, -1), "weight must be"),
        (lambda b: b.set_weight(WEB3, True), "weight must be"),
        (lambda b: b.add_dest(WEB, "10.10.20.11", 80, "route", 1), "already exists"),
        (lambda b: b.add_dest(WEB, "10.10.20.14", 80, "nat", 1), "forwarding method"),
        (lambda b: b.add_dest(WEB, "2001:db8::1", 80, "route", 1), "address family"),
        (lambda b: b.add_dest(WEB, "not-an-ip", 80, "route", 1), "not an IP address"),
        (lambda b: b.add_dest(WEB, "10.10.20.14", 70000, "route", 1), "port must be"),
        (lambda b: b.remove_dest(DestKey(DNS, "10.10.30.9", 53)), "no real server"),
    ],
)
def test_bad_changes_are_refused_with_one_line(call, message):
    backend = DemoBackend(tick=1.0)
    before = backend.poll()
    with pytest.raises(BackendError) as refused:
        call(backend)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    after = backend.poll()  # and nothing changed
    assert [(s.key, d.address, d.port, d.weight) for s in after.services for d in s.dests] == [
        (s.key, d.address, d.port, d.weight) for s in before.services for d in s.dests
    ]


def test_add_and_remove_real_servers():
    backend = DemoBackend(seed=12, tick=1.0)
    backend.add_dest(DNS, "10.10.30.3", 53, "masq", 1)
    states = run(backend, 30)
    added = find_service(states[-1], DNS).find_dest("10.10.30.3", 53)
    assert added is not None and added.forward == "masq" and added.stats.conns > 0
    removed = DestKey(DNS, "10.10.30.1", 53)
    backend.remove_dest(removed)
    before = backend.poll()
    assert find_service(before, DNS).find_dest("10.10.30.1", 53) is None
    # Its connections stay in the table until they expire, and the service's counters keep them.
    assert any(c.dest == "10.10.30.1" for c in before.connections)
    after = run(backend, 40)[-1]
    assert find_service(after, DNS).stats.conns >= find_service(before, DNS).stats.conns
    new = {identity(c) for c in after.connections} - {identity(c) for c in before.connections}
    assert new and not any(ident[5] == "10.10.30.1" for ident in new)
    run(backend, UDP_TIMEOUT, connections=False)
    assert not any(c.dest == "10.10.30.1" for c in backend.poll().connections)


def test_thresholds_cap_a_real_server():
    backend = DemoBackend(seed=1, tick=1.0)
    capped = DestKey(WEB_TLS, "10.10.20.12", 443)
    for state in run(backend, 200, connections=False):
        dest = find_service(state, WEB_TLS).find_dest(capped.address, capped.port)
        assert dest.upper_threshold == 150
        assert dest.active_conns + dest.inactive_conns <= dest.upper_threshold


def test_poll_without_connections():
    with_table, without = DemoBackend(seed=3, tick=1.0), DemoBackend(seed=3, tick=1.0)
    for a, b in zip(run(with_table, 5), run(without, 5, connections=False)):
        assert b.connections is None
        assert a.services == b.services


def test_scaled_director_for_benchmarks():
    backend = DemoBackend.scaled(services=40, dests_per_service=5, connections=3000, seed=2, tick=1.0)
    states = run(backend, 3)
    state = states[-1]
    assert len(state.services) == 40
    assert all(len(service.dests) == 5 for service in state.services)
    assert len({service.key for service in state.services}) == 40
    assert 2000 <= len(state.connections) <= 4000
    # About 3000 connections living about 125 s each: some 24 new ones a second, and rates to match.
    assert 15 <= sum(service.rates.cps for service in state.services) <= 35
    for service in state.services:
        for dest in service.dests:
            mine = [c for c in state.connections if (c.virtual, c.dest) == (service.key.address, dest.address)]
            active = sum(c.state == "ESTABLISHED" for c in mine)
            assert (dest.active_conns, dest.inactive_conns) == (active, len(mine) - active)
    again = DemoBackend.scaled(services=40, dests_per_service=5, connections=3000, seed=2, tick=1.0)
    assert run(again, 3) == states
