"""The director's health from (a stand-in for) psutil, the audit log of changes (a file, stderr, refusals), and the palette."""

from __future__ import annotations

import datetime
import io
from types import SimpleNamespace

import pytest
import urwid.testing
from uihelpers import WEB1, WEB2, FakeBackend, make_options, make_snapshot

from ipvsman.poller import CommandResult
from ipvsman.ui.app import Dashboard
from ipvsman.ui.audit import ATTEMPT, AuditLog, AuditLogError, backend_label
from ipvsman.ui.health import HealthSampler, describe
from ipvsman.ui.palette import ATTRIBUTES, PALETTE, color_depth


SIZE = (100, 30)


def press(board, *keys):
    return urwid.testing.press(board.top, SIZE, *keys)


def select(board, view_key, row_key):
    press(board, view_key)
    assert board.view.select(row_key), f"no row {row_key} in view {view_key}"


class FakePsutil:
    """Counters that grow by known amounts between samples."""

    def __init__(self):
        self.step = 0

    def cpu_times_percent(self, interval=None):
        return SimpleNamespace(idle=70.0, iowait=5.0, softirq=4.5)

    def virtual_memory(self):
        return SimpleNamespace(percent=42.0)

    def net_io_counters(self, pernic=False):
        n = self.step
        return {
            "lo": SimpleNamespace(bytes_recv=0, bytes_sent=0, dropin=0, dropout=0),
            "eth0": SimpleNamespace(bytes_recv=1000 * n, bytes_sent=3000 * n, dropin=2 * n, dropout=0),
            "eth1": SimpleNamespace(bytes_recv=5 * n, bytes_sent=5 * n, dropin=0, dropout=0),
        }


def test_health_rates_of_vip_interfaces():
    source, now = FakePsutil(), [100.0]
    sampler = HealthSampler(source, clock=lambda: now[0])
    first = sampler.sample(["eth0"])
    assert first.cpu_percent is None and first.interfaces[0].rx_bytes_per_s is None
    source.step, now[0] = 2, 102.0
    health = sampler.sample(["eth0"])
    assert health.cpu_percent == 25.0  # not idle, not waiting on I/O
    assert health.softirq_percent == 4.5
    assert [rates.name for rates in health.interfaces] == ["eth0"] and health.vip_interfaces
    eth0 = health.interfaces[0]
    assert (eth0.rx_bytes_per_s, eth0.tx_bytes_per_s, eth0.drops_per_s) == (1000.0, 3000.0, 2.0)
    line = "".join(part if isinstance(part, str) else part[1] for part in describe(health))
    assert "softirq 4.5%" in line and "eth0 rx 1.0kB/s tx 3.0kB/s drop 2/s" in line


def test_health_without_vip_interfaces_shows_all_but_loopback():
    sampler = HealthSampler(FakePsutil(), clock=lambda: 1.0)
    health = sampler.sample([])
    assert [rates.name for rates in health.interfaces] == ["eth0", "eth1"]
    assert not health.vip_interfaces
    line = "".join(p if isinstance(p, str) else p[1] for p in describe(health, max_interfaces=1))
    assert "   net: eth0" in line and "VIP" not in line and line.endswith("+1")


def test_audit_log_creates_its_directory_and_appends(tmp_path):
    path = tmp_path / "state" / "ipvsman" / "audit.log"
    stamp = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    log = AuditLog(str(path), user="alice", clock=lambda: stamp, backend=backend_label("kernel", "lb-1"))
    log.record(WEB1, 100, 0, ATTEMPT)
    log.record(WEB1, 100, 0, "refused: gone")
    assert path.read_text().splitlines() == [
        '2024-05-01T12:00:00+00:00 user="alice" backend=kernel netns=lb-1 service="tcp 192.0.2.10:80" '
        'server=10.1.0.11:80 old=100 new=0 result="attempt"',
        '2024-05-01T12:00:00+00:00 user="alice" backend=kernel netns=lb-1 service="tcp 192.0.2.10:80" '
        'server=10.1.0.11:80 old=100 new=0 result="refused: gone"',
    ]


@pytest.mark.parametrize(
    "where, reason",
    [
        ("under-a-file", "Not a directory"),
        ("/proc/self/ipvsman-audit.log", None),  # procfs takes no new files, not even from root
    ],
)
def test_audit_log_failure_is_raised_every_time_with_its_reason(tmp_path, where, reason):
    if where == "under-a-file":
        (tmp_path / "file").write_text("")
        where = str(tmp_path / "file" / "audit.log")
    log = AuditLog(where)
    for _ in range(2):  # every change is refused, not only the first
        with pytest.raises(AuditLogError) as raised:
            log.record(WEB1, 1, 2, ATTEMPT)
        message = str(raised.value)
        assert message.startswith(f"audit log {where} not writable: ") and "\n" not in message
        if reason:
            assert message.endswith(reason)


def test_unwritable_audit_log_refuses_the_change_with_the_reason(poller, clock, tmp_path):
    (tmp_path / "file").write_text("")
    path = str(tmp_path / "file" / "audit.log")
    board = Dashboard(make_options(audit_log=path), poller=poller, backend=FakeBackend(), clock=clock)
    board.apply_snapshot(make_snapshot())
    select(board, "2", WEB2)
    press(board, "+")
    press(board, "0")
    assert poller.submitted == []  # never made unlogged
    assert WEB2 not in board.pending and WEB2 not in board.drained  # a refused drain has nothing to restore
    errors = [m.text for m in board.status.history if m.level == "error"]
    assert errors == [
        f"weight of {WEB2} not changed: audit log {path} not writable: Not a directory",
    ] * 2


def test_audit_log_on_stderr_is_held_while_it_is_the_terminal(poller, clock, capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    audit = AuditLog("-", user="alice", backend=backend_label("demo"), stream=terminal)
    board = Dashboard(make_options(), poller=poller, backend=FakeBackend(), clock=clock, audit=audit)
    board.apply_snapshot(make_snapshot())
    select(board, "2", WEB2)
    press(board, "+")
    board.apply_result(CommandResult(poller.submitted[0], True, "weight ... 50 -> 51"))
    assert poller.submitted and terminal.getvalue() == ""  # the screen is the dashboard's while it runs
    audit.release()
    lines = terminal.getvalue().splitlines()
    assert [line.split(" result=")[1] for line in lines] == ['"attempt"', '"ok"']
    assert all(' user="alice" backend=demo service="tcp 192.0.2.10:80" server=10.1.0.12:80 old=50 new=51' in line
               for line in lines)  # fmt: skip


def test_audit_log_on_redirected_stderr_is_written_at_once(capsys):
    log = AuditLog("-", user="alice")
    log.record(WEB1, 1, 2, ATTEMPT)
    assert 'backend=kernel service="tcp 192.0.2.10:80" server=10.1.0.11:80 old=1 new=2 result="attempt"' in (
        capsys.readouterr().err
    )
    assert log.held == []


@pytest.mark.parametrize("colors", [1, 16, 256])
def test_every_attribute_resolves_in_every_depth(colors):
    for name in ATTRIBUTES:
        urwid.testing.resolve_attr(name, PALETTE, colors=colors)


def test_server_states_differ_in_mono_too():
    """Drained and zero-weight servers stay apart without colour: the words differ, and so do the looks."""
    looks = {name: urwid.testing.resolve_attr(name, PALETTE, colors=1) for name in ("ok", "drained", "zero")}
    assert looks["drained"] != looks["zero"]


def test_color_depth_choice():
    assert color_depth("mono", 256) == 1
    assert color_depth("16", 256) == 16
    assert color_depth(None, 2**24) == 256
    assert color_depth(None, 8) == 16
    assert color_depth(None, 1) == 1
