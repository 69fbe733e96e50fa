"""Views 1-3 at director scale: 10,000 services with 10 real servers each make only the widgets on
screen, and the selection follows the same key when a refresh moves it."""

from __future__ import annotations

import pytest
from uihelpers import Clock, FakePoller, make_dashboard, make_snapshot, screen

from ipvsman.model import Dest, DestKey, Rates, Service, ServiceKey

SIZE = (200, 60)
SERVICES = 10_000
DESTS = 10
SCREENFUL = SIZE[1]  # no more rows than the screen has lines can be on it
SLACK = 4  # the rows just above and below the screen that urwid looks at


def vip(number: int) -> str:
    """Two services (ports 80 and 443) a VIP."""
    half = number // 2
    return f"10.{half // 65536}.{half // 256 % 256}.{half % 256}"


def service_key(number: int) -> ServiceKey:
    return ServiceKey("inet", "tcp", vip(number), 80 if number % 2 == 0 else 443)


def large_services(count: int = SERVICES, weight: int = 1, first: int = 0) -> tuple[Service, ...]:
    return tuple(
        Service(service_key(number), "wlc", rates=Rates(cps=number % 50), dests=tuple(
            Dest(f"172.16.{dest}.{number % 250 + 1}", 8080, "masq", weight, active_conns=number % 7)
            for dest in range(DESTS)))  # fmt: skip
        for number in range(first, first + count)
    )


@pytest.fixture(scope="module")
def large_snapshot():
    return make_snapshot(seq=2, services=large_services(), connections=())


def large_board(snapshot):
    board = make_dashboard(FakePoller(), Clock())
    board.apply_snapshot(snapshot)
    return board


# Rows of each view for the snapshot: view 1 a VIP title and a row a service, a blank line between
# VIPs; view 2 the same with a row a real server instead; view 3 a line a real server address and a
# row for each service it serves.
VIPS = SERVICES // 2
EXPECTED_ROWS = {
    "1": VIPS * 2 - 1 + SERVICES,
    "2": VIPS * 2 - 1 + SERVICES * DESTS,
    "3": 250 * DESTS * 2 - 1 + SERVICES * DESTS,
}


@pytest.mark.parametrize("view_key", ["1", "2", "3"])
def test_a_large_table_makes_only_a_screenful_of_widgets(large_snapshot, view_key):
    board = large_board(large_snapshot)
    board.keypress(SIZE, view_key)
    lines = screen(board, SIZE)
    walker = board.view.walker
    assert len(walker) == EXPECTED_ROWS[view_key]
    assert any("10.0.0.0" in line or "172.16.0.1" in line for line in lines)
    # One frame: some rows have several lines, so fewer widgets than lines are needed.
    assert 0 < walker.created <= SCREENFUL + SLACK
    for key in ("page down", "page down", "end", "page up", "home"):
        board.keypress(SIZE, key)
        screen(board, SIZE)
    assert walker.focus in (0, 1)  # back at the top, on the first row that takes the focus
    # Five more screens were drawn; each one's widgets at most once.
    assert walker.created <= 6 * (SCREENFUL + SLACK)
    print(f"\nview {view_key}: {len(walker):,} rows, {walker.created} widgets made for six screens")


@pytest.mark.parametrize("view_key", ["1", "2", "3"])
def test_a_refresh_with_the_same_rows_makes_no_new_widget(large_snapshot, view_key):
    board = large_board(large_snapshot)
    board.keypress(SIZE, view_key)
    board.keypress(SIZE, "page down")
    screen(board, SIZE)
    made = board.view.walker.created
    selected = board.view.selection()
    board.apply_snapshot(make_snapshot(seq=3, services=large_services(), connections=()))
    screen(board, SIZE)
    assert board.view.selection() == selected
    assert board.view.walker.created == made  # the rows on screen were reused by key, their text set in place


def test_selection_follows_the_same_real_server_in_a_large_table(large_snapshot):
    board = large_board(large_snapshot)
    board.keypress(SIZE, "2")
    wanted = DestKey(service_key(5_001), "172.16.3.2", 8080)  # service 5001 serves 172.16.*.2
    assert board.view.select(wanted)
    screen(board, SIZE)
    made = board.view.walker.created
    position = board.view.walker.focus
    # Six services that sort above it go away, and every weight changes.
    services = large_services(weight=7)
    services = services[6:]
    board.apply_snapshot(make_snapshot(seq=3, services=services, connections=()))
    lines = screen(board, SIZE)
    assert board.view.selection() == wanted
    assert board.view.walker.focus == position - 6 * DESTS - 3 * 2  # its services' rows and 3 VIPs' two rows
    focused = [line for line in lines if "172.16.3.2:8080" in line]
    assert focused and focused[0].split()[-1] == "7"
    assert board.view.walker.created <= made + SCREENFUL + SLACK


def test_selection_follows_the_same_service_and_server_address_in_views_1_and_3(large_snapshot):
    board = large_board(large_snapshot)
    board.keypress(SIZE, "1")
    assert board.view.select(service_key(7_777))
    board.keypress(SIZE, "3")
    assert board.view.select(("rs", "172.16.9.100"))
    board.keypress(SIZE, "down")
    below = board.view.selection()
    assert isinstance(below, DestKey) and below.address == "172.16.9.100"
    # A new VIP sorts first: views 1 and 3 keep their keys.
    extra = (Service(ServiceKey("inet", "tcp", "1.1.1.1", 80), "rr", dests=(Dest("1.2.3.4", 80, "masq", 1),)),)
    board.apply_snapshot(make_snapshot(seq=3, services=extra + large_services(), connections=()))
    assert board.view.selection() == below
    board.keypress(SIZE, "1")
    assert board.view.selection() == service_key(7_777)
    assert len(board.view.walker) == EXPECTED_ROWS["1"] + 3  # the new VIP's title and service, a blank line


def test_a_selected_service_that_goes_leaves_the_selection_on_a_neighbour(large_snapshot):
    board = large_board(large_snapshot)
    board.keypress(SIZE, "1")
    gone = service_key(4_000)
    assert board.view.select(gone)
    position = board.view.walker.focus
    services = tuple(service for service in large_services() if service.key != gone)
    board.apply_snapshot(make_snapshot(seq=3, services=services, connections=()))
    assert gone not in board.view.rows
    # The row that took its place (the VIP's other service) is selected: the nearest at or above it.
    assert board.view.selection() == service_key(4_001)
    assert board.view.walker.focus == position


def test_view_3_keeps_its_rows_while_the_layout_holds_and_shows_each_new_snapshot(large_snapshot):
    import dataclasses

    board = large_board(dataclasses.replace(large_snapshot, layout=1))
    board.keypress(SIZE, "3")
    assert board.view.select(("rs", "172.16.9.100"))
    board.keypress(SIZE, "down")
    selected = board.view.selection()
    blocks = board.view.walker.blocks
    screen(board, SIZE)
    # The same layout, every weight changed: the same blocks, drawn from the new snapshot.
    board.apply_snapshot(dataclasses.replace(make_snapshot(seq=3, services=large_services(weight=7), connections=()),
                                             layout=1))  # fmt: skip
    assert board.view.walker.blocks is blocks
    assert board.view.selection() == selected
    weights = [line.split("weight")[1].split()[0] for line in screen(board, SIZE) if "-> :8080 weight" in line]
    assert weights and set(weights) == {"7"}
    # A new layout (one service less): grouped again.
    fewer = dataclasses.replace(make_snapshot(seq=4, services=large_services(weight=7)[1:], connections=()), layout=2)
    board.apply_snapshot(fewer)
    assert board.view.walker.blocks is not blocks
    assert len(board.view.walker) == EXPECTED_ROWS["3"] - DESTS
    assert board.view.selection() == selected


def test_where_vips_are_held_follows_the_address_list_while_the_layout_holds():
    import dataclasses

    from uihelpers import HEALTH

    from ipvsman.ui.health import DirectorSample

    board = make_dashboard(FakePoller(), Clock())
    board.apply_snapshot(dataclasses.replace(make_snapshot(seq=1), layout=1))
    board.apply_director(HEALTH)  # 192.0.2.10 held on eth0
    assert board.owners["192.0.2.10"].interface == "eth0"
    board.apply_snapshot(dataclasses.replace(make_snapshot(seq=2), layout=1))
    assert board.owners["192.0.2.10"].interface == "eth0"
    board.apply_director(DirectorSample(HEALTH.health, held={"192.0.2.10": "bond0"}))
    assert board.owners["192.0.2.10"].interface == "bond0"
    board.apply_director(DirectorSample(HEALTH.health, held={}))  # the VRRP peer took it
    board.apply_snapshot(dataclasses.replace(make_snapshot(seq=3), layout=1))
    assert board.owners["192.0.2.10"].interface is None
    assert any("not held here" in line for line in screen(board))


def arranged(snapshot, layout: int, arrangement=None):
    """The snapshot as the polling thread hands it over: with its layout's number and arrangement."""
    import dataclasses

    from ipvsman.model import Arrangement

    return dataclasses.replace(snapshot, layout=layout, arrangement=arrangement or Arrangement(snapshot.services))


@pytest.mark.parametrize("view_key", ["2", "3"])
def test_views_2_and_3_show_the_polling_threads_blocks_and_find_keys_through_its_index(large_snapshot, view_key):
    from ipvsman.ui.views import IndexedBlocks

    first = arranged(large_snapshot, 1)
    board = large_board(first)
    board.keypress(SIZE, view_key)
    blocks = board.view.walker.blocks
    assert isinstance(blocks, IndexedBlocks) and len(board.view.walker) == EXPECTED_ROWS[view_key]
    title = ("vip", vip(7_777)) if view_key == "2" else ("rs", "172.16.9.28")
    target = DestKey(service_key(7_777), "172.16.9.28", 8080)
    for key in (title, target):
        assert board.view.select(key) and board.view.selection() == key
    assert not board.view.select(DestKey(service_key(7_777), "172.16.9.29", 8080))  # no such real server
    # The same layout, every weight changed: the same blocks, drawn from the new snapshot.
    board.apply_snapshot(arranged(make_snapshot(seq=3, services=large_services(weight=7), connections=()), 1,
                                  first.arrangement))  # fmt: skip
    assert board.view.walker.blocks is blocks and board.view.selection() == target
    lines = [line for line in screen(board, SIZE) if "172.16." in line or "-> :8080 weight" in line]
    if view_key == "2":
        assert lines and all(line.rstrip().endswith(" 7") for line in lines if "172.16." in line)
    else:
        assert lines and all("weight 7 " in line for line in lines if "-> :8080 weight" in line)
    # A new layout, one service fewer: the new arrangement's blocks, the selection found in them.
    fewer = arranged(make_snapshot(seq=4, services=large_services(weight=7)[1:], connections=()), 2)
    board.apply_snapshot(fewer)
    assert board.view.walker.blocks is not blocks and board.view.walker.block_of is not None
    assert len(board.view.walker) == EXPECTED_ROWS[view_key] - DESTS
    assert board.view.selection() == target
