"""The sender and the monitor over loopback only, and their rate limiter and statistics on a fake clock."""

from __future__ import annotations

import ipaddress
import os
import random
import socket
import subprocess
import threading
import time

import pytest

from ipvsman.model import Connection, Daemon, RawState
from ipvsman.sync import protocol
from ipvsman.sync.monitor import SyncMonitor
from ipvsman.sync.resync import (
    TEST_NET4,
    JobOutcome,
    SyncJob,
    SyncSettings,
    build_plan,
    plan_resync,
    run_sync_test,
)
from ipvsman.sync.sender import (
    SendProgress,
    SyncConfigError,
    SyncSocket,
    TokenBucket,
    send_messages,
)

GROUP = "224.0.0.81"


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> bool:
        self.now += seconds
        return False  # as Event.wait: not cancelled


# -- on a fake clock -------------------------------------------------------------------------------


def test_token_bucket_spaces_messages_at_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=1000, burst=40, clock=clock)
    times = []
    for _ in range(26):
        assert bucket.acquire(40, clock.advance)
        times.append(clock.now)
    # the first 40 pass at once; each later 40 waits 40 ms
    assert times[0] == 1000.0
    assert [round(b - a, 6) for a, b in zip(times, times[1:])] == [0.04] * 25
    assert (26 - 1) * 40 / (times[-1] - times[0]) == pytest.approx(1000)


def test_token_bucket_credits_oversleeping_and_caps_bursts():
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=10, clock=clock)
    assert bucket.acquire(10, clock.advance)
    clock.advance(0.15)  # overslept: 15 units of credit, capped at 10
    assert bucket.delay(10) == 0
    bucket.take(10)
    assert bucket.delay(10) == pytest.approx(0.1)
    assert bucket.delay(25) == pytest.approx(0.25)  # more than a burst waits for all of it


def test_token_bucket_stops_when_cancelled():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert bucket.acquire(5, clock.advance)
    assert not bucket.acquire(5, lambda seconds: True)


class ListSocket:
    def __init__(self):
        self.sent = []

    def send(self, data):
        self.sent.append(data)


def test_send_messages_reports_progress_timeline_and_rate():
    clock = FakeClock()
    messages = protocol.pack([conn(i) for i in range(400)], syncid=1).messages  # 40 a message: 10
    progress: list[SendProgress] = []

    class Cancel(threading.Event):
        def wait(self, timeout=None):
            clock.advance(timeout)
            return False

    report = send_messages(ListSocket(), messages, rate=200, progress=progress.append, cancel=Cancel(), clock=clock)
    assert report.complete and (report.connections, report.messages) == (400, 10)
    assert [t for t, _ in report.timeline] == pytest.approx([0.2 * i for i in range(10)])
    assert report.achieved_rate == pytest.approx(200)
    assert progress[-1] == SendProgress(400, 400, 10, 10, pytest.approx(1.8))
    assert [p.connections for p in progress] == [40, 80, 120, 160, 200, 240, 280, 320, 360, 400]


def test_monitor_statistics_per_syncid_on_a_fake_clock():
    clock, wall = FakeClock(), FakeClock(1.7e9)
    monitor = SyncMonitor("lo", window=2.0, keep=3, clock=clock, wall_clock=wall)
    for tick in range(4):
        monitor.feed(protocol.pack([conn(tick * 10 + i) for i in range(5)], syncid=10).messages[0].data, "10.0.0.1")
        monitor.feed(protocol.pack([conn(99)], syncid=20, version=0).messages[0].data, "10.0.0.2")
        clock.advance(0.5)
        wall.advance(0.5)
    monitor.feed(b"\x00\x01\x02", "10.0.0.3")
    stats = monitor.stats()
    assert (stats.messages, stats.connections, stats.malformed, stats.rejected) == (9, 24, 1, 0)
    assert stats.last_error == "10.0.0.3: 3 bytes: shorter than a message header"
    ten, twenty = stats.by_syncid
    assert (ten.syncid, ten.version, ten.messages, ten.connections, ten.senders) == (10, 1, 4, 20, ("10.0.0.1",))
    assert (twenty.syncid, twenty.version, twenty.messages, twenty.connections) == (20, 0, 4, 4)
    # the window is 2 s: at t=2.0 the messages of t=0.0 have left it
    assert ten.messages_per_second == pytest.approx(3 / 2.0)
    assert ten.connections_per_second == pytest.approx(15 / 2.0)
    assert [r.conn.client_port - 1024 for r in stats.latest] == [99, 34, 33]  # newest first, 3 kept
    clock.advance(10)
    assert monitor.stats().messages_per_second == 0 and not monitor.stats().flowing


def test_monitor_for_daemons_prefers_the_backup():
    daemons = (Daemon("master", "eth0", 1), Daemon("backup", "eth1", 2, group="239.0.0.9", port=9000))
    monitor = SyncMonitor.for_daemons(daemons)
    assert (monitor.interface, monitor.group, monitor.port) == ("eth1", "239.0.0.9", 9000)
    with pytest.raises(SyncConfigError, match="no sync daemon is running here"):
        SyncMonitor.for_daemons(())


def conn(port: int) -> protocol.SyncConn:
    return protocol.SyncConn(6, "198.51.100.7", 1024 + port, "10.0.0.1", 80, "10.0.1.1", 8080, 1, 0, 300)


# -- over loopback ---------------------------------------------------------------------------------


def _probe(netns: str | None, port: int) -> bool:
    monitor = SyncMonitor("lo", GROUP, port, netns=netns)
    try:
        monitor.start()
        with SyncSocket("lo", GROUP, port, netns=netns) as sock:
            for _ in range(20):
                sock.send(protocol.pack([conn(0)], syncid=1).messages[0].data)
                time.sleep(0.05)
                if monitor.stats().messages:
                    return True
        return False
    except (SyncConfigError, OSError):
        return False
    finally:
        monitor.stop()


@pytest.fixture(scope="module")
def loopback():
    """Where multicast over `lo` works: this namespace, else one made for the tests (root only)."""
    port = random.randrange(20000, 60000)
    if _probe(None, port):
        yield None, port
        return
    if os.geteuid() != 0:
        pytest.skip("multicast over lo does not work here, and making a network namespace needs root")
    name = f"ipvsman-synclo-{os.getpid()}"
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        ["ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "lo"],
    ]
    try:
        for command in commands:
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"multicast over lo does not work here, and {' '.join(command)} failed: {done.stderr.strip()}")
        if not _probe(name, port):
            pytest.skip("multicast over lo works neither here nor in a network namespace of its own")
        yield name, port
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_resync_over_loopback_is_decoded_by_the_monitor(loopback):
    netns, port = loopback
    table = [
        Connection("TCP", "198.51.100.1", 40000 + i, "10.0.0.1", 80, "10.0.1.1", 8080, "ESTABLISHED", 500)
        for i in range(100)
    ] + [Connection("TCP", "2001:db8::1", 1234, "fd00::1", 443, "fd00::2", 443, "SYN_RECV", 30)]
    settings = SyncSettings("lo", syncid=42, port=port, rate=100_000)
    plan = build_plan(table, (), settings, netns=netns)
    with SyncMonitor("lo", GROUP, port, netns=netns, keep=200) as monitor:
        report = plan.run()
        deadline = time.monotonic() + 10
        while monitor.stats().connections < 101 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = monitor.stats()
    assert report.complete and (report.connections, report.messages) == (101, 3)
    assert (stats.messages, stats.connections, stats.malformed) == (3, 101, 0)
    (only,) = stats.by_syncid
    assert (only.syncid, only.version, only.messages, only.connections) == (42, 1, 3, 101)
    received = sorted((r.conn for r in stats.latest), key=lambda c: (c.client, c.client_port))
    expected = sorted((protocol.from_connection(c) for c in table), key=lambda c: (c.client, c.client_port))
    assert received == expected
    print(f"\nloopback: {report.connections} connections in {report.messages} messages, {report.seconds * 1000:.1f} ms")


def test_monitor_counts_malformed_datagrams_from_the_wire(loopback):
    netns, port = loopback
    with SyncMonitor("lo", GROUP, port, netns=netns) as monitor:
        with SyncSocket("lo", GROUP, port, netns=netns) as sock:
            sock.send(b"\x01\x0a\x00\x63garbage")  # size field 99, 11 bytes
            sock.send(protocol.pack([conn(1)], syncid=10).messages[0].data)
        deadline = time.monotonic() + 10
        while monitor.stats().messages < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = monitor.stats()
    assert (stats.messages, stats.malformed, stats.connections) == (2, 1, 1)
    assert stats.last_error.endswith("size field 99 != datagram length 11")


def test_sender_turns_multicast_loopback_off(loopback):
    netns, port = loopback
    with SyncSocket("lo", GROUP, port, ttl=3, netns=netns) as sock:
        assert sock._sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 0
        assert sock._sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 3
    with SyncSocket("lo", GROUP, port, netns=netns, loop=True) as sock:
        assert sock._sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP) == 1


def test_cancel_stops_a_slow_resync(loopback):
    netns, port = loopback
    table = [
        Connection("UDP", "198.51.100.1", 1000 + i, "10.0.0.1", 53, "10.0.1.1", 53, "UDP", 100) for i in range(400)
    ]
    state = RawState(daemons=(Daemon("master", "lo", 5, maxlen=1472, port=port),), connections=tuple(table))
    plan = plan_resync(state, netns=netns, rate=200)
    done = threading.Event()
    outcomes: list[JobOutcome] = []
    progress: list[SendProgress] = []

    def on_done(outcome):
        outcomes.append(outcome)
        done.set()

    job = SyncJob.resync(plan, on_progress=progress.append, on_done=on_done)
    job.start()
    deadline = time.monotonic() + 10
    while not progress and time.monotonic() < deadline:
        time.sleep(0.01)
    job.cancel()
    assert done.wait(10)
    (outcome,) = outcomes
    assert not outcome.ok and outcome.report.cancelled
    assert 0 < outcome.report.connections < 400
    assert outcome.message.endswith(f"cancelled, {400 - outcome.report.connections} not sent")


def test_sync_test_job_over_loopback_reports_what_it_sent(loopback):
    netns, port = loopback
    settings = SyncSettings("lo", syncid=9, port=port)
    outcomes: list[JobOutcome] = []
    with SyncMonitor("lo", GROUP, port, netns=netns) as monitor:
        job = SyncJob.sync_test(settings, outcomes.append, netns=netns)
        job.start()
        job.join(10)
        deadline = time.monotonic() + 10
        while not monitor.stats().connections and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = monitor.stats()
    (outcome,) = outcomes
    assert outcome.ok, outcome.message
    (received,) = stats.latest
    assert received.conn == outcome.test.conn
    assert ipaddress.ip_address(received.conn.client) in TEST_NET4
    assert received.conn.timeout == 10 and received.conn.state_name == "ESTABLISHED"
    assert outcome.message.endswith("sent; no backup daemon on this host to verify receipt")


@pytest.mark.parametrize(
    "args, message",
    [
        (("nosuch0", GROUP, 8848), "interface nosuch0 does not exist"),
        (("lo", "10.0.0.1", 8848), "group 10.0.0.1 is not a multicast address"),
        (("lo", GROUP, 0), "port must be 1-65535, got 0"),
        (("lo", GROUP, 70000), "port must be 1-65535, got 70000"),
    ],
)
def test_sender_and_monitor_refuse_bad_settings(args, message):
    with pytest.raises(SyncConfigError, match=message):
        SyncSocket(*args)
    with pytest.raises(SyncConfigError, match=message):
        SyncMonitor(*args).start()


def test_run_sync_test_refuses_a_missing_interface():
    result = run_sync_test(SyncSettings("nosuch0", syncid=1))
    assert not result.ok
    assert result.summary().endswith("not sent: interface nosuch0 does not exist")


def test_send_messages_makes_up_for_oversleeping():
    clock = FakeClock()

    class LateCancel(threading.Event):
        """A wait that always oversleeps by 10 ms, like a coarse timer."""

        def wait(self, timeout=None):
            clock.advance(timeout + 0.010)
            return False

    messages = protocol.pack([conn(i) for i in range(4000)], syncid=1).messages  # 100 of 40
    report = send_messages(ListSocket(), messages, rate=1000, cancel=LateCancel(), clock=clock)
    # each wait of 40 ms ends 10 ms late; the credit carried over keeps the average at the rate
    assert report.achieved_rate == pytest.approx(1000, rel=0.01)
    assert report.timeline[1][0] == pytest.approx(0.05)  # the second message: no burst at the start


def test_monitor_lines_for_a_panel():
    clock, wall = FakeClock(), FakeClock(1.7e9)
    monitor = SyncMonitor("vb", window=5.0, clock=clock, wall_clock=wall)
    assert monitor.stats().describe_lines(now=wall.now) == [
        "listening on 224.0.0.81:8848 on vb: 0 messages, 0 connections, 0 malformed, 0 entries rejected",
        "no sync traffic in the last 5 s",
    ]
    monitor.feed(protocol.pack([conn(1), conn(2)], syncid=10).messages[0].data, "10.99.0.1")
    monitor.feed(b"\x00\x0b\x00\x63junk", "10.99.0.9")  # syncid 11, size field 99, 8 bytes
    wall.advance(3)
    assert monitor.stats().describe_lines(now=wall.now, latest=1) == [
        "listening on 224.0.0.81:8848 on vb: 2 messages, 2 connections, 1 malformed, 0 entries rejected",
        "syncid 10 (v1) from 10.99.0.1: 0.2 messages/s, 0.4 connections/s, last 3 s ago",
        "syncid 11 (v?) from 10.99.0.9: 0.2 messages/s, 0.0 connections/s, last 3 s ago",
        "last error: 10.99.0.9: size field 99 != datagram length 8",
        "10.99.0.1 syncid 10: TCP 198.51.100.7:1026 -> 10.0.0.1:80 -> 10.0.1.1:8080 ESTABLISHED timeout 300s "
        "flags 0x0000 (masq)",
    ]


def test_send_messages_makes_up_for_a_stall_in_a_bounded_burst():
    clock = FakeClock()
    waits = []

    class StallOnce(threading.Event):
        def wait(self, timeout=None):
            waits.append(timeout)
            clock.advance(timeout + (0.2 if len(waits) == 10 else 0))  # one wait stalls 200 ms
            return False

    messages = protocol.pack([conn(i) for i in range(4000)], syncid=1).messages
    report = send_messages(ListSocket(), messages, rate=1000, cancel=StallOnce(), clock=clock)
    assert report.achieved_rate == pytest.approx(1000, rel=0.01)
    gaps = [b - a for (a, _), (b, _) in zip(report.timeline, report.timeline[1:])]
    assert max(gaps) == pytest.approx(0.24)  # the stalled one
    assert sum(1 for gap in gaps if gap == 0) == 5  # then 200 connections of catching up at once
    assert sum(1 for gap in gaps if gap == 0) * 40 <= 1000 * 0.25
