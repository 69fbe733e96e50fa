"""Switching views after new snapshots: a view shown again shows the snapshot of that moment (never
one from when it was last shown), keeps its selection, and while hidden keeps no snapshot alive
(old snapshots are freed outside the loop, ipvsman.collector.Releaser)."""

from __future__ import annotations

import dataclasses
import sys
import time

import pytest
from uihelpers import (
    WEB,
    WEB1,
    Clock,
    FakePoller,
    conn,
    make_connections,
    make_dashboard,
    make_services,
    make_snapshot,
    screen,
)

from ipvsman.model import Arrangement, Service, connection_total
from ipvsman.ui.widgets import fmt_count

SIZE = (140, 40)
VIEW_KEYS = {"virtual": "1", "bindings": "2", "realservers": "3", "connections": "4", "sync": "5"}
NEW_CLIENT = "198.51.100.77"  # a connection only the second snapshot has


def busier(services: tuple[Service, ...], active: int) -> tuple[Service, ...]:
    """The same services and real servers (the same layout), every real server with `active` connections."""
    return tuple(dataclasses.replace(service, dests=tuple(dest._replace(active_conns=active) for dest in service.dests))
                 for service in services)  # fmt: skip


def polled(seq: int, services, connections, arrangement: Arrangement) -> object:
    """A snapshot as the polling thread hands it over: its layout's number and arrangement."""
    return dataclasses.replace(make_snapshot(seq=seq, services=services, connections=connections), layout=1,
                               arrangement=arrangement)  # fmt: skip


def two_polls():
    """Two snapshots of one layout a poll apart; the second with 4,321 active connections a real
    server and a new client."""
    services = make_services()
    arrangement = Arrangement(services)
    first = polled(1, services, make_connections(), arrangement)
    second = polled(2, busier(services, 4321), make_connections() + (conn(NEW_CLIENT, 41000, "192.0.2.10", 80,
                                                                          "10.1.0.11", 80),), arrangement)  # fmt: skip
    return first, second


def new_values_shown(name: str, lines: list[str], snapshot) -> bool:
    text = "\n".join(lines)
    if name == "virtual":
        web = snapshot.find_service(WEB)
        return f"{fmt_count(connection_total(web.dests))} conns" in text
    if name == "bindings":
        rows = [line for line in lines if "10.1.0.11:80" in line]
        return bool(rows) and all(" 4,321 " in line for line in rows)
    if name == "realservers":
        return "active 4,321" in text
    return NEW_CLIENT in text


@pytest.mark.parametrize("name", ["virtual", "bindings", "realservers", "connections"])
def test_a_view_shown_again_after_new_snapshots_shows_the_newest(name):
    first, second = two_polls()
    board = make_dashboard(FakePoller(), Clock())
    board.apply_snapshot(first)
    board.keypress(SIZE, VIEW_KEYS[name])
    assert not new_values_shown(name, screen(board, SIZE), second)
    board.keypress(SIZE, "5")  # another view while the next poll comes
    board.apply_snapshot(second)
    board.keypress(SIZE, VIEW_KEYS[name])
    assert board.view.name == name
    lines = screen(board, SIZE)
    assert new_values_shown(name, lines, second)
    assert "poll #2" in "\n".join(lines)  # and the header says the same snapshot


@pytest.mark.parametrize("name", ["virtual", "bindings", "realservers", "connections"])
def test_a_hidden_view_keeps_no_old_snapshot_alive(name):
    first, second = two_polls()
    board = make_dashboard(FakePoller(), Clock())
    board.apply_snapshot(first)
    board.keypress(SIZE, VIEW_KEYS[name])
    screen(board, SIZE)
    board.keypress(SIZE, "5")
    board.apply_snapshot(second)
    # Only this test refers to the first snapshot now (sys.getrefcount counts its own argument).
    assert sys.getrefcount(first) == 2


@pytest.mark.parametrize(("name", "selected"), [("virtual", WEB), ("bindings", WEB1), ("realservers", WEB1)])
def test_the_selection_stays_on_its_row_across_a_switch_and_a_new_snapshot(name, selected):
    first, second = two_polls()
    board = make_dashboard(FakePoller(), Clock())
    board.apply_snapshot(first)
    board.keypress(SIZE, VIEW_KEYS[name])
    assert board.view.select(selected)
    board.keypress(SIZE, "4")
    board.apply_snapshot(second)
    board.keypress(SIZE, VIEW_KEYS[name])
    assert board.view.selection() == selected


def test_the_connections_view_keeps_its_selection_and_order_across_a_switch():
    first, second = two_polls()
    board = make_dashboard(FakePoller(), Clock())
    board.apply_snapshot(first)
    board.keypress(SIZE, "4")
    board.keypress(SIZE, "s")  # sorted by protocol
    for _ in range(3):
        board.keypress(SIZE, "down")
    selected = board.view.selection()
    order = board.view.walker.order
    board.keypress(SIZE, "1")
    same_table = dataclasses.replace(second.state, connections=first.state.connections)
    board.apply_snapshot(dataclasses.replace(second, state=same_table))
    board.keypress(SIZE, "4")
    assert board.view.selection() == selected
    assert board.view.walker.order is order  # the same table: not sorted again
    board.keypress(SIZE, "1")
    board.apply_snapshot(second)  # a new table: sorted again, the selection found in it
    board.keypress(SIZE, "4")
    assert board.view.selection() == selected and board.view.walker.order is not order
    assert NEW_CLIENT in "\n".join(screen(board, SIZE))


def test_a_filter_set_from_view_3_applies_to_the_table_shown_with_view_4():
    first, second = two_polls()
    board = make_dashboard(FakePoller(), Clock())
    board.apply_snapshot(first)
    board.keypress(SIZE, "4")
    board.keypress(SIZE, "3")
    board.apply_snapshot(second)
    assert board.view.select(WEB1)
    board.keypress(SIZE, "enter")  # the connections of the selected real server
    assert board.view.name == "connections"
    lines = screen(board, SIZE)
    assert NEW_CLIENT in "\n".join(lines)
    clients = {c.client for c in board.view.walker.connections if c.dest == "10.1.0.11" and c.dest_port == 80}
    shown = {board.view.walker.connection_at(position).client for position in range(len(board.view.walker))}
    assert shown == clients


def test_old_snapshots_are_freed_by_the_releaser_thread_not_the_loop():
    """With the collector's Schedule running (as in ipvsman.ui.app.run), the snapshot a new one
    replaces goes to the Releaser, which frees it once the views have let go of it."""
    first, second = two_polls()
    board = make_dashboard(FakePoller(), Clock())
    board.collector.start()
    try:
        board.apply_snapshot(first)
        board.keypress(SIZE, "3")
        screen(board, SIZE)
        releaser = board.collector.releaser
        released = releaser.released
        board.apply_snapshot(second)
        assert releaser.pending() >= 1  # held for freeing, not freed in this thread
        del first
        deadline = time.monotonic() + 10
        while releaser.released == released and time.monotonic() < deadline:
            time.sleep(0.01)
        assert releaser.released > released
        assert "active 4,321" in "\n".join(screen(board, SIZE))
    finally:
        board.collector.stop()


def test_a_snapshot_never_applied_goes_to_the_releaser_too():
    """Two polls before the loop applies one: the first is handed on, not freed in the polling thread."""
    board = make_dashboard(FakePoller(), Clock())

    class Loop:
        def call_from_thread(self, callback, *args):
            pass

        def set_alarm_in(self, seconds, callback):
            return None

    board.loop = Loop()
    board.collector.start()
    try:
        unseen, newest = make_snapshot(seq=2), make_snapshot(seq=3)
        board.on_snapshot(unseen)
        board.on_snapshot(newest)
        releaser = board.collector.releaser
        released = releaser.released
        del unseen
        deadline = time.monotonic() + 10
        while releaser.released == released and time.monotonic() < deadline:
            time.sleep(0.01)
        assert releaser.released > released
    finally:
        board.collector.stop()


def test_view_1_shows_the_polling_threads_blocks_while_the_layout_holds():
    from ipvsman.ui.views import IndexedBlocks

    first, second = two_polls()
    board = make_dashboard(FakePoller(), Clock())
    board.apply_snapshot(first)
    blocks = board.view.walker.blocks
    assert isinstance(blocks, IndexedBlocks)
    assert board.view.select(("vip", "192.0.2.10")) and board.view.select(WEB) and board.view.selection() == WEB
    board.apply_snapshot(second)
    assert board.view.walker.blocks is blocks and board.view.selection() == WEB
    assert new_values_shown("virtual", screen(board, SIZE), second)
    fewer = dataclasses.replace(make_snapshot(seq=3, services=second.services[1:]), layout=2,
                                arrangement=Arrangement(second.services[1:]))  # fmt: skip
    board.apply_snapshot(fewer)
    assert board.view.walker.blocks is not blocks and board.view.selection() != WEB
    assert not board.view.select(WEB)


def test_view_3_looks_real_servers_up_in_the_snapshot_shown():
    """View 3 finds a real server by its position when its row is drawn: the same layout with a weight changed shows it."""
    services = make_services()
    arrangement = Arrangement(services)
    board = make_dashboard(FakePoller(), Clock())
    board.apply_snapshot(polled(1, services, make_connections(), arrangement))
    board.keypress(SIZE, "3")
    changed = make_services(web_weights=(100, 77, 0))
    board.keypress(SIZE, "2")
    board.apply_snapshot(polled(2, changed, make_connections(), arrangement))
    board.keypress(SIZE, "3")
    assert any("weight 77" in line for line in screen(board, SIZE))


@pytest.mark.parametrize("name", ["virtual", "bindings", "realservers", "connections"])
def test_a_view_shown_again_reuses_its_row_widgets(name):
    """Making a Row widget costs more than setting its text: a view shown again after a new snapshot
    of the same layout (a new table, for view 4) sets the text of the rows it had."""
    first, second = two_polls()
    board = make_dashboard(FakePoller(), Clock())
    board.apply_snapshot(first)
    board.keypress(SIZE, VIEW_KEYS[name])
    screen(board, SIZE)
    created = board.view.walker.created
    board.keypress(SIZE, "5")
    board.apply_snapshot(second)
    board.keypress(SIZE, VIEW_KEYS[name])
    assert new_values_shown(name, screen(board, SIZE), second)
    # View 4 has a row more (the new connection); the others the same rows.
    assert board.view.walker.created == created + (name == "connections")
