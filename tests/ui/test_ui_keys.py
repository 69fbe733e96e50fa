"""Real keys pressed into the top widget; assertions on the commands the fake poller receives."""

from __future__ import annotations

import pytest
import urwid
import urwid.testing
from uihelpers import (
    DNS,
    KEEPALIVED,
    MAIL,
    WEB,
    WEB1,
    WEB2,
    WEB3,
    FakeBackend,
    make_configs,
    make_dashboard,
    make_options,
    make_services,
    make_snapshot,
    screen,
)

from ipvsman.model import DestKey
from ipvsman.poller import CommandResult, SetWeight
from ipvsman.ui.app import Dashboard
from ipvsman.ui.views.connections import ConnectionsView

SIZE = (100, 30)


def press(board, *keys):
    return urwid.testing.press(board.top, SIZE, *keys)


def select(board, view_key, row_key):
    press(board, view_key)
    assert board.view.select(row_key), f"no row {row_key} in view {view_key}"


def confirm(board, poller, services):
    """The poller ran the last command and the next poll shows `services`."""
    board.apply_result(CommandResult(poller.submitted[-1], True, "done"))
    board.apply_snapshot(make_snapshot(seq=board.snapshot.seq + 1, services=services))


def test_plus_and_minus_submit_weight_steps(dashboard, poller):
    select(dashboard, "2", WEB2)
    press(dashboard, "+")
    assert poller.submitted == [SetWeight(WEB2, 50, 51)]
    assert "pending: weight of tcp 192.0.2.10:80 -> 10.1.0.12:80 50 -> 51" in screen(dashboard)[-1]
    press(dashboard, "+", "-", "-")  # stacked on the weight asked for, not the one seen
    assert [c.new_weight for c in poller.submitted] == [51, 52, 51, 50]
    assert [c.old_weight for c in poller.submitted] == [50, 51, 52, 51]


def test_weight_step_option_and_bounds(poller, clock):
    board = Dashboard(make_options(weight_step=40), poller=poller, backend=FakeBackend(), clock=clock)
    board.apply_snapshot(make_snapshot(services=make_services(web_weights=(65500, 20, 0))))
    select(board, "2", WEB1)
    press(board, "+")
    assert poller.submitted[-1] == SetWeight(WEB1, 65500, 65535)
    press(board, "+")
    assert len(poller.submitted) == 1
    assert "already 65535" in board.status.text
    select(board, "2", WEB2)
    press(board, "-")
    assert poller.submitted[-1] == SetWeight(WEB2, 20, 0)


def test_zero_drains_and_zero_again_restores(dashboard, poller):
    select(dashboard, "3", WEB2)
    press(dashboard, "0")
    assert poller.submitted == [SetWeight(WEB2, 50, 0)]
    confirm(dashboard, poller, make_services(web_weights=(100, 0, 0)))
    assert "confirmed: weight of tcp 192.0.2.10:80 -> 10.1.0.12:80 is 0" in dashboard.status.text
    assert dashboard.view.selection() == WEB2
    press(dashboard, "0")
    assert poller.submitted[-1] == SetWeight(WEB2, 0, 50)


def test_zero_on_a_server_found_at_weight_zero_does_not_guess(dashboard, poller):
    select(dashboard, "2", WEB3)
    press(dashboard, "0")
    assert poller.submitted == []
    assert "nothing to restore" in dashboard.status.text


def test_refused_change_is_reported_and_audited(dashboard, poller, tmp_path):
    select(dashboard, "2", WEB1)
    press(dashboard, "-")
    result = CommandResult(poller.submitted[0], False, "set weight of ...: refused: Operation not permitted")
    dashboard.apply_result(result)
    assert "refused: Operation not permitted" in screen(dashboard)[-1]
    assert WEB1 not in dashboard.pending
    assert any(m.level == "error" and "refused" in m.text for m in dashboard.status.history)
    log = (tmp_path / "audit" / "weights.log").read_text()
    assert 'server=10.1.0.11:80 old=100 new=99 result="refused: set weight' in log


def test_audit_log_records_each_change(dashboard, poller, tmp_path):
    select(dashboard, "2", WEB2)
    press(dashboard, "+")
    dashboard.apply_result(CommandResult(poller.submitted[0], True, "weight ... 50 -> 51"))
    lines = (tmp_path / "audit" / "weights.log").read_text().splitlines()
    assert len(lines) == 2  # the attempt before the change, its result after
    assert lines[0].endswith('old=50 new=51 result="attempt"')
    assert 'service="tcp 192.0.2.10:80" server=10.1.0.12:80 old=50 new=51 result="ok"' in lines[1]
    assert " user=" in lines[1] and " backend=kernel " in lines[1]


@pytest.mark.parametrize("key", ["+", "-", "0"])
def test_read_only_option_disables_weight_keys_with_the_reason(poller, clock, key):
    board = Dashboard(make_options(read_only=True), poller=poller, backend=FakeBackend(), clock=clock)
    board.apply_snapshot(make_snapshot())
    select(board, "2", WEB1)
    press(board, key)
    assert poller.submitted == []
    assert "disabled: read-only mode (--read-only)" in board.status.text
    assert "READ-ONLY" in screen(board)[0]


def test_not_writable_snapshot_gives_the_backends_reason(dashboard, poller):
    dashboard.apply_snapshot(make_snapshot(seq=2, writable=False))
    select(dashboard, "2", WEB1)
    press(dashboard, "+")
    assert poller.submitted == []
    assert "disabled: no CAP_NET_ADMIN: run as root to change weights" in dashboard.status.text


def test_weight_keys_need_a_real_server(dashboard, poller):
    select(dashboard, "1", WEB)
    press(dashboard, "+")
    assert poller.submitted == []
    assert "select a real server" in dashboard.status.text


@pytest.mark.parametrize("key, label", [("R", "resync"), ("T", "sync test")])
def test_resync_keys_explain_why_they_cannot_run(poller, clock, key, label):
    class DemoBackend(FakeBackend):
        name = "demo"

    # No network traffic here: every case stops before a job would send anything.
    board = Dashboard(make_options(read_only=True), poller=poller, backend=FakeBackend(), clock=clock)
    board.apply_snapshot(make_snapshot())
    press(board, key)
    assert f"{label} disabled: read-only mode (--read-only)" in board.status.text
    board = Dashboard(make_options(), poller=poller, backend=DemoBackend(), clock=clock)
    board.apply_snapshot(make_snapshot())
    press(board, key)
    assert f"{label}: not in the demo" in board.status.text
    board = Dashboard(make_options(), poller=poller, backend=FakeBackend(), clock=clock)
    board.apply_snapshot(make_snapshot(daemons=()))
    press(board, key)
    assert f"{label}: no master sync daemon is running" in board.status.text
    assert board.job is None and poller.submitted == []


def test_pause_and_resume(dashboard, poller):
    press(dashboard, "p")
    assert poller.paused
    assert "PAUSED" in screen(dashboard)[0]
    press(dashboard, "p")
    assert not poller.paused
    assert "PAUSED" not in screen(dashboard)[0]


def test_view_keys_and_tab(dashboard):
    names = []
    for key in ["2", "3", "4", "5", "1", "tab", "tab", "shift tab"]:
        press(dashboard, key)
        names.append(dashboard.view.name)
    assert names == ["bindings", "realservers", "connections", "sync", "virtual", "bindings", "realservers",
                     "bindings"]  # fmt: skip


def test_quit_leaves_the_loop(dashboard):
    with pytest.raises(urwid.ExitMainLoop):
        press(dashboard, "q")


def test_help_opens_and_q_or_esc_closes_it(dashboard):
    press(dashboard, "?")
    assert any("Keys" in line for line in screen(dashboard))
    press(dashboard, "q")  # in the help, q closes it and does not quit
    assert not any("(? or Esc closes)" in line for line in screen(dashboard))
    press(dashboard, "?", "esc")
    assert dashboard.help is None


def test_enter_opens_connections_filtered_to_the_selection(dashboard):
    select(dashboard, "2", WEB1)
    press(dashboard, "enter")
    assert isinstance(dashboard.view, ConnectionsView)
    text = "\n".join(screen(dashboard))
    assert "3 of 11 connections" in text
    assert "10.1.0.12" not in text.split("REAL SERVER")[1]
    select(dashboard, "1", ("vip", "192.0.2.53"))
    press(dashboard, "enter")
    assert "2 of 11 connections" in "\n".join(screen(dashboard))
    select(dashboard, "1", MAIL)  # a firewall-mark service: matched by its real servers
    press(dashboard, "enter")
    assert dashboard.view.filter.text == "r=10.1.0.25:25"
    assert "1 of 11 connections" in "\n".join(screen(dashboard))
    select(dashboard, "3", ("rs", "10.1.0.11"))
    press(dashboard, "enter")
    assert "5 of 11 connections" in "\n".join(screen(dashboard))


def test_filter_typed_after_slash(dashboard):
    press(dashboard, "4", "/")
    press(dashboard, *"state=udp")
    assert "/ state=udp" in screen(dashboard)[-1]
    press(dashboard, "enter")
    assert "2 of 11 connections" in "\n".join(screen(dashboard))
    press(dashboard, "/", *" 5354", "enter")  # both words must hold
    assert "1 of 11 connections" in "\n".join(screen(dashboard))
    press(dashboard, "esc")
    assert "11 of 11 connections" in "\n".join(screen(dashboard))


def test_bad_filter_keeps_the_prompt_and_the_text(dashboard):
    press(dashboard, "4", "/", *"v=nonsense", "enter")
    assert dashboard.prompt is not None and dashboard.prompt.value == "v=nonsense"
    assert "not an address" in dashboard.status.text
    press(dashboard, "esc")
    assert dashboard.prompt is None
    assert dashboard.view.filter.text == ""


def test_sort_keys(dashboard):
    press(dashboard, "4", "s", "s")  # proto, then expires
    view = dashboard.view
    assert view.sort_column == "expires"
    expiries = [view.walker.connection_at(i).expires for i in range(len(view.walker))]
    assert expiries == sorted(expiries)
    press(dashboard, "r")
    expiries = [view.walker.connection_at(i).expires for i in range(len(view.walker))]
    assert expiries == sorted(expiries, reverse=True)
    press(dashboard, "S")
    assert view.sort_column == "proto"


def test_navigation_keys_and_wheel(dashboard):
    press(dashboard, "2")
    first = dashboard.view.selection()
    press(dashboard, "j")
    second = dashboard.view.selection()
    assert second != first and isinstance(second, DestKey)
    press(dashboard, "k")
    assert dashboard.view.selection() == first
    press(dashboard, "end")
    assert dashboard.view.selection() == DestKey(MAIL, "10.1.0.25", 25)
    press(dashboard, "home")
    assert dashboard.view.selection() == first
    assert urwid.testing.click(dashboard.top, SIZE, 10, 10, button=5)
    assert dashboard.view.selection() == second
    assert urwid.testing.click(dashboard.top, SIZE, 10, 10, button=4)
    assert dashboard.view.selection() == first
    press(dashboard, "page down")
    assert dashboard.view.selection() != first


def test_messages_expire(dashboard, clock):
    dashboard.status.post("hello")
    assert "hello" in screen(dashboard)[-1]
    clock.now += 6
    dashboard.tick()
    assert "hello" not in screen(dashboard)[-1]
    assert "hello" in [m.text for m in dashboard.status.history]


def test_connection_countdown_moves_with_the_clock(dashboard, clock):
    press(dashboard, "4")
    before = screen(dashboard)[6]
    clock.now += 10
    dashboard.tick()
    after = screen(dashboard)[6]
    assert "14:49" in before and "14:39" in after


def test_udp_service_and_dns_rows(dashboard):
    select(dashboard, "1", DNS)
    assert dashboard.view.selection() == DNS


def test_every_command_in_the_keymap_works_without_a_terminal(poller, clock, tmp_path):
    """Each bound key runs without raising (quit excepted) in each view, dialogs too: no dead bindings."""
    from ipvsman.ui.keymap import BINDINGS

    board = make_dashboard(poller, clock, tmp_path, configs=make_configs(keepalived=KEEPALIVED))
    board.apply_snapshot(make_snapshot(seq=2, daemons=()))  # R and T stop before sending anything
    openers = {"filter": ("4", "/"), "help": ("?",), "choose": ("2", "a"), "confirm": ("2", "x"), "details": ("2", "i")}
    for view_key in "12345":
        for binding in BINDINGS:
            press(board, view_key)
            if binding.command == "app.quit":
                continue
            if binding.context in openers:
                press(board, view_key)
                if binding.context in ("choose", "confirm", "details"):
                    select(board, "2", WEB1)
                press(board, *openers[binding.context][-1:] if binding.context != "filter" else openers["filter"])
                assert board.contexts()[0] == binding.context, binding
            press(board, binding.key)
            press(board, "esc") if board.prompt is not None else None
            board.close_help()
            board.close_dialog()
