"""The C key: a whole read of the connection table now, asked about first when it is costly, reported after."""

from __future__ import annotations

import dataclasses

import urwid.testing
from uihelpers import make_snapshot, screen

from ipvsman.model import TableRead

SIZE = (100, 30)


def press(board, *keys):
    return urwid.testing.press(board.top, SIZE, *keys)


def with_table(snapshot, **status):
    return dataclasses.replace(snapshot, table=dataclasses.replace(snapshot.table, **status))


def test_a_cheap_read_starts_at_once_and_says_what_it_will_cost(dashboard, poller):
    dashboard.apply_snapshot(with_table(make_snapshot(seq=2), expected=1_204, full_estimate=0.02, budget_percent=5.0))
    press(dashboard, "C")
    assert poller.table_reads == 1
    assert "reading the whole connection table: ~1,204 entries, ~20 ms CPU" in dashboard.status.text
    press(dashboard, "C")  # already asked for: not again
    assert poller.table_reads == 1 and "being read already" in dashboard.status.text


def test_a_costly_read_is_asked_about_and_no_reads_nothing(dashboard, poller):
    dashboard.apply_snapshot(with_table(make_snapshot(seq=2), expected=1_000_000, full_estimate=75.0,
                                        budget_percent=5.0))  # fmt: skip
    press(dashboard, "C")
    assert not getattr(poller, "table_reads", 0)
    shown = "\n".join(screen(dashboard))
    assert "Read it now? ~1,000,000 entries, ~75 s CPU (budgeted reads then pause 25 min)" in shown
    press(dashboard, "n")
    assert not getattr(poller, "table_reads", 0) and "connection table not read" in dashboard.status.text
    press(dashboard, "C", "y")
    assert poller.table_reads == 1


def test_the_read_it_asked_for_is_reported_with_what_it_cost(dashboard, poller):
    first = with_table(make_snapshot(seq=2), expected=50_000, full_estimate=0.5)
    dashboard.apply_snapshot(first)
    press(dashboard, "C")
    forced = TableRead(seq=first.table.read.seq + 1, complete=True, entries=50_000, started_at=first.taken_at,
                       cpu_seconds=2.5, wall_seconds=3.0, forced=True)  # fmt: skip
    dashboard.apply_snapshot(with_table(make_snapshot(seq=3), read=forced))
    assert "whole connection table read: 50,000 entries, took 2.5 s CPU (3.0 s)" in dashboard.status.text
    assert not dashboard.table_key.waiting
