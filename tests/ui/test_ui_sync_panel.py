"""The sync monitor's panel in view 5: rendered from a fixed MonitorStats, and the SyncPanel that starts,
moves and stops monitors (fakes here: no socket is opened, nothing joins a multicast group)."""

from __future__ import annotations

import threading

import pytest
from uihelpers import Clock, FakeBackend, FakePoller, assert_golden, fixed_names, make_options, make_snapshot, screen

from ipvsman.model import Daemon
from ipvsman.sync.monitor import MonitorStats, ReceivedConn, SyncIdStats
from ipvsman.sync.protocol import F_MASQ, F_TEMPLATE, SyncConn
from ipvsman.ui.app import DEMO_MONITOR_OFF, Dashboard
from ipvsman.ui.syncpanel import SyncPanel, listen_target

SIZE = (100, 30)
NOW = 1_700_000_001.5  # the test clock's time
MASTER = Daemon("master", "eth0", 10, maxlen=1472)
BACKUP = Daemon("backup", "eth1", 10, group="224.0.0.82", port=8849)

STATS = MonitorStats(
    listening="224.0.0.81:8848 on eth0",
    running=True,
    window=5.0,
    messages=1234,
    connections=20480,
    malformed=2,
    rejected=3,
    by_syncid=(
        SyncIdStats(10, 1, 1200, 20000, 4.2, 96.4, NOW - 1, ("10.0.0.2",)),
        SyncIdStats(20, 0, 34, 480, 0.0, 0.0, NOW - 42, ("10.0.0.3", "10.0.0.4")),
    ),
    latest=(
        ReceivedConn(NOW - 1, "10.0.0.2", 10, 1, SyncConn(6, "198.51.100.7", 40001, "192.0.2.10", 80, "10.1.0.11",
                                                          80, 1, F_MASQ, 900)),  # fmt: skip
        ReceivedConn(NOW - 1, "10.0.0.2", 10, 1, SyncConn(0, "198.51.100.7", 0, "192.0.2.10", 443, "10.1.0.11", 443,
                                                          0, F_TEMPLATE, 300)),  # fmt: skip
    ),
    last_error="10.0.0.9: datagram of 7 bytes is shorter than the 8-byte header",
    last_error_at=NOW - 30,
)


class FixedPanel:
    """Stands in for SyncPanel: the same stats every time, and a record of what it was told."""

    def __init__(self, state):
        self.value = state
        self.followed = []

    def follow(self, daemons):
        self.followed.append(tuple(daemons))

    def state(self):
        return self.value


def board_with(panel, clock=None) -> Dashboard:
    board = Dashboard(make_options(), poller=FakePoller(), backend=FakeBackend(), hostname="lvs-test",
                      clock=clock or Clock(NOW), names=fixed_names(show=False), sync_panel=panel)  # fmt: skip
    board.apply_snapshot(make_snapshot())
    return board


def panel_lines(board) -> list[str]:
    """The rows of the sync monitor section, whatever part of view 5 is on screen."""
    rows = [row.plain for row in board.view.walker]
    start = rows.index(" Sync monitor") + 1
    return rows[start : rows.index("", start)]


def test_panel_from_fixed_stats_matches_golden():
    panel = FixedPanel(STATS)
    board = board_with(panel)
    board.keypress(SIZE, "5")
    assert panel.followed == [(MASTER,)]  # the panel is told where the daemons are with each snapshot
    assert_golden("sync-monitor-100x30", screen(board))


def test_panel_shows_rates_per_syncid_the_latest_entries_and_errors():
    board = board_with(FixedPanel(STATS))
    board.keypress(SIZE, "5")
    lines = panel_lines(board)
    assert lines[0] == "   Listening             224.0.0.81:8848 on eth0"
    assert lines[1] == "   Received              1,234 messages, 20,480 connections, 2 malformed, 3 entries rejected"
    assert "   syncid 10             4.2 messages/s  96.4 connections/s  (v1 from 10.0.0.2, last 1 s ago)" in lines
    assert lines[3].startswith("   syncid 20             0.0 messages/s  0.0 connections/s  (v0 from 10.0.0.3, 10.0.0.4")
    assert "   Last error            10.0.0.9: datagram of 7 bytes is shorter than the 8-byte header" in lines
    latest = [line for line in lines if "10.0.0.2 #10" in line]
    assert latest == [
        "     10.0.0.2 #10  TCP 198.51.100.7:40001 -> 192.0.2.10:80 -> 10.1.0.11:80  Established 900s",
        "     10.0.0.2 #10  IP 198.51.100.7:0 -> 192.0.2.10:443 -> 10.1.0.11:443  template 300s",
    ]
    assert "   Latest entries        newest first, 2 shown" in lines


def test_panel_says_when_nothing_flows():
    quiet = MonitorStats("224.0.0.81:8848 on eth0", True, 5.0, 0, 0, 0, 0)
    board = board_with(FixedPanel(quiet))
    board.keypress(SIZE, "5")
    assert "   Traffic               no sync message in the last 5 s" in panel_lines(board)


@pytest.mark.parametrize(
    "state, line",
    [
        (DEMO_MONITOR_OFF, "   monitor off in the demo: its sync interface eth0 is made up, there is nothing to listen to"),
        ("not listening: interface eth9 does not exist", "   not listening: interface eth9 does not exist"),
    ],
)
def test_panel_says_why_there_is_no_monitor(state, line):
    board = board_with(FixedPanel(state))
    board.keypress(SIZE, "5")
    assert panel_lines(board) == [line]


def test_view_5_follows_the_monitor_every_second():
    panel = FixedPanel(MonitorStats("224.0.0.81:8848 on eth0", True, 5.0, 0, 0, 0, 0))
    board = board_with(panel)
    board.keypress(SIZE, "5")
    panel.value = STATS
    board.tick()
    assert "1,234 messages" in "\n".join(panel_lines(board))


# -- SyncPanel with fake monitors ---------------------------------------------------------------


class FakeMonitor:
    def __init__(self, daemons, netns, fail=None):
        self.target = listen_target(daemons)
        self.netns = netns
        self.fail = fail
        self.started = self.stopped = False

    def start(self):
        if self.fail:
            raise self.fail
        self.started = True

    def stop(self):
        self.stopped = True

    def stats(self):
        return MonitorStats(f"{self.target[1]}:{self.target[2]} on {self.target[0]}", True, 5.0, 0, 0, 0, 0)


class Factory:
    def __init__(self, fail=None, gate=None):
        self.made = []
        self.fail = fail
        self.gate = gate

    def __call__(self, daemons, netns):
        if self.gate is not None:
            self.gate.wait()
        monitor = FakeMonitor(daemons, netns, self.fail)
        self.made.append(monitor)
        return monitor


def test_sync_panel_listens_where_the_daemon_is_and_moves_with_it():
    factory = Factory()
    panel = SyncPanel(factory, netns="lb1")
    assert panel.state() == "no sync daemon runs here: nothing to listen on"
    panel.follow([MASTER])
    panel.wait()
    first = factory.made[0]
    assert first.started and first.netns == "lb1"
    assert panel.state().listening == "224.0.0.81:8848 on eth0"
    panel.follow([MASTER])  # the same daemon: the same monitor
    assert len(factory.made) == 1
    panel.follow([MASTER, BACKUP])  # a backup daemon: listen where it listens
    panel.wait()
    assert first.stopped and panel.state().listening == "224.0.0.82:8849 on eth1"
    panel.follow([])
    panel.wait()
    assert factory.made[1].stopped
    assert panel.state() == "no sync daemon runs here: nothing to listen on"
    panel.stop()


def test_sync_panel_turns_an_error_into_a_line_and_never_raises():
    panel = SyncPanel(Factory(fail=OSError("interface eth0 does not exist in network namespace lb1")))
    panel.follow([MASTER])
    panel.wait()
    assert panel.state() == "not listening: interface eth0 does not exist in network namespace lb1"
    panel.stop()


def test_sync_panel_opens_off_the_ui_thread_and_stops_what_opened_late():
    gate = threading.Event()
    factory = Factory(gate=gate)
    panel = SyncPanel(factory)
    panel.follow([MASTER])  # returns at once although the factory blocks
    assert panel.state() == "opening 224.0.0.81:8848 on eth0…"
    panel.stop(timeout=0)  # the dashboard quits while the monitor still opens
    gate.set()
    panel.wait()
    assert factory.made[0].stopped  # the dashboard closed while it opened: not left running
    assert panel.monitor is None


def test_sync_panel_stop_stops_the_monitor():
    factory = Factory()
    panel = SyncPanel(factory)
    panel.follow([BACKUP])
    panel.wait()
    panel.stop()
    assert factory.made[0].stopped
    panel.follow([MASTER])  # after stop: nothing new opens
    assert len(factory.made) == 1


def test_sync_panel_without_a_factory_says_why():
    panel = SyncPanel(None, off_reason=DEMO_MONITOR_OFF)
    panel.follow([MASTER])
    assert panel.state() == DEMO_MONITOR_OFF


# -- the real monitor, over loopback only ---------------------------------------------------------


def _multicast_over_lo(netns, port) -> bool:
    from ipvsman.sync.monitor import SyncMonitor
    from ipvsman.sync.protocol import pack
    from ipvsman.sync.sender import SyncConfigError, SyncSocket

    monitor = SyncMonitor("lo", "224.0.0.81", port, netns=netns)
    try:
        monitor.start()
        with SyncSocket("lo", "224.0.0.81", port, netns=netns) as sock:
            for _ in range(20):
                sock.send(pack([SyncConn(6, "198.51.100.7", 1024, "10.0.0.1", 80, "10.0.1.1", 80, 1)], 1).messages[0].data)
                if monitor.stats().messages:
                    return True
                threading.Event().wait(0.05)
        return False
    except (SyncConfigError, OSError):
        return False
    finally:
        monitor.stop()


@pytest.fixture(scope="module")
def loopback():
    """(netns, port) where multicast over `lo` works: here, else in a namespace of our own (root only)."""
    import os
    import random
    import subprocess

    port = random.randrange(20000, 60000)
    if _multicast_over_lo(None, port):
        yield None, port
        return
    if os.geteuid() != 0:
        pytest.skip("multicast over lo does not work here, and making a network namespace needs root")
    name = f"ipvsman-uisync-{os.getpid()}"
    try:
        for command in (["ip", "netns", "add", name], ["ip", "-n", name, "link", "set", "lo", "up"],
                        ["ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "lo"]):  # fmt: skip
            if subprocess.run(command, capture_output=True).returncode != 0:
                pytest.skip(f"multicast over lo does not work here, and {' '.join(command)} failed")
        if not _multicast_over_lo(name, port):
            pytest.skip("multicast over lo works neither here nor in a network namespace of its own")
        yield name, port
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_view_5_shows_what_the_real_monitor_hears_on_loopback(loopback):
    import time

    from ipvsman.sync.protocol import pack
    from ipvsman.sync.sender import SyncSocket

    netns, port = loopback
    backup = Daemon("backup", "lo", 42, port=port)
    panel = SyncPanel(netns=netns)  # the real SyncMonitor
    board = Dashboard(make_options(netns=netns), poller=FakePoller(), backend=FakeBackend(), names=fixed_names(False),
                      sync_panel=panel)  # fmt: skip
    try:
        board.apply_snapshot(make_snapshot(daemons=(backup,)))
        panel.wait()
        conns = [SyncConn(6, "198.51.100.7", 40000 + i, "192.0.2.10", 80, "10.1.0.11", 80, 1, F_MASQ, 900) for i in range(3)]
        with SyncSocket("lo", "224.0.0.81", port, netns=netns) as sock:
            sock.send(b"\x01\x2a\x00\x63garbage")  # a size field that lies: malformed
            sock.send(pack(conns, syncid=42).messages[0].data)
        deadline = time.monotonic() + 10  # a bound on waiting, not a measurement
        while time.monotonic() < deadline and not (isinstance(panel.state(), MonitorStats)
                                                   and panel.state().messages >= 2):  # fmt: skip
            time.sleep(0.05)
        board.keypress(SIZE, "5")
        lines = panel_lines(board)
    finally:
        panel.stop()
    where = f" in namespace {netns}" if netns else ""
    assert lines[0] == f"   Listening             224.0.0.81:{port} on lo{where}"
    assert lines[1] == "   Received              2 messages, 3 connections, 1 malformed, 0 entries rejected"
    assert any(line.startswith("   syncid 42 ") and "connections/s  (v1 from " in line for line in lines)
    assert "size field 99 != datagram length 11" in "\n".join(lines)
    assert any("#42  TCP 198.51.100.7:40002 -> 192.0.2.10:80 -> 10.1.0.11:80  Established 900s" in line for line in lines)
    assert not panel.monitor  # stopped
