"""The polling thread: aggregation by state, bounded history, failed polls, commands and pause."""

from __future__ import annotations

import queue
import threading

import pytest

from ipvsman.backend import Backend, BackendError, IpvsUnavailable, NotPermitted
from ipvsman.demo import DemoBackend
from ipvsman.model import Connection, Dest, DestKey, RawState, Service, ServiceKey, service_sort_key
from ipvsman.poller import (
    AddDest,
    CallInPoller,
    Poller,
    RateHistory,
    RemoveDest,
    SetWeight,
    aggregate_connections,
    snapshot_once,
)

WEB = ServiceKey("inet", "tcp", "10.0.0.80", 80)
MAIL = ServiceKey("inet", None, "", 0, fwmark=7)
WAIT = 30  # seconds a test waits for the thread before it calls it stuck; never a measured figure


def conn(protocol, client, virtual, vport, dest, dport, state, cport=40000):
    return Connection(protocol, client, cport, virtual, vport, dest, dport, state, 100, "LOCAL")


def test_aggregation_by_state_per_service_and_dest():
    services = [
        Service(WEB, "wlc", dests=(Dest("10.0.1.1", 80, "masq", 1), Dest("10.0.1.2", 80, "masq", 1))),
        Service(MAIL, "rr", persistent=60, dests=(Dest("10.0.2.1", 25, "masq", 1),)),
    ]
    connections = [
        conn("TCP", "192.0.2.1", "10.0.0.80", 80, "10.0.1.1", 80, "ESTABLISHED"),
        conn("TCP", "192.0.2.2", "10.0.0.80", 80, "10.0.1.1", 80, "TIME_WAIT"),
        conn("TCP", "192.0.2.3", "10.0.0.80", 80, "10.0.1.2", 80, "ESTABLISHED"),
        conn("TCP", "192.0.2.4", "10.0.0.80", 80, "10.0.1.2", 80, "ESTABLISHED"),
        # A persistence template is not a connection.
        conn("TCP", "192.0.2.4", "10.0.0.80", 80, "10.0.1.2", 80, "NONE", cport=0),
        # fwmark: the virtual address is whatever was marked; matched through the real server.
        conn("TCP", "198.51.100.9", "10.0.0.25", 25, "10.0.2.1", 25, "SYN_RECV"),
        conn("IP", "198.51.100.9", "0.0.0.7", 0, "10.0.2.1", 25, "NONE", cport=0),
        # Nobody's: a service that vanished between the dumps.
        conn("UDP", "192.0.2.5", "10.0.0.53", 53, "10.0.3.1", 53, "UDP"),
    ]
    by_service, by_dest = aggregate_connections(services, connections)
    assert dict(by_service[WEB]) == {"ESTABLISHED": 3, "TIME_WAIT": 1}
    assert by_service[WEB].total == 4
    assert dict(by_dest[DestKey(WEB, "10.0.1.1", 80)]) == {"ESTABLISHED": 1, "TIME_WAIT": 1}
    assert dict(by_dest[DestKey(WEB, "10.0.1.2", 80)]) == {"ESTABLISHED": 2}
    assert dict(by_service[MAIL]) == {"SYN_RECV": 1}
    assert dict(by_dest[DestKey(MAIL, "10.0.2.1", 25)]) == {"SYN_RECV": 1}
    assert set(by_service) == {WEB, MAIL}
    assert by_service[WEB]["CLOSE"] == 0
    # The real servers' counts are a mapping by DestKey, and only by DestKey.
    assert set(by_dest) == {DestKey(WEB, "10.0.1.1", 80), DestKey(WEB, "10.0.1.2", 80), DestKey(MAIL, "10.0.2.1", 25)}
    assert len(by_dest) == 3 and by_dest.get(("10.0.1.1", 80)) is None
    assert by_dest.get(DestKey(WEB, "10.0.3.1", 80)) is None and by_dest.get(DestKey(MAIL, "10.0.1.1", 80)) is None


def test_aggregates_of_the_demo_match_its_dest_counts():
    poller = Poller(DemoBackend(seed=3, tick=1.0), on_snapshot=lambda s: None)
    for _ in range(5):
        snapshot = poller.poll_once()
    assert snapshot.error is None
    fwmark_seen = False
    for service in snapshot.services:
        total = 0
        for dest in service.dests:
            states = snapshot.dest_states.get(service.dest_key(dest))
            established = states["ESTABLISHED"] if states else 0
            counted = states.total if states else 0
            assert (dest.active_conns, dest.inactive_conns) == (established, counted - established)
            total += counted
            fwmark_seen |= bool(service.key.fwmark and counted)
        assert snapshot.service_states[service.key].total == total
    assert fwmark_seen


def test_history_is_bounded_and_follows_the_rates():
    poller = Poller(DemoBackend(seed=4, tick=1.0), on_snapshot=lambda s: None, history=5)
    snapshots = [poller.poll_once() for _ in range(9)]
    last = snapshots[-1]
    for service in last.services:
        history = last.service_history[service.key]
        assert len(history) == 5
        assert history == tuple(s.find_service(service.key).rates.cps for s in snapshots[-5:])
        for dest in service.dests:
            assert len(last.dest_history[service.dest_key(dest)]) == 5
    assert [s.seq for s in snapshots] == list(range(1, 10))


def test_history_forgets_a_removed_real_server():
    backend = DemoBackend(seed=4, tick=1.0)
    poller = Poller(backend, on_snapshot=lambda s: None)
    gone = DestKey(ServiceKey("inet", "udp", "10.10.10.53", 53), "10.10.30.2", 53)
    assert gone in poller.poll_once().dest_history
    result = poller.run_command(RemoveDest(gone))
    assert result.ok, result.message
    snapshot = poller.poll_once()
    assert gone not in snapshot.dest_history
    assert snapshot.find_dest(gone) is None


class FlakyBackend(Backend):
    """The demo, except that polls fail while `failure` is set, and every call is recorded."""

    name = "flaky"

    def __init__(self, failure: Exception | None = None, open_failure: Exception | None = None):
        self.demo = DemoBackend(seed=1, tick=1.0)
        self.failure = failure
        self.open_failure = open_failure
        self.polls = 0
        self.calls: list[tuple[str, str]] = []  # (what, thread name)
        self.opened = self.closed = 0

    def open(self):
        self.opened += 1
        self.calls.append(("open", threading.current_thread().name))
        if self.open_failure:
            raise self.open_failure

    def close(self):
        self.closed += 1

    def poll(self, connections=True):
        self.polls += 1
        self.calls.append(("poll", threading.current_thread().name))
        if self.failure:
            raise self.failure
        return self.demo.poll(connections)

    def set_weight(self, dest, weight):
        self.calls.append(("set_weight", threading.current_thread().name))
        self.demo.set_weight(dest, weight)


def test_a_failed_poll_keeps_the_last_good_state_and_says_why():
    backend = FlakyBackend()
    poller = Poller(backend, on_snapshot=lambda s: None)
    good = poller.poll_once()
    assert good.error is None and good.services
    backend.failure = IpvsUnavailable("IPVS is not loaded: run modprobe ip_vs")
    failed = poller.poll_once()
    assert failed.error == "IPVS is not loaded: run modprobe ip_vs"
    assert failed.state is good.state
    assert failed.service_states == good.service_states
    assert failed.seq == good.seq + 1
    backend.failure = RuntimeError("netlink socket closed")
    odd = poller.poll_once()
    assert odd.error == "poll failed: RuntimeError: netlink socket closed"
    assert odd.state is good.state
    backend.failure = None
    recovered = poller.poll_once()
    assert recovered.error is None
    assert recovered.state is not good.state


def test_a_backend_that_cannot_open_refuses_commands():
    backend = FlakyBackend(open_failure=NotPermitted("ipvsman needs CAP_NET_ADMIN to read IPVS"))
    snapshot = snapshot_once(backend)
    assert snapshot.error == "ipvsman needs CAP_NET_ADMIN to read IPVS"
    assert not snapshot.writable
    assert snapshot.state == RawState()
    assert backend.polls == 0 and backend.closed == 1
    poller = Poller(backend, on_snapshot=lambda s: None)
    poller.open_error = "ipvsman needs CAP_NET_ADMIN to read IPVS"
    result = poller.run_command(SetWeight(DestKey(WEB, "10.0.1.1", 80), 1, 2))
    assert not result.ok
    assert "refused" in result.message and "CAP_NET_ADMIN" in result.message


def test_snapshot_once_opens_polls_and_closes_in_this_thread():
    backend = FlakyBackend()
    snapshot = snapshot_once(backend, connections=False)
    assert snapshot.error is None and snapshot.backend == "flaky"
    assert snapshot.state.connections is None
    assert [what for what, _ in backend.calls] == ["open", "poll"]
    assert {thread for _, thread in backend.calls} == {threading.current_thread().name}
    assert backend.closed == 1


def start(backend: Backend, **options) -> tuple[Poller, queue.Queue, queue.Queue]:
    snapshots: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue()
    poller = Poller(backend, on_snapshot=snapshots.put, on_result=results.put, **options)
    poller.start()
    return poller, snapshots, results


def next_matching(snapshots: queue.Queue, predicate):
    while True:
        snapshot = snapshots.get(timeout=WAIT)
        if predicate(snapshot):
            return snapshot


def test_commands_run_in_the_polling_thread_and_report_back():
    backend = FlakyBackend()
    poller, snapshots, results = start(backend, interval=3600)  # polls happen only when woken
    try:
        first = snapshots.get(timeout=WAIT)
        web3 = DestKey(ServiceKey("inet", "tcp", "10.10.10.80", 80), "10.10.20.13", 80)
        assert first.find_dest(web3).weight == 50
        poller.submit(SetWeight(web3, 50, 7))
        result = results.get(timeout=WAIT)
        assert result.ok
        assert result.message == f"weight of {web3} 50 -> 7"
        assert ("set_weight", "ipvsman-poller") in backend.calls
        assert all(thread == "ipvsman-poller" for _, thread in backend.calls)
        # The change shows at once: a poll follows the command without waiting for the interval.
        assert next_matching(snapshots, lambda s: True).find_dest(web3).weight == 7

        poller.submit(SetWeight(DestKey(web3.service, "10.10.20.99", 80), 1, 2))
        refused = results.get(timeout=WAIT)
        assert not refused.ok
        assert refused.message.startswith("set weight of")
        assert "refused: no real server 10.10.20.99:80" in refused.message

        poller.submit(AddDest(web3.service, "10.10.20.14", 80, "route", 5))
        unsupported = results.get(timeout=WAIT)
        assert not unsupported.ok and "cannot add real servers" in unsupported.message

        poller.submit(CallInPoller(lambda b: f"ran in {threading.current_thread().name}", label="probe"))
        assert results.get(timeout=WAIT).message == "ran in ipvsman-poller"

        def explode(b):
            raise ValueError("bad things")

        poller.submit(CallInPoller(explode, label="explode"))
        failed = results.get(timeout=WAIT)
        assert not failed.ok and failed.message == "explode: failed: bad things"
        assert poller.is_alive()  # an exception in a command does not end the thread
    finally:
        poller.stop()
    assert not poller.is_alive()
    assert backend.closed == 1


def test_pause_stops_polling_and_resume_restarts_it():
    backend = FlakyBackend()
    poller, snapshots, _ = start(backend, interval=0.01)
    try:
        snapshots.get(timeout=WAIT)
        poller.pause()
        assert poller.paused
        paused = next_matching(snapshots, lambda s: s.paused)
        polls = backend.polls
        for _ in range(5):
            again = snapshots.get(timeout=WAIT)
            assert again.paused
            assert again.state is paused.state  # the last good state, shown as it was
        assert backend.polls == polls
        poller.resume()
        resumed = next_matching(snapshots, lambda s: not s.paused)
        assert backend.polls > polls
        assert resumed.state is not paused.state
    finally:
        poller.stop()


def test_a_failing_open_in_the_thread_is_reported_not_raised():
    backend = FlakyBackend(open_failure=IpvsUnavailable("no IPVS in this kernel: modprobe ip_vs"))
    poller, snapshots, results = start(backend, interval=3600)
    try:
        snapshot = snapshots.get(timeout=WAIT)
        assert snapshot.error == "no IPVS in this kernel: modprobe ip_vs"
        assert not snapshot.writable
        poller.submit(SetWeight(DestKey(WEB, "10.0.1.1", 80), 1, 2))
        result = results.get(timeout=WAIT)
        assert not result.ok and "modprobe ip_vs" in result.message
        assert backend.polls == 0
    finally:
        poller.stop()


def test_a_backend_that_failed_to_open_is_tried_again_and_polls_begin(monkeypatch):
    monkeypatch.setattr("ipvsman.poller.OPEN_RETRY_FIRST", 0.05)
    backend = FlakyBackend(open_failure=IpvsUnavailable("no IPVS in this kernel: modprobe ip_vs"))
    poller, snapshots, _ = start(backend, interval=0.05)
    try:
        first = snapshots.get(timeout=WAIT)
        assert first.error and backend.polls == 0
        backend.open_failure = None  # the operator loaded ip_vs
        good = next_matching(snapshots, lambda s: s.error is None)
        assert good.services and backend.polls > 0 and backend.opened >= 2
    finally:
        poller.stop()


@pytest.mark.parametrize("error", [BackendError("boom"), NotPermitted("EPERM: not permitted")])
def test_poll_errors_of_every_kind_become_messages(error):
    backend = FlakyBackend(failure=error)
    snapshot = Poller(backend, on_snapshot=lambda s: None).poll_once()
    assert snapshot.error == str(error)
    assert snapshot.state == RawState()


def test_assured_templates_are_not_counted_and_port0_fwmark_servers_match_by_address():
    fwmark = ServiceKey("inet", None, "", 0, fwmark=7)
    service = Service(fwmark, "rr", dests=(Dest("10.0.0.5", 0, "route", 1),))
    connections = [
        # The kernel reports the virtual port as the destination port of a port-0 real server.
        Connection("TCP", "192.0.2.1", 40000, "10.0.0.1", 80, "10.0.0.5", 80, "ESTABLISHED", 60),
        Connection("TCP", "192.0.2.1", 0, "0.0.0.7", 0, "10.0.0.5", 0, "ASSURED", 300),
        Connection("IP", "192.0.2.2", 0, "0.0.0.7", 0, "10.0.0.5", 0, "NONE", 300),
    ]
    by_service, by_dest = aggregate_connections([service], connections)
    assert by_service[fwmark]["ESTABLISHED"] == 1
    assert by_service[fwmark].total == 1
    assert by_dest[service.dest_key(service.dests[0])].total == 1


def test_the_layout_number_changes_only_when_services_or_real_servers_come_or_go():
    backend = FlakyBackend()
    poller = Poller(backend, on_snapshot=lambda snapshot: None)
    first = poller.poll_once()
    service = first.services[0]
    dest = service.dests[0]
    key = service.dest_key(dest)
    backend.set_weight(key, dest.weight + 3)
    second = poller.poll_once()  # new counters and a new weight, the same services and servers
    assert second.find_dest(key).weight == dest.weight + 3
    assert first.layout is not None and second.layout == first.layout
    backend.demo.remove_dest(key)
    third = poller.poll_once()
    assert third.find_dest(key) is None and third.layout != second.layout
    backend.failure = BackendError("gone")
    failed = poller.poll_once()  # the last good state, so its layout
    assert failed.error and failed.layout == third.layout


def test_the_real_server_history_is_a_mapping_by_dest_key():
    from ipvsman.model import Dest, Rates, Service

    web = ServiceKey("inet", "tcp", "10.0.0.1", 80)

    def services(*dests):
        return (Service(web, "rr", dests=tuple(Dest(address, 8080, "masq", 1, rates=Rates(cps=cps)) for address, cps in dests)),)

    rates = RateHistory(length=3)
    rates.add(services(("10.1.0.1", 1)), layout=1)
    _, history = rates.add(services(("10.1.0.1", 2), ("10.1.0.2", 3)), layout=2)
    assert history[DestKey(web, "10.1.0.1", 8080)] == (1, 2)
    assert history.get(DestKey(web, "10.1.0.3", 8080)) is None
    assert history.get(DestKey(ServiceKey("inet", "udp", "10.0.0.1", 80), "10.1.0.1", 8080)) is None
    assert history.get(("10.1.0.1", 8080)) is None  # only DestKeys are keys
    assert len(history) == 2 and set(history) == {DestKey(web, "10.1.0.1", 8080), DestKey(web, "10.1.0.2", 8080)}
    assert dict(history) == {DestKey(web, "10.1.0.1", 8080): (1, 2), DestKey(web, "10.1.0.2", 8080): (3,)}
    # Bounded, and a snapshot's history stays what it was when later polls come.
    for cps in (4, 5, 6):
        _, later = rates.add(services(("10.1.0.1", cps), ("10.1.0.2", cps)), layout=2)
    assert later[DestKey(web, "10.1.0.1", 8080)] == (4, 5, 6)
    assert history[DestKey(web, "10.1.0.1", 8080)] == (1, 2)
    # A real server that left and came back starts again.
    rates.add(services(("10.1.0.2", 7)), layout=3)
    _, back = rates.add(services(("10.1.0.1", 8), ("10.1.0.2", 9)), layout=4)
    assert back[DestKey(web, "10.1.0.1", 8080)] == (8,) and back[DestKey(web, "10.1.0.2", 8080)] == (6, 7, 9)

def test_the_arrangement_is_worked_out_once_a_layout():
    backend = DemoBackend(seed=4, tick=1.0)
    poller = Poller(backend, on_snapshot=lambda s: None)
    first, second = poller.poll_once(), poller.poll_once()
    assert first.layout == second.layout and second.arrangement is first.arrangement
    services = second.services
    assert [services[i].key for i in first.arrangement.by_position] == sorted(
        (s.key for s in services), key=service_sort_key
    )
    assert set(first.arrangement.servers) == {d.address for s in services for d in s.dests}
    gone = DestKey(ServiceKey("inet", "udp", "10.10.10.53", 53), "10.10.30.2", 53)
    assert poller.run_command(RemoveDest(gone)).ok
    third = poller.poll_once()
    assert third.layout != second.layout and third.arrangement is not second.arrangement
    pairs = [pair for pairs in third.arrangement.servers.values() for pair in pairs]
    assert len(pairs) == sum(len(s.dests) for s in third.services)
