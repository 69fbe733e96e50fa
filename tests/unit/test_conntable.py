"""The connection table on a budget: when and how much is read, where counts go, and how samples scale."""

from __future__ import annotations

import threading
import time

import pytest

from ipvsman import conntable
from ipvsman.backend import Backend
from ipvsman.conntable import Placement, TableBudget, TableReader, place, routing_counts, scale
from ipvsman.demo import DemoBackend
from ipvsman.model import Connection, Dest, RawState, Service, ServiceKey
from ipvsman.poller import Poller, aggregate_connections


def tcp(address: str, port: int) -> ServiceKey:
    return ServiceKey("inet", "tcp", address, port)


def fwm(mark: int) -> ServiceKey:
    return ServiceKey("inet", None, "", 0, mark)


def conn(virtual, vport, dest, dport, state="ESTABLISHED", protocol="TCP", client="198.51.100.1", cport=40000):
    return Connection(protocol, client, cport, virtual, vport, dest, dport, state, 100)


def service(key, *dests, persistent=None):
    return Service(key, "wlc", persistent=persistent, dests=tuple(dests))


def dest(address, port, active=0, inactive=0, persist=0):
    return Dest(address, port, "masq", 1, active_conns=active, inactive_conns=inactive, persist_conns=persist)


# -- the budget ---------------------------------------------------------------------------------
def test_a_read_that_took_3_s_waits_60_s_at_5_percent():
    budget = TableBudget(5)
    assert budget.due(0.0)
    budget.record(100_000, 3.0, started=10.0)
    assert not budget.due(69.9) and budget.due(70.0)
    assert budget.wait_for(3.0) == pytest.approx(60.0)


def test_budget_0_never_reads_and_no_budget_always_does():
    never, always = TableBudget(0), TableBudget(None)
    assert not never.due(0.0) and not never.due(1e9)
    always.record(1_000_000, 500.0, started=0.0)
    assert always.due(0.0) and always.limit(10**7) is None


def test_budget_out_of_range_is_refused():
    with pytest.raises(ValueError):
        TableBudget(101)


def test_the_first_read_is_whole_only_for_a_table_the_kernel_counts_small():
    assert TableBudget(5).limit(conntable.FIRST_FULL) is None
    assert TableBudget(5).limit(conntable.FIRST_FULL + 1) == conntable.FIRST_SAMPLE
    assert TableBudget(5).limit(None) == conntable.FIRST_SAMPLE  # size unknown (no netlink)


def test_a_table_whose_whole_read_fits_the_budget_is_read_whole():
    budget = TableBudget(5)
    budget.record(10_000, 0.1, started=0.0)  # 200,000 entries: 0.1 * 20^2 = 40 s > 3 s allowed a minute
    assert budget.limit(200_000) is not None
    assert budget.limit(50_000) is None  # 0.1 * 25 = 2.5 s <= 0.05 * 60


def test_a_sample_is_sized_to_the_budget_and_grows_or_shrinks_by_at_most_growth():
    budget = TableBudget(5)
    target = 0.05 * conntable.SAMPLE_PERIOD  # 0.75 s
    budget.record(10_000, target / 4, started=0.0)  # 4x under: sqrt(4) = 2x larger, quadratic cost
    assert budget.limit(10**7) == 20_000
    budget.record(10_000, target / 1000, started=0.0)  # far under: at most GROWTH
    assert budget.limit(10**7) == 10_000 * conntable.GROWTH
    budget.record(40_000, target * 2, started=0.0)  # 2x over: linear below, half
    assert budget.limit(10**7) == 20_000
    budget.record(40_000, target * 100, started=0.0)
    assert budget.limit(10**7) == 10_000  # at most GROWTH smaller
    budget.record(1_000, 1000.0, started=0.0)
    assert budget.limit(10**7) == conntable.MIN_SAMPLE


def test_estimates_grow_with_the_square_above_what_was_read_and_linearly_below():
    budget = TableBudget(5)
    assert budget.estimate(1000) is None
    budget.record(10_000, 1.0, started=0.0)
    assert budget.estimate(20_000) == pytest.approx(4.0)
    assert budget.estimate(5_000) == pytest.approx(0.5)


# -- where counts go ----------------------------------------------------------------------------
def test_a_persistent_port_0_service_gets_the_connections_of_every_port_of_its_vip():
    catch_all = service(tcp("192.0.2.1", 0), dest("10.0.0.1", 0, 2, 1), persistent=300)
    exact = service(tcp("192.0.2.1", 443), dest("10.0.0.2", 443, 1))
    table = [
        conn("192.0.2.1", 80, "10.0.0.1", 80),
        conn("192.0.2.1", 22, "10.0.0.1", 22),
        conn("192.0.2.1", 80, "10.0.0.1", 80, "TIME_WAIT"),
        conn("192.0.2.1", 443, "10.0.0.2", 443),  # an exact service wins over port 0
        conn("192.0.2.1", 0, "10.0.0.1", 0, "NONE", protocol="TCP"),  # the template: not counted
    ]
    states, dests = aggregate_connections([catch_all, exact], table)
    assert dict(states[catch_all.key]) == {"ESTABLISHED": 2, "TIME_WAIT": 1}
    assert dict(states[exact.key]) == {"ESTABLISHED": 1}
    placement = place([catch_all, exact], routing_counts(table))
    assert placement.dest_states[catch_all.key] == {("10.0.0.1", 80): {"ESTABLISHED": 1, "TIME_WAIT": 1},
                                                    ("10.0.0.1", 22): {"ESTABLISHED": 1}}  # fmt: skip


def test_a_real_server_shared_by_two_fwmark_services_is_ambiguous_not_guessed():
    one = service(fwm(1), dest("10.0.0.9", 80, 2))
    two = service(fwm(2), dest("10.0.0.9", 80, 1))
    alone = service(fwm(3), dest("10.0.0.7", 80, 1))
    table = [
        conn("192.0.2.5", 80, "10.0.0.9", 80),
        conn("192.0.2.6", 80, "10.0.0.9", 80),
        conn("192.0.2.5", 80, "10.0.0.9", 80, "FIN_WAIT"),
        conn("192.0.2.7", 80, "10.0.0.7", 80),
    ]
    placement = place([one, two, alone], routing_counts(table))
    assert placement.ambiguous == {(one.key, two.key): {"ESTABLISHED": 2, "FIN_WAIT": 1}}
    assert one.key not in placement.service_states and two.key not in placement.service_states
    assert placement.service_states[alone.key] == {"ESTABLISHED": 1}


# -- scaling ------------------------------------------------------------------------------------
def test_scaled_counts_add_up_to_the_exact_total_in_proportion():
    assert scale({"ESTABLISHED": 1, "TIME_WAIT": 3}, 1000) == {"ESTABLISHED": 250, "TIME_WAIT": 750}
    parts = scale({"A": 1, "B": 1, "C": 1}, 100)
    assert sum(parts.values()) == 100 and sorted(parts.values()) == [33, 33, 34]
    assert scale({"A": 5}, 0) == {} and scale({}, 10) == {}


def test_a_sample_gives_estimated_counts_scaled_to_the_kernel_totals():
    web = service(tcp("192.0.2.1", 80), dest("10.0.0.1", 80, 600, 400), dest("10.0.0.2", 80, 0, 10))
    sample = [conn("192.0.2.1", 80, "10.0.0.1", 80)] * 3 + [conn("192.0.2.1", 80, "10.0.0.1", 80, "TIME_WAIT")] * 2
    placement = place([web], routing_counts(sample))
    states, dests, _ = conntable.counts_for_snapshot(placement, [web], exact=False)
    counts = states[web.key]
    assert counts.estimated and counts.total == 1010 and dict(counts) == {"ESTABLISHED": 606, "TIME_WAIT": 404}
    assert dests[web.dest_key(web.dests[0])].total == 1000
    assert web.dest_key(web.dests[1]) not in dests  # nothing sampled: no made-up states
    exact_states, _, _ = conntable.counts_for_snapshot(placement, [web], exact=True)
    assert not exact_states[web.key].estimated and exact_states[web.key].total == 5


# -- the reader ---------------------------------------------------------------------------------
class TableOnly(Backend):
    """A backend whose table has `size` entries; records the limits it was asked for."""

    name = "stand-in"

    def __init__(self, size: int, services=(), delay: float = 0.0, cpu=None, cost: float = 0.0):
        self.size, self.services, self.delay = size, tuple(services), delay
        self.cpu, self.cost = cpu, cost  # a read moves a stand-in CPU clock by `cost`
        self.limits: list[int | None] = []
        self.threads: set[str] = set()
        self.polls = 0

    def open(self):
        pass

    def poll(self, connections=True):
        self.polls += 1
        return RawState(services=self.services)

    def read_table(self, limit=None, want_pe_data=False):
        self.limits.append(limit)
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.cpu is not None:
            self.cpu.now += self.cost
        count = self.size if limit is None else min(limit, self.size)
        table = [conn("192.0.2.1", 80, "10.0.0.1", 80, client=f"198.51.{i // 250 % 250}.{i % 250}") for i in range(count)]
        return table, count == self.size, 0

    def set_weight(self, dest, weight):
        pass


class Ticks:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_reader_reads_when_due_and_charges_each_read_its_cost():
    web = service(tcp("192.0.2.1", 80), dest("10.0.0.1", 80, 50_000))
    mono, cpu = Ticks(), Ticks()
    backend = TableOnly(30_000, [web], cpu=cpu, cost=1.0)
    reader = TableReader(backend, TableBudget(5), monotonic=mono, cpu_clock=cpu)
    reader.hint([web])
    first = reader.read_if_due()
    assert first is not None and not first.complete and backend.limits == [conntable.FIRST_SAMPLE]
    assert first.cpu_seconds == 1.0 and first.expected == 50_000
    mono.now = 19.9
    assert reader.read_if_due() is None  # 1 s at 5%: 20 s
    mono.now = 20.0
    assert reader.read_if_due() is not None
    reader.request()
    assert reader.read_if_due().forced and backend.limits[-1] is None  # forced: whole, whatever the budget


def test_polls_go_on_while_a_slow_read_runs_in_its_own_thread():
    web = service(tcp("192.0.2.1", 80), dest("10.0.0.1", 80, 100))
    backend = TableOnly(100, [web], delay=0.6)
    snapshots = []
    poller = Poller(backend, snapshots.append, interval=0.05, conn_budget=100.0)
    poller.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(s.table.read for s in snapshots):
            time.sleep(0.05)
    finally:
        poller.stop()
    first_with_table = next(i for i, s in enumerate(snapshots) if s.table.read)
    assert first_with_table >= 5  # polls came every 0.05 s while the 0.6 s read ran
    assert backend.threads == {"ipvsman-table"}
    assert snapshots[first_with_table].state.connections is not None
    assert snapshots[first_with_table].service_states[web.key].total == 100


def test_a_large_demo_table_is_sampled_first_and_its_states_sum_to_the_kernel_totals():
    backend = DemoBackend.scaled(4, 5, 40_000, seed=3, tick=1.0)
    poller = Poller(backend, lambda s: None, conn_budget=5.0)
    backend.open()
    snapshot = poller.poll_once()
    read = snapshot.table.read
    assert read is not None and not read.complete and read.entries == conntable.FIRST_SAMPLE
    assert not snapshot.table.current
    for svc in snapshot.services:
        counts = snapshot.service_states.get(svc.key)
        if counts:
            assert counts.estimated
            assert counts.total == sum(d.active_conns + d.inactive_conns for d in svc.dests)


def test_without_a_budget_every_poll_reads_the_whole_table_and_counts_are_exact():
    backend = DemoBackend(seed=1, tick=1.0)
    poller = Poller(backend, lambda s: None)
    snapshot = poller.poll_once()
    assert snapshot.table.current and snapshot.table.read.complete
    assert snapshot.table.read.entries == len(snapshot.connections)
    assert all(not counts.estimated for counts in snapshot.service_states.values())


def test_slow_polls_stretch_the_interval_so_they_never_run_back_to_back():
    poller = Poller(TableOnly(0), lambda s: None, interval=1.0)
    assert poller.period(0.2) == 1.0
    assert poller.period(1.3) == pytest.approx(2.6)


def test_placement_is_reused_while_the_read_and_the_layout_hold(monkeypatch):
    backend = DemoBackend(seed=1, tick=1.0)
    calls = []
    real_place = conntable.place

    def counting(services, routing) -> Placement:
        calls.append(1)
        return real_place(services, routing)

    monkeypatch.setattr(conntable, "place", counting)
    poller = Poller(backend, lambda s: None, conn_budget=0.0)  # never read by the budget
    poller.read_table_now()
    poller.poll_once()
    poller.poll_once()
    poller.poll_once()
    assert len(calls) == 1  # one read, one layout: placed once


def test_once_reads_a_large_table_as_a_prefix_and_says_its_counts_are_estimates():
    import io
    import json

    from ipvsman.output import EXIT_OK, print_once

    out = io.StringIO()
    backend = DemoBackend.scaled(4, 5, 40_000, seed=3, tick=1.0)
    assert print_once(backend, as_json=True, connections=False, stream=out, conn_budget=5.0) == EXIT_OK
    table = json.loads(out.getvalue())["connection_table"]
    assert table["complete"] is False and table["conn_states_estimated"] is True
    assert table["entries_read"] == conntable.FIRST_SAMPLE and table["entries_expected"] > conntable.FIRST_FULL
    text = io.StringIO()
    print_once(DemoBackend.scaled(4, 5, 40_000, seed=3, tick=1.0), as_json=False, connections=False, stream=text,
               conn_budget=5.0)  # fmt: skip
    assert "counts by state are estimates" in text.getvalue()
    listed = io.StringIO()  # --connections lists the whole table, whatever the budget
    print_once(DemoBackend.scaled(4, 5, 40_000, seed=3, tick=1.0), as_json=True, connections=True, stream=listed,
               conn_budget=5.0)  # fmt: skip
    document = json.loads(listed.getvalue())
    assert document["connection_table"]["complete"] and len(document["connections"]) > conntable.FIRST_FULL


def test_the_thread_reads_at_most_once_a_poll_however_cheap_the_read():
    web = service(tcp("192.0.2.1", 80), dest("10.0.0.1", 80, 1))
    backend = TableOnly(1, [web])
    reader = TableReader(backend, TableBudget(100))
    reader.start()
    try:
        reader.hint([web])
        deadline = time.monotonic() + 10
        while not backend.limits and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # a cheap read is due again at once; no poll came: no read
        assert len(backend.limits) == 1
        reader.hint([web])
        while len(backend.limits) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(backend.limits) == 2
    finally:
        reader.stop()

