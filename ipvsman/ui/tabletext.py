"""How old the connection table behind a snapshot is, what it cost and what the budget allows, in words."""

from __future__ import annotations

import time

from ipvsman.model import Snapshot, TableStatus
from ipvsman.ui.widgets import fmt_count, fmt_duration


def read_words(status: TableStatus, now: float) -> str:
    """'table read 14:03:05, 41 s ago, took 2.9 s CPU' or why there is none."""
    read = status.read
    if read is None:
        if status.reading_since is not None:
            return f"reading the connection table ({fmt_duration(max(0.0, now - status.reading_since))} so far)"
        if status.last_error:
            return f"connection table not read: {status.last_error}"
        if status.budget_percent == 0:
            return "connection table not read (budget 0: C reads it)"
        return "connection table not read yet"
    at = time.strftime("%H:%M:%S", time.localtime(read.started_at))
    age = fmt_duration(max(0.0, now - read.started_at))
    return f"table read {at}, {age} ago, took {fmt_duration(read.cpu_seconds)} CPU"


def extent_words(status: TableStatus) -> str:
    """'all 1,204 entries' or 'sample: first 30,000 of ~1,000,000 entries'."""
    read = status.read
    if read is None:
        return ""
    if read.complete:
        return f"all {fmt_count(read.entries)} entries"
    expected = status.expected if status.expected is not None else read.expected
    of = f" of ~{fmt_count(expected)}" if expected else ""
    return f"sample: first {fmt_count(read.entries)}{of} entries"


def budget_words(status: TableStatus, now: float) -> str:
    """When the next read comes and why: 'next in 19 s (budget 5% of a CPU)'."""
    if status.reading_since is not None and status.read is not None:
        what = "whole table (asked for)" if status.reading_forced else "next read"
        return f"reading {what} now, {fmt_duration(max(0.0, now - status.reading_since))} so far"
    if status.budget_percent is None:
        return "read every poll"
    if status.next_read_at is None:
        return "no reads (budget 0)"
    wait = status.next_read_at - now
    when = "next read due now" if wait <= 0.5 else f"next read in {fmt_duration(wait)}"
    return f"{when} (budget {status.budget_percent:g}% of a CPU)"


def table_line(snapshot: Snapshot) -> str:
    """One line on the table for views 1 and 4: its age, extent and cost, and whether counts by
    state are exact or estimated."""
    status, now = snapshot.table, snapshot.taken_at
    parts = [read_words(status, now)]
    extent = extent_words(status)
    if extent:
        parts.append(extent)
    if status.read is not None and not status.current:
        parts.append("states ~estimated")
    parts.append(budget_words(status, now))
    if status.last_error and status.read is not None:
        parts.append(f"last read failed: {status.last_error}")
    return "; ".join(parts)


def interval_words(snapshot: Snapshot, asked: float) -> str:
    """'' when polls come every `asked` seconds, else 'every 2.6 s: polls are slow'."""
    if snapshot.interval is None or snapshot.interval <= asked * 1.01:
        return ""
    return f"every {fmt_duration(snapshot.interval)}: polls are slow"
