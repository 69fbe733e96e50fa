"""Selection across refreshes, rows updated in place, the lazy connection list, and the hand-off of
snapshots from the polling thread (only the newest is applied when the screen falls behind)."""

from __future__ import annotations

import threading

import pytest
import urwid
import urwid.testing
from uihelpers import DNS, WEB, WEB1, WEB2, conn, make_services, make_snapshot, screen

from ipvsman.model import Dest, DestKey, Service, ServiceKey
from ipvsman.poller import CommandResult, SetWeight
from ipvsman.ui.views.connections import ConnectionFilter, ConnectionsView
from ipvsman.ui.views import ViewContext

SIZE = (100, 30)


def test_selection_follows_the_same_real_server_across_refreshes(dashboard):
    dashboard.keypress(SIZE, "2")
    assert dashboard.view.select(WEB2)
    row = dashboard.view.rows[WEB2]
    # A new service sorts above the selected one, and the selected server's numbers change.
    new = Service(ServiceKey("inet", "tcp", "192.0.2.1", 22), "rr", dests=(Dest("10.1.0.1", 22, "masq", 1),))
    services = (new,) + make_services(web_weights=(100, 77, 0))
    dashboard.apply_snapshot(make_snapshot(seq=2, services=services))
    assert dashboard.view.selection() == WEB2
    assert dashboard.view.rows[WEB2] is row  # the same widget, its text set in place
    assert "77" in row.plain
    focused = [line for line in screen(dashboard) if "10.1.0.12:80" in line]
    assert focused and "77" in focused[0]


def test_selection_moves_to_a_neighbour_when_its_server_goes(dashboard):
    dashboard.keypress(SIZE, "2")
    dashboard.view.select(WEB2)
    services = make_services()
    web = services[0]
    services = (Service(web.key, web.scheduler, dests=tuple(d for d in web.dests if d.address != WEB2.address)),)
    dashboard.apply_snapshot(make_snapshot(seq=2, services=services + make_services()[1:]))
    assert dashboard.view.selection() in (WEB1, DestKey(WEB, "10.1.0.13", 80))


def test_unchanged_rows_are_not_rebuilt(dashboard):
    dashboard.keypress(SIZE, "1")
    rows = dict(dashboard.view.rows)
    dashboard.apply_snapshot(make_snapshot(seq=2))
    assert all(dashboard.view.rows[key] is row for key, row in rows.items())


def test_a_confirmed_change_clears_pending_and_a_different_weight_is_reported(dashboard, poller):
    dashboard.keypress(SIZE, "2")
    dashboard.view.select(WEB1)
    dashboard.keypress(SIZE, "+")
    assert WEB1 in dashboard.pending
    dashboard.apply_snapshot(make_snapshot(seq=2))  # polled before the command ran: still pending
    assert WEB1 in dashboard.pending
    dashboard.apply_result(CommandResult(SetWeight(WEB1, 100, 101), True, "done"))
    dashboard.apply_snapshot(make_snapshot(seq=3, services=make_services(web_weights=(90, 50, 0))))
    assert WEB1 not in dashboard.pending
    assert "is 90, not 101 as set" in dashboard.status.text


def many_connections(count: int):
    return tuple(
        conn(f"198.51.{i // 256 % 256}.{i % 256}", 1024 + i % 60000, "192.0.2.10", 80, f"10.1.0.{11 + i % 3}", 80,
             "ESTABLISHED" if i % 4 else "TIME_WAIT", i % 900)  # fmt: skip
        for i in range(count)
    )


def test_100k_connections_make_only_a_screenful_of_widgets(dashboard):
    dashboard.apply_snapshot(make_snapshot(seq=2, connections=many_connections(100_000)))
    dashboard.keypress(SIZE, "4")
    lines = screen(dashboard)
    walker = dashboard.view.walker
    assert "100,000 of 100,000 connections" in "\n".join(lines)
    body_rows = SIZE[1] - 6  # header 3, summary and column titles 2, status 1
    assert walker.created <= body_rows + 2
    dashboard.keypress(SIZE, "page down")
    dashboard.keypress(SIZE, "end")
    screen(dashboard)
    assert walker.created <= 4 * (body_rows + 2)
    assert walker.focus == 99_999
    print(f"\nwidgets made for 100,000 connections after three screens: {walker.created}")


def test_filter_language():
    rows = many_connections(30) + (
        conn("2001:db8::7", 5000, "2001:db8::10", 443, "2001:db8::20", 443, origin="SYNC"),
    )
    def count(text):
        parsed = ConnectionFilter.parse(text)
        return sum(1 for row in rows if parsed.matches(row))

    assert count("") == len(rows)
    assert count("state=time_wait") == 8
    assert count("state=Time-Wait") == 8
    assert count("r=10.1.0.11:80") == 10
    assert count("r=10.1.0.11 r=10.1.0.12") == 20  # one field: alternatives
    assert count("r=10.1.0.11 state=established") == 7  # two fields: both hold
    assert count("v=[2001:db8::10]:443") == 1
    assert count("v=2001:db8:0::10") == 1
    assert count("c=:1030") == 1
    assert count("origin=sync") == 1
    assert count("proto=udp") == 0
    assert count("198.51.0.2:") == 1  # plain words: text found in the row
    for bad in ("x=1", "v=", "v=nonsense", "r=10.0.0.1:99999"):
        with pytest.raises(ValueError):
            ConnectionFilter.parse(bad)


def test_connections_focus_follows_the_same_connection():
    view = ConnectionsView()
    rows = many_connections(50)
    first = make_snapshot(seq=1, connections=rows)
    view.update(first, ViewContext(now=first.taken_at))
    view.walker.set_focus(20)
    wanted = view.selection()
    second = make_snapshot(seq=2, connections=rows[10:] + rows[:5])
    view.update(second, ViewContext(now=second.taken_at))
    assert view.selection() == wanted
    assert view.walker.focus == 10


class FakeLoop:
    """Collects call_from_thread callbacks to run them later, as a busy loop would."""

    def __init__(self):
        self.calls = []
        self.stopped = False

    def call_from_thread(self, callback, *args):
        if self.stopped:
            raise RuntimeError("the urwid MainLoop is not running")
        self.calls.append((callback, args))

    def run_pending(self):
        calls, self.calls = self.calls, []
        for callback, args in calls:
            callback(*args)


def test_only_the_newest_snapshot_is_applied_when_the_loop_falls_behind(dashboard):
    loop = FakeLoop()
    dashboard.loop = loop
    applied = []
    original = dashboard.apply_snapshot
    dashboard.apply_snapshot = lambda snapshot: (applied.append(snapshot.seq), original(snapshot))
    threads = [threading.Thread(target=dashboard.on_snapshot, args=(make_snapshot(seq=seq),)) for seq in (5, 6, 7)]
    for thread in threads:
        thread.start()
        thread.join()
    assert len(loop.calls) == 1  # at most one apply waits in the loop
    loop.run_pending()
    assert applied == [7]
    dashboard.on_snapshot(make_snapshot(seq=8))
    loop.run_pending()
    assert applied == [7, 8]


def test_results_are_never_dropped_and_a_stopped_loop_is_tolerated(dashboard, poller, tmp_path):
    loop = FakeLoop()
    dashboard.loop = loop
    dashboard.on_result(CommandResult(SetWeight(WEB1, 100, 101), True, "ok"))
    dashboard.on_result(CommandResult(SetWeight(WEB1, 101, 102), True, "ok"))
    loop.stopped = True
    dashboard.on_snapshot(make_snapshot(seq=9))  # no exception once the loop has stopped
    dashboard.on_result(CommandResult(SetWeight(WEB1, 102, 103), True, "ok"))
    loop.run_pending()
    dashboard.drain_results()  # what run() does once the poller has stopped
    log = (tmp_path / "audit" / "weights.log").read_text().splitlines()
    assert [line.split(" new=")[1].split()[0] for line in log] == ["101", "102", "103"]


def test_the_real_loop_applies_snapshots_from_another_thread(dashboard):
    """A MainLoop on a scripted screen: a thread's snapshot reaches the screen."""
    screen_ = urwid.testing.ScriptedScreen(size=SIZE, inputs=[["2"], [], [], []])
    loop = urwid.MainLoop(dashboard.top, screen=screen_)
    dashboard.attach(loop)
    done = threading.Event()

    def feed(*_):
        services = make_services(web_weights=(4321, 50, 0))
        threading.Thread(target=lambda: (dashboard.on_snapshot(make_snapshot(seq=2, services=services)),
                                         done.set())).start()  # fmt: skip
        done.wait(5)

    loop.set_alarm_in(0, feed)
    loop.run()
    assert dashboard.snapshot.seq == 2
    assert any("4321" in line for line in screen_.last_text)


def test_dns_service_row_exists(dashboard):
    dashboard.keypress(SIZE, "1")
    assert dashboard.view.select(DNS)


def test_paused_snapshots_keep_the_age_of_the_data(dashboard, clock):
    import dataclasses

    first = dashboard.snapshot
    dashboard.keypress(SIZE, "4")
    clock.now = first.taken_at + 6
    dashboard.apply_snapshot(dataclasses.replace(first, seq=2, taken_at=first.taken_at + 5, paused=True))
    lines = screen(dashboard)
    assert "PAUSED" in lines[0] and "paused: data from 6.0s ago" in lines[0]
    assert "14:44" in lines[6]  # the first connection's 890 s, 6 s on


def test_a_late_poll_is_marked(dashboard, clock):
    assert "(late)" not in screen(dashboard)[0]
    clock.now += 30
    dashboard.tick()
    assert "poll #1 30s ago, took 12 ms (late)" in screen(dashboard)[0]


def test_health_samples_wait_for_the_next_snapshot_and_only_news_wakes_the_loop(dashboard):
    from uihelpers import HEALTH

    from ipvsman.ui.health import DirectorSample, Health

    loop = FakeLoop()
    dashboard.loop = loop
    dashboard.on_director_sample(HEALTH)  # the first sample: what is held is news
    assert len(loop.calls) == 1
    loop.run_pending()
    assert dashboard.health == HEALTH.health
    busier = DirectorSample(Health(77.0, 9.0, 41.0, HEALTH.health.interfaces), held=HEALTH.held)
    dashboard.on_director_sample(busier)  # only numbers changed: no wake, no redraw of its own
    assert loop.calls == []
    assert dashboard.health == HEALTH.health
    dashboard.on_snapshot(make_snapshot(seq=5))
    loop.run_pending()  # the snapshot brings the sample along
    assert dashboard.health == busier.health and "CPU 77%" in screen(dashboard)[1]
    moved = DirectorSample(busier.health, held={})  # the VIP moved to the peer: at once
    dashboard.on_director_sample(moved)
    assert len(loop.calls) == 1
    loop.run_pending()
    assert dashboard.held == {}
