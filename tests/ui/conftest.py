"""Fixtures of the dashboard tests: a dashboard on a hand-built snapshot with a fake poller."""

from __future__ import annotations

import time

import pytest
from uihelpers import HEALTH, Clock, FakeBackend, FakePoller, fixed_names, make_options, make_snapshot

from ipvsman.ui.app import Dashboard


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def poller():
    return FakePoller()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def dashboard(poller, clock, tmp_path):
    """A dashboard showing make_snapshot() with numbers (`n` shows names), a fake poller and an audit
    log in tmp_path; no configuration files."""
    board = Dashboard(
        make_options(audit_log=str(tmp_path / "audit" / "weights.log")),
        poller=poller,
        backend=FakeBackend(),
        hostname="lvs-test",
        clock=clock,
        names=fixed_names(show=False),
    )
    board.apply_snapshot(make_snapshot())
    board.apply_director(HEALTH)
    return board
