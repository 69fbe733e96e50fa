"""Names, topology and keepalived.conf in the dashboard: labels on and off (`n`), drift marks and the
drift filter (`D`), details (`i`), adding (`a`) and removing (`x`) real servers with real keys,
keepalived's reload warning, VRRP owners, and configuration errors."""

from __future__ import annotations

import pytest
import urwid.testing
from uihelpers import (
    DNS,
    KEEPALIVED,
    TOPOLOGY,
    WEB,
    WEB1,
    WEB2,
    Clock,
    FakePoller,
    assert_golden,
    make_configs,
    make_dashboard,
    make_options,
    make_services,
    make_snapshot,
    screen,
)

from ipvsman.model import Dest, DestKey, Service, ServiceKey
from ipvsman.poller import AddDest, CommandResult, RemoveDest, SetWeight
from ipvsman.ui.config import load_configurations

SIZE = (100, 30)
WEB4 = DestKey(WEB, "10.1.0.14", 80)
SSH = ServiceKey("inet", "tcp", "192.0.2.20", 22)
# The topology without its spare: every service and server named, nothing that drifts.
NAMES_TOPOLOGY = "\n".join(line.replace(', "web4:10.1.0.14"', "") for line in TOPOLOGY.splitlines()) + "\n"


def press(board, *keys):
    return urwid.testing.press(board.top, SIZE, *keys)


def select(board, view_key, row_key):
    press(board, view_key)
    assert board.view.select(row_key), f"no row {row_key} in view {view_key}"


def text_of(board, size=SIZE) -> str:
    return "\n".join(screen(board, size))


def rows_with(board, needle: str) -> list[str]:
    return [line for line in screen(board) if needle in line]


@pytest.fixture
def poller():
    return FakePoller()


@pytest.fixture
def clock():
    return Clock()


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, name", [("1", "virtual"), ("2", "bindings"), ("3", "realservers"), ("4", "connections")])
def test_names_in_every_view_match_golden(poller, clock, key, name):
    board = make_dashboard(poller, clock, configs=make_configs(topology=NAMES_TOPOLOGY))
    press(board, key)
    lines = screen(board)
    assert board.drift is not None and len(board.drift) == 0  # the topology describes the kernel exactly
    assert_golden(f"names-{name}-100x30", lines)


def test_names_as_the_lvs_plugin_wrote_them(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs(topology=NAMES_TOPOLOGY))
    press(board, "2")
    web2 = rows_with(board, "10.1.0.12:80")[0]
    assert "-> web2/10.1.0.12:80" in web2
    press(board, "1")
    assert rows_with(board, "DNS domain/53/udp")  # configured name, then port name/port/protocol
    assert rows_with(board, "www/192.0.2.10")  # a VIP named by the hosts table
    press(board, "3")
    assert rows_with(board, "web1/10.1.0.11")
    assert rows_with(board, "WebTLS https/443/tcp www/192.0.2.10")


@pytest.mark.parametrize("key", ["1", "2", "3", "4"])
def test_n_shows_numbers_exactly_as_a_numeric_start(poller, clock, key):
    configs = make_configs(topology=NAMES_TOPOLOGY)
    named = make_dashboard(poller, clock, configs=configs)
    numeric = make_dashboard(FakePoller(), clock, configs=configs, names=False)
    press(named, key)
    press(numeric, key)
    press(named, "n")
    assert named.status.text.strip() == "numeric addresses"
    assert screen(named)[:-1] == screen(numeric)[:-1]
    for name in ("web1", "www", "http", "WebTLS", "dns1"):
        assert name not in text_of(named)
    press(named, "n")
    assert "web1" in text_of(named) or key == "1"  # view 1 names VIPs and services, not servers
    assert "www" in text_of(named)


def test_names_redraw_when_the_resolver_learns_one(poller, clock):
    """A name that arrives later (DNS) reaches the screen through on_names_update."""
    board = make_dashboard(poller, clock)
    press(board, "3")
    assert "mx1" not in text_of(board)

    class Loop:
        def call_from_thread(self, callback, *args):
            callback(*args)

    board.loop = Loop()
    board.names.resolver.inject({"10.1.0.25": "mx1"})  # what a lookup thread's answer amounts to
    board.on_names_update()
    assert rows_with(board, "mx1/10.1.0.25")


# -- drift -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, name", [("1", "virtual"), ("2", "bindings"), ("3", "realservers")])
def test_drift_marks_match_golden(poller, clock, key, name):
    board = make_dashboard(poller, clock, configs=make_configs(topology=None, keepalived=KEEPALIVED), names=False)
    press(board, key)
    assert_golden(f"drift-{name}-100x30", screen(board))


def test_drift_marks_are_words_on_the_rows_that_drift(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs(keepalived=KEEPALIVED), names=False)
    assert "DRIFT 6" in screen(board)[0]
    press(board, "2")
    assert rows_with(board, "-> 10.1.0.12:80")[0].split()[-1] == "weight"
    assert rows_with(board, "-> 10.1.0.12:8443")[0].split()[-1] == "method"
    assert rows_with(board, "-> 10.1.0.11:80")[0].split()[-1] == "100"  # agrees: no mark
    assert rows_with(board, "-> 10.1.0.14:80")[0].split()[-1] == "MISSING"
    assert "DRIFT  scheduler wrr, configured rr" in rows_with(board, "443/tcp")[0]
    assert "MISSING  configured (keepalived.conf:49), not in the kernel" in rows_with(board, "22/tcp")[0]
    assert "DRIFT  in the kernel, not configured" in rows_with(board, "FWM 7")[0]
    assert "DRIFT" not in rows_with(board, "-> 10.1.0.53:53")[0]
    press(board, "1")
    assert rows_with(board, "DRIFT  10.1.0.12:80 weight 50, configured 100; 10.1.0.14:80 configured, not in")


def test_drift_filter_lists_only_what_drifts(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs(keepalived=KEEPALIVED), names=False)
    dns_rows = {"1": DNS, "2": DestKey(DNS, "10.1.0.53", 53), "3": DestKey(DNS, "10.1.0.53", 53)}
    for key in "123":
        press(board, key)
        assert dns_rows[key] in board.view.rows
        press(board, "D")
        text = text_of(board)
        assert "DRIFT ONLY  4 services drift against keepalived.conf; D shows all" in text
        assert "DRIFT 6 ONLY" in screen(board)[0]
        assert dns_rows[key] not in board.view.rows  # DNS agrees with keepalived.conf
        assert WEB2 in board.view.rows or key == "1"
        assert ("missing", SSH) in board.view.rows or key == "3"
        if key == "3":  # real servers that agree are left out too
            assert WEB1 not in board.view.rows and ("missing", WEB4) in board.view.rows
        press(board, "D")
        assert "DRIFT ONLY" not in text_of(board) and dns_rows[key] in board.view.rows
    press(board, "2", "D", "4")
    assert "DRIFT ONLY" not in text_of(board)  # views 4 and 5 are not filtered
    assert "DRIFT 6 ONLY" in screen(board)[0]


def test_drift_filter_without_a_configuration_says_what_to_give(dashboard):
    press(dashboard, "2", "D")
    assert "nothing to compare the kernel with (--keepalived FILE or --topology FILE)" in dashboard.status.text
    assert "DRIFT" not in text_of(dashboard)


def test_details_of_a_drifting_server(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs(keepalived=KEEPALIVED))
    select(board, "2", WEB2)
    press(board, "i")
    text = board.dialog.text
    assert "kernel: weight 50, Masq, 1 active, 1 inactive connections" in text
    assert "keepalived's next reload sets it back to weight 100" in text
    assert "topology.txt: named web2, weight 50, Masq (topology.txt:2)" in text
    assert "tcp 192.0.2.10:80 -> 10.1.0.12:80: weight 50, configured 100 (keepalived.conf:18)" in text
    assert "Real server web2/10.1.0.12:80 of Web http/80/tcp www/192.0.2.10" in text_of(board)
    press(board, "i")
    assert board.dialog is None
    select(board, "1", ("vip", "192.0.2.20"))
    press(board, "i")
    assert "not held here, VRRP instance VI_1" in board.dialog.text
    assert "22/tcp 192.0.2.20: MISSING, configured (keepalived.conf:49)" in board.dialog.text
    press(board, "2")  # another command closes the details and runs
    assert board.dialog is None and board.view.name == "bindings"


# -- a and x -----------------------------------------------------------------------------------


def test_a_offers_the_topologys_spare_and_enter_adds_it(poller, clock, tmp_path):
    board = make_dashboard(poller, clock, tmp_path, configs=make_configs())
    select(board, "2", WEB1)
    press(board, "a")
    text = text_of(board)
    assert "Add to Web http/80/tcp www/192.0.2.10" in text and "web4/10.1.0.14:80  weight 1  Masq" in text
    press(board, "enter")
    assert poller.submitted == [AddDest(WEB, "10.1.0.14", 80, "masq", 1)]
    assert board.dialog is None
    board.apply_result(CommandResult(poller.submitted[0], True, "added 10.1.0.14:80 to tcp 192.0.2.10:80"))
    log = (tmp_path / "audit" / "changes.log").read_text()
    assert 'action=add service="tcp 192.0.2.10:80" server=10.1.0.14:80 forward=masq weight=1 result="ok"' in log


def test_a_with_several_spares_picks_the_chosen_one(poller, clock):
    topology = TOPOLOGY.replace('"web4:10.1.0.14"', '"web4-5:10.1.0.14+ -w7"')
    board = make_dashboard(poller, clock, configs=make_configs(topology=topology))
    select(board, "3", WEB2)
    press(board, "a", "down", "enter")
    assert poller.submitted == [AddDest(WEB, "10.1.0.15", 80, "masq", 7)]


def test_a_on_a_missing_row_preselects_it(poller, clock):
    topology = TOPOLOGY.replace('"web4:10.1.0.14"', '"web4-5:10.1.0.14+"')
    keepalived = KEEPALIVED.replace("real_server 10.1.0.14 80", "real_server 10.1.0.15 80")
    board = make_dashboard(poller, clock, configs=make_configs(topology=topology, keepalived=keepalived))
    select(board, "2", ("missing", DestKey(WEB, "10.1.0.15", 80)))
    press(board, "a", "enter")
    assert poller.submitted == [AddDest(WEB, "10.1.0.15", 80, "masq", 1)]


@pytest.mark.parametrize(
    "configs, row, message",
    [
        (make_configs(topology=None, keepalived=KEEPALIVED), WEB1, "no topology file lists real servers to add"),
        (make_configs(topology=NAMES_TOPOLOGY), WEB1, "every real server the topology lists for tcp 192.0.2.10:80 is"),
        (make_configs(), ("vip", "192.0.2.10"), "select a service or one of its real servers first"),
        (make_configs(keepalived=KEEPALIVED), ("missing", SSH), "tcp 192.0.2.20:22 is not in the kernel"),
    ],
)
def test_a_says_why_there_is_nothing_to_add(poller, clock, configs, row, message):
    board = make_dashboard(poller, clock, configs=configs)
    select(board, "1" if row != WEB1 else "2", row)
    press(board, "a")
    assert message in board.status.text
    assert board.dialog is None and poller.submitted == []


def test_esc_adds_nothing(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs())
    select(board, "2", WEB1)
    press(board, "a", "esc")
    assert board.dialog is None and poller.submitted == []
    assert "nothing added" in board.status.text


def test_x_asks_and_y_removes(poller, clock, tmp_path):
    board = make_dashboard(poller, clock, tmp_path, configs=make_configs(keepalived=KEEPALIVED))
    select(board, "2", WEB2)
    press(board, "x")
    text = text_of(board)
    assert "remove 10.1.0.12:80 from tcp 192.0.2.10:80? y/n" in text
    assert "keepalived.conf lists it: keepalived's next reload adds it back" in text
    press(board, "1", "+")  # a question waits for its answer: no view change, no weight change
    assert board.view.name == "bindings" and poller.submitted == []
    assert "answer y or n first" in board.status.text
    press(board, "y")
    assert poller.submitted == [RemoveDest(WEB2)]
    assert board.dialog is None
    board.apply_result(CommandResult(poller.submitted[0], False, "remove ...: refused: No such destination"))
    log = (tmp_path / "audit" / "changes.log").read_text()
    assert 'action=remove service="tcp 192.0.2.10:80" server=10.1.0.12:80 result="refused: remove' in log


@pytest.mark.parametrize("answer", ["n", "esc", "q"])
def test_x_answered_no_keeps_the_server(poller, clock, answer):
    board = make_dashboard(poller, clock, configs=make_configs())
    select(board, "3", WEB1)
    press(board, "x", answer)
    assert board.dialog is None and poller.submitted == []
    assert "nothing changed" in board.status.text


def test_x_needs_a_real_server_in_the_kernel(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs(keepalived=KEEPALIVED))
    select(board, "2", ("missing", WEB4))
    press(board, "x")
    assert "is not in the kernel: nothing to remove" in board.status.text
    select(board, "1", WEB)
    press(board, "x")
    assert "select a real server first" in board.status.text
    assert board.dialog is None and poller.submitted == []


@pytest.mark.parametrize("key, word", [("a", "add"), ("x", "remove")])
def test_a_and_x_are_refused_in_read_only_mode(poller, clock, key, word):
    board = make_dashboard(poller, clock, configs=make_configs(), read_only=True)
    select(board, "2", WEB1)
    press(board, key)
    assert f"{word} disabled: read-only mode (--read-only)" in board.status.text
    board = make_dashboard(poller, clock, configs=make_configs())
    board.apply_snapshot(make_snapshot(seq=2, writable=False))
    select(board, "2", WEB1)
    press(board, key)
    assert f"{word} disabled: no CAP_NET_ADMIN: run as root to change weights" in board.status.text
    assert board.dialog is None and poller.submitted == []


def test_a_rechecks_after_the_choice(poller, clock):
    """The chooser stays open across polls: a spare that turned up meanwhile is not added twice."""
    board = make_dashboard(poller, clock, configs=make_configs())
    select(board, "2", WEB1)
    press(board, "a")
    web, *others = make_services()
    grown = Service(web.key, web.scheduler, dests=web.dests + (Dest("10.1.0.14", 80, "masq", 1),))
    board.apply_snapshot(make_snapshot(seq=2, services=(grown, *others)))
    press(board, "enter")
    assert poller.submitted == []
    assert "10.1.0.14:80 is already in tcp 192.0.2.10:80" in board.status.text


# -- keepalived's reload -----------------------------------------------------------------------


def test_weight_change_warns_that_keepalived_will_undo_it(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs(keepalived=KEEPALIVED))
    select(board, "2", WEB1)
    press(board, "-")
    warning = "keepalived's next reload sets 10.1.0.11:80 back to weight 100 (keepalived.conf:15)"
    assert warning in screen(board)[-1]
    assert poller.submitted == [SetWeight(WEB1, 100, 99)]
    board.apply_result(CommandResult(poller.submitted[-1], True, "done"))
    board.apply_snapshot(make_snapshot(seq=2, services=make_services(web_weights=(99, 50, 0))))
    assert warning in screen(board)[-1]  # said again once the kernel confirms it
    assert "confirmed: weight of tcp 192.0.2.10:80 -> 10.1.0.11:80 is 99" in [m.text for m in board.status.history]


def test_no_warning_for_the_configured_weight_or_without_keepalived(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs(keepalived=KEEPALIVED), weight_step=50)
    select(board, "2", WEB2)
    press(board, "+")  # 50 -> 100, what keepalived.conf says
    assert poller.submitted == [SetWeight(WEB2, 50, 100)]
    assert not any("reload" in m.text for m in board.status.history)
    board = make_dashboard(poller, clock, configs=make_configs())  # a topology is not reloaded
    select(board, "2", WEB2)
    press(board, "0")
    assert not any("reload" in m.text for m in board.status.history)


# -- VIP owners and configuration errors -------------------------------------------------------


def test_vip_owner_with_its_vrrp_instance(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs(keepalived=KEEPALIVED), names=False)
    press(board, "1")
    assert "held here on eth0 (VRRP VI_1)" in rows_with(board, " 192.0.2.10 ")[0]
    assert "not held here (VRRP VI_1)" in rows_with(board, " 192.0.2.20 ")[0]
    assert "not held here" in rows_with(board, " 192.0.2.53 ")[0] and "VRRP" not in rows_with(board, " 192.0.2.53 ")[0]
    press(board, "2")
    assert "held here on eth0 (VRRP VI_1)" in rows_with(board, "192.0.2.10:")[0]


def test_bad_configuration_lines_are_reported_and_the_rest_still_counts(poller, clock, tmp_path):
    topology = tmp_path / "topology.txt"
    topology.write_text(NAMES_TOPOLOGY.replace("DNS:u:", "DNS:x:"))
    options = make_options(topology=str(topology), keepalived=str(tmp_path / "missing.conf"))
    configs = load_configurations(options, demo=False)
    board = make_dashboard(poller, clock, configs=configs)
    posted = [message.text for message in board.status.history]
    assert posted[0] == f"{topology}:4: expected protocol t, u, s or f, got 'x'"
    assert posted[1].startswith(f"{tmp_path / 'missing.conf'}:0: cannot read")
    assert posted[1] in screen(board)[-1] or posted[1][:90] in screen(board)[-1]
    press(board, "2")
    assert rows_with(board, "web1/10.1.0.11:80")  # the other lines still name things
    assert rows_with(board, "domain/53/udp") and not rows_with(board, " DNS ")  # the bad line names nothing
    # An unreadable keepalived.conf calls nothing extra: drift is against the topology, which lacks DNS.
    assert board.configs.drift_source is configs.topology and "DRIFT 1" in screen(board)[0]
    press(board, "5")
    text = "\n".join(row.plain for row in board.view.walker)
    assert "topology.txt: 3 services, for names, drift, a (add); 1 error" in text
    assert f"\n                         {topology}\n" in text
    assert "\n     topology.txt:4: expected protocol t, u, s or f, got 'x'" in text
    assert "missing.conf: 0 services, for names, VRRP, reload warnings; 1 error" in text
    assert "\n     missing.conf:0: cannot read" in text


def test_the_demo_reads_no_default_keepalived_conf(monkeypatch):
    from ipvsman import keepalived

    monkeypatch.setattr(keepalived, "default_path", lambda: "/nonexistent/keepalived.conf")
    assert load_configurations(make_options(), demo=True).keepalived is None
    assert load_configurations(make_options(), demo=False).keepalived.path == "/nonexistent/keepalived.conf"


def test_dns_row_still_selectable_with_configurations(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs(keepalived=KEEPALIVED))
    select(board, "1", DNS)
    assert board.view.selection() == DNS


def test_keys_on_a_missing_row_say_it_is_not_in_the_kernel(poller, clock):
    board = make_dashboard(poller, clock, configs=make_configs(keepalived=KEEPALIVED))
    for key in ("+", "0", "enter"):
        select(board, "2", ("missing", WEB4))
        press(board, key)
        assert "tcp 192.0.2.10:80 -> 10.1.0.14:80 is not in the kernel" in board.status.text, key
    assert poller.submitted == [] and board.view.name == "bindings"


@pytest.mark.parametrize("key", ["1", "2"])
def test_the_drift_filter_redraws_every_label_while_the_layout_holds(poller, clock, key):
    import dataclasses

    dns = {"1": DNS, "2": DestKey(DNS, "10.1.0.53", 53)}[key]
    board = make_dashboard(poller, clock, configs=make_configs(keepalived=KEEPALIVED), names=False)
    press(board, key, "D")
    board.apply_snapshot(dataclasses.replace(board.snapshot, layout=1))  # as the poller numbers them
    assert dns not in board.view.rows
    press(board, "D")  # all services again, with the same layout: labels for every one of them
    assert dns in board.view.rows
    assert rows_with(board, "53/udp") and rows_with(board, "22/tcp")
