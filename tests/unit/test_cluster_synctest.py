"""The cluster's sync test: each node reported as the LVS plugin did, "lvs-2: Success" or why not."""

from __future__ import annotations

import threading
import time

from ipvsman.cluster.state import CommandReply
from ipvsman.cluster.synctest import check_nodes, node_outcome

KEY = 0x1234_5678_9ABC_DEF0


class Tables:
    """Nodes answering read-table: lvs-2 has the key from its second read on, lvs-3 never, lvs-4 refuses."""

    def __init__(self):
        self.reads: dict[str, int] = {}

    def command(self, node, command, on_reply):
        assert command.kind == "read-table" and command.args == {"keys": [KEY]}
        self.reads[node] = self.reads.get(node, 0) + 1
        if node == "lvs-4":
            on_reply(CommandReply(node, command, False, "read-table: refused: no connection table read yet"))
            return
        found = [KEY] if node == "lvs-2" and self.reads[node] >= 2 else []
        on_reply(CommandReply(node, command, True, "read", {"found": found, "complete": True}))


def test_a_node_that_shows_the_connection_late_but_in_time_is_a_success():
    tables = Tables()
    assert node_outcome(tables, "lvs-2", KEY, time.time(), wait=3.0, sleep=lambda s: None) == "lvs-2: Success"
    assert tables.reads["lvs-2"] == 2


def test_a_node_that_never_shows_it_is_reported_after_the_wait():
    now = [100.0]

    def sleep(seconds):
        now[0] += seconds

    line = node_outcome(Tables(), "lvs-3", KEY, 100.0, wait=3.0, clock=lambda: now[0], sleep=sleep)
    assert line == "lvs-3: not received after 3 s"
    assert now[0] >= 103.0


def test_every_node_is_reported_in_order_with_refusals_in_one_line():
    done = threading.Event()
    lines: list[str] = []
    check_nodes(Tables(), ["lvs-2", "lvs-3", "lvs-4"], KEY, time.time(), lambda got: (lines.extend(got), done.set()),
                wait=0.6)  # fmt: skip
    assert done.wait(10)
    assert lines == ["lvs-2: Success", "lvs-3: not received after 0.6 s",
                     "lvs-4: read-table: refused: no connection table read yet"]  # fmt: skip
