"""The dashboard over a demo cluster: view 6, the node selector and header, changes per node or on every node, the sync probe."""

from __future__ import annotations

from dataclasses import replace

import pytest
from uihelpers import Clock, fixed_names, make_options, screen

from ipvsman.cluster.compare import compare_cluster
from ipvsman.cluster.demo import DemoCluster
from ipvsman.cluster.state import ClusterSnapshot, Command, CommandReply
from ipvsman.cluster.syncprobe import format_delay
from ipvsman.model import DestKey
from ipvsman.ui.app import Dashboard
from ipvsman.ui.cluster import NOT_A_CLUSTER, ClusterControl

SIZE = (120, 40)
START = 1_700_000_000.0


class SteppedCluster(DemoCluster):
    """The demo cluster polled in the test's thread, whose commands run at once on the node's backend
    and are recorded as (node, kind, args)."""

    def __init__(self, names, clock):
        super().__init__(names, seed=1, tick=1.0, clock=clock)
        self.sent: list[tuple[str, str, dict]] = []

    def command(self, node, command: Command, on_reply) -> None:
        self.sent.append((node, command.kind, dict(command.args)))
        if command.kind in ("sync-probe", "probe-watch"):  # the demo answers them at once already
            super().command(node, command, on_reply)
            return
        try:
            message = self._function(node, command)(self.backends[node])
            on_reply(CommandReply(node, command, True, message))
        except Exception as exc:
            on_reply(CommandReply(node, command, False, f"{command.kind}: refused: {exc}"))


@pytest.fixture
def clock():
    return Clock(START)


@pytest.fixture
def cluster(clock):
    return SteppedCluster(["lvs-1", "lvs-2", "lvs-3"], clock)


@pytest.fixture
def board(cluster, clock, tmp_path):
    control = ClusterControl(cluster, cluster.names)
    dashboard = Dashboard(make_options(audit_log=str(tmp_path / "audit.log")), poller=control, backend=cluster,
                          hostname="here", clock=clock, names=fixed_names(show=False), cluster=control)  # fmt: skip
    step(dashboard, cluster, clock)
    return dashboard


def step(dashboard: Dashboard, cluster: SteppedCluster, clock: Clock, polls: int = 1) -> ClusterSnapshot:
    for _ in range(polls):
        clock.now += 1.0
        snapshot = cluster.poll_all()
    dashboard.cluster.apply(snapshot, compare_cluster(snapshot, dashboard.cluster.configuration))
    return snapshot


def text(dashboard: Dashboard) -> str:
    return "\n".join(screen(dashboard, SIZE))


def drifted_dest(dashboard: Dashboard, node: str) -> tuple[DestKey, int, int]:
    """The real server whose weight the demo set to 0 on `node`: (key, weight there, weight on lvs-1)."""
    row = next(row for row in dashboard.cluster.report.drift if row.kind == "weight" and row.nodes == (node,))
    values = dict(row.values)
    return row.dest, int(values[node]), int(values["lvs-1"])


def test_view_6_shows_nodes_vips_drift_sync_and_tables(board):
    board.keypress(SIZE, "6")
    shown = text(board)
    assert "CLUSTER: every director side by side" in shown
    for line in ("lvs-1  master     4 VIPs", "lvs-2  backup     no VIP", "lvs-3  backup"):
        assert line in shown, line
    assert "10.10.10.80        lvs-1 on eth0" in shown
    key, weight, reference = drifted_dest(board, "lvs-2")
    assert f"lvs-2: {key} weight {weight}, lvs-[1,3]: {reference}" in shown
    assert "master on eth0 syncid 1" in shown and "backup on eth0 syncid 1" in shown
    assert "Connections: the VIP holder against each backup" in shown
    assert "of lvs-1's" in shown and "missing" in shown
    assert "NODE DRIFT 2" in shown  # the header says it on every view


def test_the_header_names_the_node_and_n_cycles_what_views_1_to_5_show(board):
    assert "lvs-1 (master, holds 4 VIPs)" in text(board)
    key, weight, reference = drifted_dest(board, "lvs-2")
    board.keypress(SIZE, "2")
    assert board.snapshot.find_dest(key).weight == reference
    board.keypress(SIZE, "N")
    assert "lvs-2 (backup)" in text(board)
    assert board.snapshot.find_dest(key).weight == weight  # views 1-5 now show lvs-2's own table
    assert board.held == {"10.10.10.3": "eth0"}
    board.keypress(SIZE, "N")
    board.keypress(SIZE, "N")
    assert "lvs-1 (master, holds 4 VIPs)" in text(board)


def test_enter_on_a_node_in_view_6_shows_that_node(board):
    board.keypress(SIZE, "6")
    board.keypress(SIZE, "home")
    while board.view.selection() != ("node", "lvs-3"):
        board.keypress(SIZE, "down")
    board.keypress(SIZE, "enter")
    assert board.cluster.selected == "lvs-3"
    assert "lvs-3 (backup)" in text(board)


def select_dest(board: Dashboard, key: DestKey) -> None:
    board.keypress(SIZE, "2")
    board.keypress(SIZE, "home")
    for _ in range(200):
        if board.view.selection() == key:
            return
        board.keypress(SIZE, "down")
    raise AssertionError(f"{key} not found in view 2")


def test_a_weight_change_goes_to_the_shown_node_only_and_the_audit_log_names_it(board, cluster, clock, tmp_path):
    board.keypress(SIZE, "N")  # lvs-2
    key, weight, _ = drifted_dest(board, "lvs-2")
    select_dest(board, key)
    board.keypress(SIZE, "+")
    board.cluster.worker.join(10)
    assert cluster.sent == [("lvs-2", "set-weight", {"service": str(key.service), "address": key.address,
                                                    "port": key.port, "weight": weight + 1})]  # fmt: skip
    snapshot = step(board, cluster, clock)
    assert snapshot.node("lvs-2").snapshot.find_dest(key).weight == weight + 1
    assert snapshot.node("lvs-1").snapshot.find_dest(key).weight != weight + 1
    lines = [line for line in (tmp_path / "audit.log").read_text().splitlines() if " old=" in line]
    assert len(lines) == 2 and all("node=lvs-2" in line for line in lines), lines


def test_all_nodes_mode_asks_first_listing_the_nodes_then_changes_every_node(board, cluster, clock, tmp_path):
    key, _, reference = drifted_dest(board, "lvs-2")
    board.keypress(SIZE, "A")
    assert "ALL NODES" in text(board)
    select_dest(board, key)
    board.keypress(SIZE, "0")  # drain on every node
    shown = text(board)
    assert f"set weight of {key} to 0 on lvs-[1-3]? y/n" in shown
    assert cluster.sent == []
    board.keypress(SIZE, "y")
    board.cluster.worker.join(10)
    assert [node for node, _, _ in cluster.sent] == ["lvs-1", "lvs-2", "lvs-3"]
    snapshot = step(board, cluster, clock)
    assert all(node.snapshot.find_dest(key).weight == 0 for node in snapshot.nodes)
    lines = [line for line in (tmp_path / "audit.log").read_text().splitlines() if " old=" in line]
    assert len(lines) == 2 and all("node=lvs-[1-3]" in line for line in lines), lines


def test_no_to_the_every_node_question_sends_nothing_and_settles_the_change(board, cluster, tmp_path):
    key, _, _ = drifted_dest(board, "lvs-3")
    board.keypress(SIZE, "A")
    select_dest(board, key)
    board.keypress(SIZE, "+")
    board.keypress(SIZE, "n")
    assert cluster.sent == []
    assert key not in board.pending
    last = (tmp_path / "audit.log").read_text().splitlines()[-1]
    assert "answered no" in last and "node=lvs-[1-3]" in last


def test_r_and_t_run_on_the_node_holding_the_vip(board, cluster):
    board.keypress(SIZE, "N")  # even with lvs-2 shown, the master holds the VIPs
    board.keypress(SIZE, "T")
    board.keypress(SIZE, "R")
    assert [(node, kind) for node, kind, _ in cluster.sent] == [("lvs-1", "sync-test"), ("lvs-1", "resync")]
    shown = text(board)
    assert "lvs-2: Success" in shown or "missing entries filled" in shown


def test_an_unreachable_node_is_shown_as_such_and_the_others_go_on(board, cluster, clock):
    snapshot = step(board, cluster, clock)
    down = replace(snapshot.node("lvs-3"), reachable=False, since=clock.now - 30, error="ssh: connection refused")
    broken = ClusterSnapshot((snapshot.nodes[0], snapshot.nodes[1], down), snapshot.taken_at)
    board.cluster.apply(broken, compare_cluster(broken))
    board.keypress(SIZE, "6")
    shown = text(board)
    assert "DOWN lvs-3" in shown
    row = next(line for line in shown.splitlines() if "lvs-3" in line and "DOWN" not in line)
    assert "unreachable for 30s: ssh: connection refused" in row
    assert "lvs-2  backup" in shown


def test_without_a_cluster_6_and_n_say_so_in_one_line(dashboard):
    dashboard.keypress(SIZE, "6")
    assert dashboard.view.name != "cluster"
    assert NOT_A_CLUSTER in text(dashboard)
    tabs = next(line for line in screen(dashboard, SIZE) if "1 Virtual" in line)
    assert "5 Sync" in tabs and "Cluster" not in tabs  # no tab for it


def test_updates_are_compared_off_the_loop_and_held_while_paused(board, cluster, clock):
    control = board.cluster
    clock.now += 1.0
    fresh = cluster.poll_all()
    control.on_update(fresh)  # no loop here: kept for apply_latest, as call_from_thread would run it
    control.apply_latest()
    assert control.cluster is fresh and control.report.taken_at == fresh.taken_at
    board.keypress(SIZE, "p")
    assert "PAUSED" in text(board)
    clock.now += 1.0
    control.on_update(cluster.poll_all())
    control.apply_latest()
    assert control.cluster is fresh  # nothing taken while paused
    board.keypress(SIZE, "p")
    assert "PAUSED" not in text(board)


def test_removing_a_real_server_goes_to_the_shown_node_and_the_audit_log_names_it(board, cluster, clock, tmp_path):
    board.keypress(SIZE, "N")  # lvs-2
    key, _, _ = drifted_dest(board, "lvs-2")
    select_dest(board, key)
    board.keypress(SIZE, "x")
    board.keypress(SIZE, "y")
    board.cluster.worker.join(10)
    assert [(node, kind) for node, kind, _ in cluster.sent] == [("lvs-2", "remove-dest")]
    snapshot = step(board, cluster, clock)
    assert snapshot.node("lvs-2").snapshot.find_dest(key) is None and snapshot.node("lvs-1").snapshot.find_dest(key)
    lines = [line for line in (tmp_path / "audit.log").read_text().splitlines() if "action=remove" in line]
    assert len(lines) == 2 and all("node=lvs-2" in line for line in lines), lines
    assert lines[0].endswith('result="attempt"') and lines[1].endswith('result="ok"')


def test_removing_on_every_node_asks_once_and_the_audit_log_names_them_all(board, cluster, clock, tmp_path):
    key, _, _ = drifted_dest(board, "lvs-2")
    board.keypress(SIZE, "A")
    select_dest(board, key)
    board.keypress(SIZE, "x")
    board.keypress(SIZE, "y")  # the remove question
    assert f"remove {key} on lvs-[1-3]? y/n" in text(board)
    board.keypress(SIZE, "y")  # the every-node question
    board.cluster.worker.join(10)
    assert [(node, kind) for node, kind, _ in cluster.sent] == [(n, "remove-dest") for n in ("lvs-1", "lvs-2", "lvs-3")]
    lines = [line for line in (tmp_path / "audit.log").read_text().splitlines() if "action=remove" in line]
    assert len(lines) == 2 and all("node=lvs-[1-3]" in line for line in lines), lines


# -- the sync probe -------------------------------------------------------------------------------------


class StoppedBackup(SteppedCluster):
    """lvs-3's backup daemon stopped: it never has a probe in its table."""

    def command(self, node, command: Command, on_reply) -> None:
        if node == "lvs-3" and command.kind == "probe-watch":
            on_reply(CommandReply(node, command, True, "not in the table after 3 s", {"found": False}))
            return
        super().command(node, command, on_reply)


def probing_board(cluster, clock, tmp_path) -> Dashboard:
    control = ClusterControl(cluster, cluster.names, probe_period=2.0, clock=clock)
    dashboard = Dashboard(make_options(audit_log=str(tmp_path / "audit.log")), poller=control, backend=cluster,
                          hostname="here", clock=clock, names=fixed_names(show=False), cluster=control)  # fmt: skip
    step(dashboard, cluster, clock)
    return dashboard


def probe_rounds(board: Dashboard, rounds: int) -> None:
    for _ in range(rounds):
        board.clock.now += 2.0
        board.cluster.probe.round()
    board.refresh()


def test_view_6_shows_each_backups_probe_delay_and_loss_over_the_last_minute(cluster, clock, tmp_path):
    board = probing_board(cluster, clock, tmp_path)
    board.keypress(SIZE, "6")
    assert "the first probe goes out once the nodes have answered" in text(board)
    probe_rounds(board, 40)  # 80 s: the first 10 probes are out of the window
    shown = text(board)
    assert "Sync probe: one every 2 s from lvs-1, the last 60 s: delay and loss per backup" in shown
    summary = board.cluster.probe_summary()
    assert summary.sent == 30
    for figures in summary.backups:
        row = next(line for line in shown.splitlines() if line.strip().startswith(figures.node + " ")
                   and "median" in line)  # fmt: skip
        assert f"median {format_delay(figures.median)}  worst {format_delay(figures.worst)}" in row
        assert f"lost {figures.lost} of {figures.checked} (" in row and figures.checked == 30
    assert [sent[:2] for sent in cluster.sent[:3]] == [("lvs-2", "probe-watch"), ("lvs-3", "probe-watch"),
                                                       ("lvs-1", "sync-probe")]  # fmt: skip
    assert "SYNC STOPPED" not in shown


def test_a_backup_that_stops_receiving_turns_the_header_red(clock, tmp_path):
    cluster = StoppedBackup(["lvs-1", "lvs-2", "lvs-3"], clock)
    board = probing_board(cluster, clock, tmp_path)
    probe_rounds(board, 2)
    assert "SYNC STOPPED" not in text(board)
    probe_rounds(board, 1)
    assert ("header.error", "SYNC STOPPED lvs-3") in board.cluster.mode_words()
    assert "SYNC STOPPED lvs-3" in text(board)  # on every view
    board.keypress(SIZE, "6")
    row = next(line for line in text(board).splitlines() if "STOPPED RECEIVING" in line)
    assert row.split()[0] == "lvs-3" and "none arrived" in row and "lost 3 of 3 (100%)" in row


def test_without_a_single_sync_master_view_6_says_why_no_probe_went_out(cluster, clock, tmp_path):
    board = probing_board(cluster, clock, tmp_path)
    snapshot = step(board, cluster, clock)
    master_down = replace(snapshot.node("lvs-1"), reachable=False, error="ssh: connection refused")
    cut = ClusterSnapshot((master_down, *snapshot.nodes[1:]), snapshot.taken_at)
    board.cluster.apply(cut, compare_cluster(cut))
    probe_rounds(board, 1)
    board.keypress(SIZE, "6")
    assert "! no probe sent: no reachable node runs a master sync daemon" in text(board)
    assert not any(kind in ("sync-probe", "probe-watch") for _, kind, _ in cluster.sent)
