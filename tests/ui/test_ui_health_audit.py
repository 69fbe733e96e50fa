"""The director's health from (a stand-in for) psutil, the weight audit log, and the palette."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import pytest
import urwid.testing
from uihelpers import WEB1

from ipvsman.ui.audit import AuditLog
from ipvsman.ui.health import HealthSampler, describe
from ipvsman.ui.palette import ATTRIBUTES, PALETTE, color_depth


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
    log = AuditLog(str(path), user="alice", clock=lambda: stamp)
    assert log.record(WEB1, 100, 0, "ok") is None
    assert log.record(WEB1, 0, 100, "refused: gone") is None
    assert path.read_text().splitlines() == [
        '2024-05-01T12:00:00+00:00 user="alice" service="tcp 192.0.2.10:80" server=10.1.0.11:80 old=100 new=0 '
        'result="ok"',
        '2024-05-01T12:00:00+00:00 user="alice" service="tcp 192.0.2.10:80" server=10.1.0.11:80 old=0 new=100 '
        'result="refused: gone"',
    ]


def test_audit_log_failure_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    log = AuditLog(str(tmp_path / "file" / "audit.log"))
    assert "not written" in log.record(WEB1, 1, 2, "ok")
    assert log.record(WEB1, 2, 3, "ok") is None


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
