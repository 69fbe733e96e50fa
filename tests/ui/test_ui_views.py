"""Every view rendered from a hand-built snapshot at 100x30 and 80x24, compared with golden text."""

from __future__ import annotations

import pytest

from uihelpers import WEB1, WEB2, FakeBackend, assert_golden, make_options, make_services, make_snapshot, screen

from ipvsman.poller import CommandResult
from ipvsman.ui.app import Dashboard

VIEWS = ["1", "2", "3", "4", "5"]
NAMES = {"1": "virtual", "2": "bindings", "3": "realservers", "4": "connections", "5": "sync"}


@pytest.mark.parametrize("size", [(100, 30), (80, 24)], ids=["100x30", "80x24"])
@pytest.mark.parametrize("key", VIEWS, ids=[NAMES[key] for key in VIEWS])
def test_view_matches_golden(dashboard, key, size):
    dashboard.keypress(size, key)
    lines = screen(dashboard, size)
    assert len(lines) == size[1]
    assert_golden(f"{NAMES[key]}-{size[0]}x{size[1]}", lines)


def test_help_overlay_matches_golden(dashboard):
    dashboard.keypress((100, 30), "?")
    assert_golden("help-100x30", screen(dashboard))
    dashboard.keypress((100, 30), "esc")
    assert "Keys" not in "\n".join(screen(dashboard))


def test_states_are_told_apart_by_words(dashboard, poller):
    dashboard.keypress((100, 30), "2")
    assert dashboard.view.select(WEB2)
    dashboard.keypress((100, 30), "0")  # drained here: pending until the next snapshot
    rows = bindings_rows(dashboard)
    assert "pending" in rows["10.1.0.12:80"] and "50→0" in rows["10.1.0.12:80"]
    dashboard.apply_result(CommandResult(poller.submitted[-1], True, "weight set"))
    dashboard.apply_snapshot(make_snapshot(seq=2, services=make_services(web_weights=(100, 0, 0))))
    rows = bindings_rows(dashboard)
    assert "DRAIN" in rows["10.1.0.12:80"]  # weight 0 set here with `0`: `0` again restores it
    assert "ZERO" in rows["10.1.0.13:80"]  # weight 0 as found
    assert " on " in rows["10.1.0.11:80"]


def bindings_rows(board) -> dict[str, str]:
    return {line.split("-> ")[1].split()[0]: line for line in screen(board)[4:-1] if "-> 10.1.0.1" in line}


def test_too_small_terminal_shows_one_line_and_keeps_state(dashboard):
    dashboard.keypress((100, 30), "2")
    dashboard.view.select(WEB1)
    lines = screen(dashboard, (60, 20))
    assert lines[0] == "terminal too small: need 80x24, have 60x20"
    assert all(line == "" for line in lines[1:])
    assert dashboard.view.selection() == WEB1
    assert any("-> 10.1.0.11:80" in line for line in screen(dashboard, (100, 30)))


def test_resize_reflows_rows(dashboard):
    dashboard.keypress((100, 30), "2")
    wide = screen(dashboard, (120, 30))
    narrow = screen(dashboard, (80, 24))
    assert max(len(line) for line in wide) > 100
    assert max(len(line) for line in narrow) <= 80
    assert any("10.1.0.11:80" in line for line in narrow)


def test_waiting_for_first_poll(poller, clock):
    board = Dashboard(make_options(), poller=poller, backend=FakeBackend(), hostname="h", clock=clock)
    text = "\n".join(screen(board))
    assert "waiting for the first poll" in text


def test_poll_error_is_shown_and_reported_once(dashboard):
    dashboard.apply_snapshot(make_snapshot(seq=2, error="netlink: EPERM"))
    dashboard.apply_snapshot(make_snapshot(seq=3, error="netlink: EPERM"))
    lines = screen(dashboard)
    assert "POLL ERROR" in lines[0]
    assert "poll: netlink: EPERM" in lines[-1]
    assert [m.text for m in dashboard.status.history].count("poll: netlink: EPERM") == 1


def test_sorted_addresses_orders_as_the_address_sort_key():
    from ipvsman.model import address_sort_key, sorted_addresses

    ipv4 = ["10.0.0.10", "10.0.0.9", "9.255.255.255", "192.168.1.1", "10.0.0.9"]
    mixed = ipv4 + ["2001:db8::1", "::1", "not an address", "fe80::1%eth0"]
    for addresses in (ipv4, mixed, []):
        assert sorted_addresses(iter(addresses)) == sorted(addresses, key=address_sort_key)
    assert sorted_addresses(ipv4)[:2] == ["9.255.255.255", "10.0.0.9"]  # numerically, not as text


def test_views_show_the_same_with_the_pollers_arrangement_as_without(clock):
    import dataclasses

    from uihelpers import FakePoller, make_dashboard

    from ipvsman.demo import DemoBackend
    from ipvsman.poller import Poller

    backend = DemoBackend(seed=3, tick=1.0)
    backend.open()
    snapshot = Poller(backend, on_snapshot=lambda s: None).poll_once()
    assert snapshot.arrangement is not None and snapshot.layout is not None
    bare = dataclasses.replace(snapshot, arrangement=None)  # the views group by themselves
    boards = []
    for shown in (snapshot, bare):
        board = make_dashboard(FakePoller(), clock)
        board.apply_snapshot(shown)
        boards.append(board)
    for key in ("1", "2", "3"):
        for step in (key, "page down", "page down", "end"):
            pages = []
            for board in boards:
                board.top.keypress((100, 30), step)
                pages.append(screen(board))
            assert pages[0] == pages[1], (key, step)
    assert any("->" in line for line in pages[0])  # view 3 listed real servers under their services
