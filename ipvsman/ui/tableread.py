"""The key that reads the whole connection table now: what it will cost before, what it cost after."""

from __future__ import annotations

from collections.abc import Callable

from ipvsman.model import Snapshot
from ipvsman.ui.widgets import fmt_count, fmt_duration

CONFIRM_SECONDS = 1.0  # a whole read estimated to cost this much CPU or more is asked about first


class TableReadKey:
    """Asks the poller for a whole read outside the budget, and reports it in the status bar.

    `post(text, level)` is the status bar's. A read already under way is not asked for again.
    """

    def __init__(self, post: Callable[..., None]):
        self.post = post
        self._asked_after: int | None = None  # seq of the newest read when we asked; None: not waiting

    @property
    def waiting(self) -> bool:
        return self._asked_after is not None

    def request(self, poller, snapshot: Snapshot | None, confirm: Callable[[str, str, Callable[[], None]], None] | None = None) -> None:
        """Read now; a read estimated at CONFIRM_SECONDS of CPU or more is first put to the operator
        through `confirm(title, question, go)` (a y/n dialog), when given."""
        if poller is None or not hasattr(poller, "read_table_now"):
            self.post("reading the connection table: no poller to ask", "warn")
            return
        status = snapshot.table if snapshot is not None else None
        if self.waiting or (status is not None and status.reading_forced):
            self.post("the whole connection table is being read already", "warn")
            return
        cost = "size unknown"
        if status is not None and status.expected is not None:
            cost = f"~{fmt_count(status.expected)} entries"
            if status.full_estimate is not None:
                cost += f", ~{fmt_duration(status.full_estimate)} CPU"
                if status.budget_percent:
                    wait = status.full_estimate / (status.budget_percent / 100)
                    cost += f" (budgeted reads then pause {fmt_duration(wait)})"

        def go() -> None:
            read = status.read if status is not None else None
            self._asked_after = read.seq if read is not None else 0
            poller.read_table_now()
            self.post(f"reading the whole connection table: {cost}", "info", seconds=30.0)

        estimate = status.full_estimate if status is not None else None
        if confirm is not None and estimate is not None and estimate >= CONFIRM_SECONDS:
            confirm("Read the whole connection table", f"Read it now? {cost[0].upper()}{cost[1:]}, on this director's CPU.", go)
            return
        go()

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """Report the forced read once a snapshot carries it (or its failure)."""
        if self._asked_after is None:
            return
        status = snapshot.table
        read = status.read
        if read is not None and read.seq > self._asked_after and read.forced:
            self._asked_after = None
            self.post(
                f"whole connection table read: {fmt_count(read.entries)} entries, took "
                f"{fmt_duration(read.cpu_seconds)} CPU ({fmt_duration(read.wall_seconds)})",
                "info",
                seconds=30.0,
            )
        elif status.last_error and status.reading_since is None and not status.reading_forced:
            self._asked_after = None
            self.post(f"reading the connection table failed: {status.last_error}", "error")
