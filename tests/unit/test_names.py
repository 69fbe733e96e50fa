"""Names for numbers without blocking: services database, hosts files, injected names and a fake DNS."""

from __future__ import annotations

import socket
import threading

import pytest

from ipvsman.model import DestKey, ServiceKey
from ipvsman.names import Names, NameResolver, PortNames, normal_address, read_hosts
from ipvsman.topology import parse_topology

WAIT = 10.0  # generous bound for background work that normally takes milliseconds; never a measured time


class FakeDns:
    """A lookup function with a table, a call log and, optionally, a gate that holds every lookup."""

    def __init__(self, table: dict[str, str] | None = None, gated: bool = False):
        self.table = dict(table or {})
        self.calls: list[str] = []
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.started = threading.Event()

    def __call__(self, address: str) -> str | None:
        self.calls.append(address)
        self.started.set()
        self.gate.wait(WAIT)
        value = self.table.get(address)
        if isinstance(value, Exception):
            raise value
        return value


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hosts_file(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(
        "# a hosts file written for the test\n"
        "127.0.0.1\tlocalhost\n"
        "10.10.10.201  ldap4.example.net ldap4   # canonical name first\n"
        "10.10.10.201  ldap-old\n"
        "2001:0db8::0001 v6host\n"
        "fe80::1%eth0 linklocal\n"
        "not-an-address somename\n"
        "10.10.10.202\n"
    )
    return path


def test_read_hosts(hosts_file, tmp_path):
    assert read_hosts(str(hosts_file)) == {
        "127.0.0.1": "localhost",
        "10.10.10.201": "ldap4.example.net",
        "2001:db8::1": "v6host",
        "fe80::1": "linklocal",
    }
    assert read_hosts(str(tmp_path / "absent")) == {}


def test_normal_address():
    assert normal_address("2001:0DB8:0:0::1") == "2001:db8::1"
    assert normal_address("010.1.1.1") is None
    assert normal_address("ldap4") is None


def test_port_names_from_the_services_database():
    try:
        socket.getservbyport(389, "tcp")
    except OSError:
        pytest.skip("this machine has no services database entry for 389/tcp")
    ports = PortNames()
    assert ports.name(389, "tcp") == "ldap"
    assert ports.name(53, "udp") == "domain"
    assert ports.name(0, "tcp") is None


def test_port_names_are_cached_and_sctp_falls_back_to_tcp():
    calls = []

    def lookup(port, protocol):
        calls.append((port, protocol))
        if (port, protocol) == (389, "tcp"):
            return "ldap"
        raise OSError("port/proto not found")

    ports = PortNames(lookup)
    assert ports.name(389, "tcp") == "ldap"
    assert ports.name(389, "TCP") == "ldap"
    assert ports.name(389, "tcp") == "ldap"
    assert calls == [(389, "tcp")]
    assert ports.name(389, "sctp") == "ldap"
    assert calls[-2:] == [(389, "sctp"), (389, "tcp")]
    assert ports.name(12345, "udp") is None
    assert ports.name(12345, "udp") is None
    assert calls.count((12345, "udp")) == 1
    assert ports.name(70000, "tcp") is None


def test_an_unknown_host_is_none_at_once_then_named_in_the_background():
    dns = FakeDns({"10.0.0.1": "one.example"})
    updates = threading.Event()
    resolver = NameResolver(lookup=dns, hosts_path=None, on_update=updates.set)
    try:
        version = resolver.version
        assert resolver.host("10.0.0.1") is None
        assert resolver.wait_idle(WAIT)
        assert updates.wait(WAIT)
        assert resolver.host("10.0.0.1") == "one.example"
        assert resolver.version > version
        assert resolver.host("10.0.0.2") is None
        assert resolver.wait_idle(WAIT)
        assert resolver.host("10.0.0.2") is None  # no name: remembered, not asked again
        assert resolver.host("10.0.0.2") is None
        assert dns.calls == ["10.0.0.1", "10.0.0.2"]
    finally:
        resolver.close()


def test_host_never_waits_for_a_slow_lookup():
    dns = FakeDns({"10.0.0.1": "slow.example"}, gated=True)
    resolver = NameResolver(lookup=dns, hosts_path=None, timeout=WAIT)
    answers: list = []
    caller = threading.Thread(target=lambda: answers.extend(resolver.host("10.0.0.1") for _ in range(3)))
    try:
        caller.start()
        # If host() waited for the lookup this would not end before the gate opens, and it never would.
        caller.join(WAIT)
        assert not caller.is_alive()
        assert answers == [None, None, None]
        assert dns.started.wait(WAIT)
        assert resolver.pending() == 1  # asked three times, looked up once
    finally:
        dns.gate.set()
        assert resolver.wait_idle(WAIT)
        assert resolver.host("10.0.0.1") == "slow.example"
        assert dns.calls == ["10.0.0.1"]
        resolver.close()


def test_a_lookup_that_times_out_counts_as_no_name_until_its_late_answer_comes():
    dns = FakeDns({"10.0.0.7": "late.example"}, gated=True)
    updates = threading.Event()
    resolver = NameResolver(lookup=dns, hosts_path=None, timeout=0.05, on_update=updates.set)
    try:
        assert resolver.host("10.0.0.7") is None
        assert resolver.wait_idle(WAIT)  # the worker gave up waiting...
        assert resolver.timeouts == 1
        assert resolver.host("10.0.0.7") is None  # ...and does not ask again at once
        assert not updates.is_set()
        dns.gate.set()
        assert updates.wait(WAIT)  # the late answer still arrives
        assert resolver.host("10.0.0.7") == "late.example"
        assert dns.calls == ["10.0.0.7"]
    finally:
        dns.gate.set()
        resolver.close()


def test_configured_names_win_over_the_hosts_file_which_wins_over_dns(hosts_file):
    dns = FakeDns({"10.10.10.201": "from-dns", "10.10.10.9": "from-dns-9", "10.3.0.12": "from-dns-12"})
    resolver = NameResolver(lookup=dns, hosts_path=str(hosts_file))
    try:
        assert resolver.host("10.10.10.201") == "ldap4.example.net"
        assert resolver.host("2001:db8:0::1") == "v6host"
        topology = parse_topology('web:t:10.0.0.1:80 ["Intel_web1-3:10.3.0.11+:8080"]')
        version = resolver.version
        resolver.inject({**topology.host_names(), "10.10.10.201": "ldap4"})
        assert resolver.version > version
        assert resolver.host("10.3.0.12") == "Intel_web2"
        assert resolver.host("10.10.10.201") == "ldap4"
        assert resolver.wait_idle(WAIT)
        assert dns.calls == []  # nothing with a local name went to DNS
        assert resolver.host("10.10.10.9") is None
        assert resolver.wait_idle(WAIT)
        assert resolver.host("10.10.10.9") == "from-dns-9"
        assert resolver.host("garbage") is None
    finally:
        resolver.close()


def test_without_dns_only_local_names_exist_and_no_thread_starts(hosts_file):
    before = {thread.name for thread in threading.enumerate()}
    resolver = NameResolver(lookup=None, hosts_path=str(hosts_file))
    assert resolver.host("10.10.10.201") == "ldap4.example.net"
    assert resolver.host("10.0.0.1") is None
    assert resolver.pending() == 0
    assert not resolver.dns_enabled
    started = {thread.name for thread in threading.enumerate()} - before
    assert not any(name.startswith("ipvsman-dns") for name in started)


def test_the_queue_is_bounded_and_dropped_addresses_are_asked_again_later():
    dns = FakeDns({f"10.0.0.{n}": f"h{n}" for n in range(1, 11)}, gated=True)
    resolver = NameResolver(lookup=dns, hosts_path=None, queue_size=2, workers=1, max_lookups=1, timeout=WAIT)
    try:
        for n in range(1, 11):
            assert resolver.host(f"10.0.0.{n}") is None
        assert dns.started.wait(WAIT)
        assert resolver.pending() <= 3  # one being looked up, two queued
        assert resolver.dropped >= 7
        dns.gate.set()
        assert resolver.wait_idle(WAIT)
        named = [n for n in range(1, 11) if resolver.host(f"10.0.0.{n}")]
        assert 1 <= len(named) <= 3
        # The dropped ones were queued again by the calls just made.
        assert resolver.wait_idle(WAIT)
        for n in range(1, 11):
            resolver.host(f"10.0.0.{n}")
            assert resolver.wait_idle(WAIT)
        assert all(resolver.host(f"10.0.0.{n}") == f"h{n}" for n in range(1, 11))
    finally:
        dns.gate.set()
        resolver.close()


def test_the_cache_is_bounded():
    dns = FakeDns({f"10.0.0.{n}": f"h{n}" for n in range(1, 6)})
    resolver = NameResolver(lookup=dns, hosts_path=None, cache_size=3)
    try:
        for n in range(1, 6):
            resolver.host(f"10.0.0.{n}")
            assert resolver.wait_idle(WAIT)
        assert resolver.host("10.0.0.5") == "h5"
        assert resolver.host("10.0.0.1") is None  # forgotten: the oldest of five in a cache of three
        assert resolver.wait_idle(WAIT)
        assert dns.calls.count("10.0.0.1") == 2
    finally:
        resolver.close()


def test_failures_are_retried_after_a_while_and_names_refreshed_while_still_shown():
    clock = Clock()
    dns = FakeDns({})
    resolver = NameResolver(lookup=dns, hosts_path=None, retry_after=60, refresh_after=600, clock=clock)
    try:
        resolver.host("10.0.0.3")
        assert resolver.wait_idle(WAIT)
        resolver.host("10.0.0.3")
        assert dns.calls == ["10.0.0.3"]
        clock.now += 61
        dns.table["10.0.0.3"] = "found-later"
        assert resolver.host("10.0.0.3") is None
        assert resolver.wait_idle(WAIT)
        assert resolver.host("10.0.0.3") == "found-later"
        clock.now += 601
        dns.table["10.0.0.3"] = "renamed"
        assert resolver.host("10.0.0.3") == "found-later"  # the stale name shows while it is refreshed
        assert resolver.wait_idle(WAIT)
        assert resolver.host("10.0.0.3") == "renamed"
        assert dns.calls == ["10.0.0.3"] * 3
    finally:
        resolver.close()


def test_a_failing_lookup_or_callback_does_not_stop_the_resolver():
    dns = FakeDns({"10.0.0.1": OSError("resolver exploded"), "10.0.0.2": "fine"})

    def broken_callback():
        raise RuntimeError("the main loop has stopped")

    resolver = NameResolver(lookup=dns, hosts_path=None, on_update=broken_callback, workers=1)
    try:
        resolver.host("10.0.0.1")
        assert resolver.wait_idle(WAIT)
        resolver.host("10.0.0.2")
        assert resolver.wait_idle(WAIT)
        assert resolver.host("10.0.0.1") is None
        assert resolver.host("10.0.0.2") == "fine"
    finally:
        resolver.close()


def test_after_close_nothing_is_queued():
    dns = FakeDns({"10.0.0.1": "x"})
    resolver = NameResolver(lookup=dns, hosts_path=None)
    resolver.close()
    assert resolver.host("10.0.0.1") is None
    assert resolver.pending() == 0
    assert dns.calls == []


def test_names_toggle_between_names_and_numbers(hosts_file):
    dns = FakeDns({"192.0.2.10": "www.example"})
    resolver = NameResolver(lookup=dns, hosts_path=str(hosts_file))
    ports = PortNames(lambda port, protocol: {389: "ldap", 80: "http", 53: "domain"}[port])
    names = Names(resolver, ports, show=False)  # --no-resolve
    try:
        ldap = ServiceKey("inet", "tcp", "10.10.10.100", 389)
        ldap4 = DestKey(ldap, "10.10.10.201", 389)
        web = ServiceKey("inet", "tcp", "192.0.2.10", 80)
        assert names.service(ldap) == "tcp 10.10.10.100:389"
        assert names.dest(ldap4) == "10.10.10.201:389"
        assert names.host("192.0.2.10") == "192.0.2.10"
        assert resolver.pending() == 0 and dns.calls == []  # numeric: nothing is looked up
        version = names.version
        assert names.toggle() is True
        assert names.version != version
        assert names.dest(ldap4) == "ldap4.example.net:ldap"
        assert names.endpoint("10.10.10.201", 389, "tcp") == "ldap4.example.net:ldap"
        assert names.service(web) == "tcp 192.0.2.10:http"  # the name is being looked up
        assert resolver.wait_idle(WAIT)
        assert names.service(web) == "tcp www.example:http"
        assert names.endpoint("2001:db8::99", 53, "udp") == "[2001:db8::99]:domain"
        assert names.service(ServiceKey("inet", None, "", 0, 5)) == "fwmark 5"
        assert names.toggle() is False
        assert names.service(web) == "tcp 192.0.2.10:80"
    finally:
        resolver.close()


def test_names_from_a_configuration():
    topology = parse_topology(
        'ldap:t:10.10.10.100:389 ["ldap1-4:10.10.10.201-204"] (-m)\nweb:t:10.0.0.1:80 ["www1:10.0.1.1"]'
    )
    resolver = NameResolver(lookup=None, hosts_path=None)
    names = Names(resolver, PortNames(lambda port, protocol: {389: "ldap", 80: "http"}[port]))
    version = names.version
    names.add_configuration(topology)
    assert names.version != version
    ldap = ServiceKey("inet", "tcp", "10.10.10.100", 389)
    assert names.service(ldap) == "ldap"
    assert names.service_name(ldap) == "ldap"
    assert names.dest(DestKey(ldap, "10.10.10.204", 389)) == "ldap4:ldap"
    assert names.dest_name(DestKey(ldap, "10.10.10.204", 389)) == "ldap4"
    # Another service's real server at a configured address is named through the host names.
    other = DestKey(ServiceKey("inet", "tcp", "10.10.10.100", 636), "10.10.10.202", 636)
    assert names.dest_name(other) == "ldap2"
    assert names.hosts(["10.0.1.1", "10.9.9.9"]) == {"10.0.1.1": "www1", "10.9.9.9": "10.9.9.9"}
    names.toggle()
    assert names.service_name(ldap) is None
    assert names.dest(DestKey(ldap, "10.10.10.204", 389)) == "10.10.10.204:389"
