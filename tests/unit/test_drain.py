"""The guided drain: estimates, warnings and the empty state from successive counts; its steps in the audit log."""

from __future__ import annotations

import datetime

import pytest

from ipvsman.model import Dest, DestKey, RawState, Service, ServiceKey, Snapshot
from ipvsman.ui.audit import AuditLog
from ipvsman.ui.drain import DRAINING, EMPTY, STUCK, DrainTracker, Drains

WEB = ServiceKey("inet", "tcp", "10.0.0.1", 80)
WEB1 = DestKey(WEB, "10.0.1.1", 80)


def dest(active=0, inactive=0, persistent=0, weight=0):
    return Dest("10.0.1.1", 80, "masq", weight, active_conns=active, inactive_conns=inactive,
                persist_conns=persistent)  # fmt: skip


def feed(tracker, counts, start=0.0, step=1.0):
    """Counts (active, inactive, persistent) one a second; the last status."""
    status = None
    for index, (active, inactive, persistent) in enumerate(counts):
        status = tracker.observe(WEB1, dest(active, inactive, persistent), start + index * step)
    return status


def test_a_steady_decline_gives_the_time_left():
    tracker = DrainTracker()
    tracker.start(WEB1, 50, 0.0)
    status = feed(tracker, [(100 - 2 * second, 0, 0) for second in range(11)])  # 2 a second, 80 left
    assert status.phase == DRAINING
    assert status.eta == pytest.approx(40.0)
    assert "empty in ~40 s" in status.describe()
    assert status.word == "DRAIN"


def test_no_estimate_before_a_few_seconds_of_counts():
    tracker = DrainTracker()
    tracker.start(WEB1, 50, 0.0)
    status = feed(tracker, [(10, 0, 0), (9, 0, 0)])
    assert status.eta is None and "estimating" in status.describe()


def test_the_estimate_follows_the_last_minute_only():
    tracker = DrainTracker(window=60.0)
    tracker.start(WEB1, 50, 0.0)
    fast = [(1000 - 10 * second, 0, 0) for second in range(60)]  # 10 a second for a minute
    slow = [(400 - second, 0, 0) for second in range(1, 121)]  # then 1 a second for two minutes
    status = feed(tracker, fast + slow)
    assert status.eta == pytest.approx(280.0, rel=0.01)  # 280 left at 1 a second, not 10


def test_empty_when_every_count_is_zero_and_the_offer_names_the_weight():
    tracker = DrainTracker()
    tracker.start(WEB1, 50, 0.0)
    status = feed(tracker, [(3, 1, 1), (1, 1, 0), (0, 0, 0)])
    assert status.phase == EMPTY and status.word == "EMPTY"
    assert status.empty_since == 2.0
    assert status.describe() == "drained: empty; x removes it, 0 restores weight 50"


def test_persistence_templates_renewed_is_a_warning():
    tracker = DrainTracker(stuck_after=30.0)
    tracker.start(WEB1, 50, 0.0)
    status = feed(tracker, [(0, 2, 40)] * 31)
    assert status.phase == STUCK and status.word == "STUCK"
    assert "persistence templates are being renewed" in status.warning
    assert "will not empty" in status.describe()


def test_connections_not_ending_is_a_warning():
    tracker = DrainTracker(stuck_after=30.0)
    tracker.start(WEB1, 50, 0.0)
    status = feed(tracker, [(5 + second % 2, 0, 0) for second in range(40)])
    assert status.phase == STUCK and "active connections are not ending" in status.warning


def test_a_stuck_drain_declining_again_is_draining():
    tracker = DrainTracker(window=20.0, stuck_after=10.0)
    tracker.start(WEB1, 50, 0.0)
    assert feed(tracker, [(10, 0, 0)] * 15).phase == STUCK
    status = feed(tracker, [(10 - second // 2, 0, 0) for second in range(20)], start=15.0)
    assert status.phase == DRAINING and status.eta is not None


def test_a_pace_of_hours_is_said():
    tracker = DrainTracker()
    tracker.start(WEB1, 50, 0.0)
    status = feed(tracker, [(10_000 - second, 0, 0) for second in range(20)])
    assert status.eta > 3600 and status.warning == "at this pace it takes 2.8 h"


def test_the_same_poll_twice_keeps_the_newest_counts():
    tracker = DrainTracker()
    tracker.start(WEB1, 50, 0.0)
    tracker.observe(WEB1, dest(5), 1.0)
    status = tracker.observe(WEB1, dest(4), 1.0)
    assert status.active == 4


# -- the dashboard's side: steps in the status line and the audit log ------------------------------------
class Status:
    def __init__(self):
        self.posted = []

    def post(self, text, level="info", seconds=None):
        self.posted.append((text, level))


def snapshot(at, active=0, inactive=0, persistent=0, weight=0, present=True):
    dests = (dest(active, inactive, persistent, weight),) if present else ()
    state = RawState(services=(Service(WEB, "wlc", dests=dests),))
    return Snapshot(seq=int(at), taken_at=at, poll_seconds=0.0, backend="kernel", writable=True, state=state)


@pytest.fixture
def audit(tmp_path):
    clock = lambda: datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)  # noqa: E731
    return AuditLog(str(tmp_path / "audit.log"), user="alice", clock=clock)


def audit_lines(audit):
    with open(audit.path, encoding="utf-8") as lines:
        return lines.read().splitlines()


def test_drains_log_start_empty_and_removal(audit):
    status = Status()
    drains = Drains(audit, status)
    drained = {WEB1: 50}
    drains.follow(snapshot(1.0, active=2, weight=50), drained)  # the weight is not 0 yet: nothing tracked
    assert WEB1 not in drains.statuses
    drains.follow(snapshot(2.0, active=2), drained)
    drains.follow(snapshot(3.0, active=1), drained)
    drains.follow(snapshot(4.0), drained)
    assert drains.statuses[WEB1].phase == EMPTY
    assert any("is drained empty: x removes it, 0 restores weight 50" in text for text, _ in status.posted)
    drains.follow(snapshot(5.0, present=False), {})  # `x` removed it; Changes forgot the drain
    assert WEB1 not in drains.statuses
    lines = audit_lines(audit)
    assert [line.split("step=")[1].split('"')[1] for line in lines] == ["started", "empty", "ended"]
    assert 'action=drain service="tcp 10.0.0.1:80" server=10.0.1.1:80' in lines[0]
    assert 'detail="2 active, 0 inactive, 0 persistent; restore weight 50"' in lines[0]
    assert 'detail="removed"' in lines[2]


def test_drains_log_a_warning_and_a_restore(audit):
    status = Status()
    drains = Drains(audit, status)
    for second in range(40):
        drains.follow(snapshot(float(second), inactive=1, persistent=30), {WEB1: 50})
    drains.follow(snapshot(40.0, inactive=1, persistent=30, weight=50), {})  # `0` again: restored
    steps = [line.split("step=")[1].split('"')[1] for line in audit_lines(audit)]
    assert steps == ["started", "will not empty", "ended"]
    assert 'detail="restored to weight 50; 0 active, 1 inactive, 30 persistent left"' in audit_lines(audit)[2]
    assert sum("will not empty" in text for text, _ in status.posted) == 1  # said once, not every poll


def test_an_audit_log_that_cannot_be_written_is_said_once(tmp_path):
    status = Status()
    blocked = tmp_path / "file"
    blocked.write_text("")
    drains = Drains(AuditLog(str(blocked / "audit.log")), status)  # a directory that is a file
    drains.follow(snapshot(1.0, active=1), {WEB1: 50})
    drains.follow(snapshot(2.0), {WEB1: 50})
    warnings = [text for text, level in status.posted if "drain steps not logged" in text]
    assert len(warnings) == 1
