"""The sync probe: its bookkeeping (delay, loss, the last minute, a stop), its probe connections and look-ups, its rounds."""

from __future__ import annotations

import io
import threading

import pytest

from ipvsman import cli
from ipvsman.cluster import syncprobe
from ipvsman.cluster.agent import ProbeWatcher, _Watch, scan_probe_entries
from ipvsman.cluster.demo import DemoCluster
from ipvsman.cluster.state import Command, CommandReply
from ipvsman.cluster.synctest import SyncProbe
from ipvsman.cluster.syncprobe import ProbeTracker, format_delay, probe_client, probe_connection, probe_port, proc_prefix

T0 = 10_000.0


def figures(tracker: ProbeTracker, node: str, now: float):
    return next(backup for backup in tracker.summary(now).backups if backup.node == node)


# -- the bookkeeping ------------------------------------------------------------------------------------


def test_delays_are_from_the_send_to_the_find_whatever_order_the_answers_come_in():
    tracker = ProbeTracker(period=1.0)
    for number, delay in enumerate((0.002, 0.004, 0.050), start=0):
        seq = tracker.start_round(T0 + number, "lvs-1", ["lvs-2"])
        if number == 1:
            tracker.arrived(seq, "lvs-2", T0 + number + 0.1 + delay)  # the find is told before the send
            tracker.sent(seq, T0 + number + 0.1)
        else:
            tracker.sent(seq, T0 + number + 0.1)
            tracker.arrived(seq, "lvs-2", T0 + number + 0.1 + delay)
    got = figures(tracker, "lvs-2", T0 + 3)
    assert (got.arrived, got.lost, got.pending) == (3, 0, 0)
    assert got.median == pytest.approx(0.004) and got.worst == pytest.approx(0.050)
    assert got.loss == 0.0 and not got.stopped


def test_loss_counts_probes_looked_for_and_lacked_not_those_a_backup_could_not_be_asked_about():
    tracker = ProbeTracker(period=1.0)
    outcomes = ["arrived", "lost", "unknown", "arrived", "lost"]
    for number, outcome in enumerate(outcomes):
        seq = tracker.start_round(T0 + number, "lvs-1", ["lvs-2"])
        tracker.sent(seq, T0 + number)
        if outcome == "arrived":
            tracker.arrived(seq, "lvs-2", T0 + number + 0.01)
        elif outcome == "lost":
            tracker.lost(seq, "lvs-2")
        else:
            tracker.unknown(seq, "lvs-2", "probe-watch: lvs-2 is unreachable: ssh failed")
    got = figures(tracker, "lvs-2", T0 + 5)
    assert (got.arrived, got.lost, got.checked) == (2, 2, 4) and got.loss == 0.5
    assert got.note is None  # the reason was not the newest word from lvs-2
    seq = tracker.start_round(T0 + 5, "lvs-1", ["lvs-2"])
    tracker.unknown(seq, "lvs-2", "probe-watch: lvs-2 is unreachable: ssh failed")
    assert figures(tracker, "lvs-2", T0 + 6).note == "probe-watch: lvs-2 is unreachable: ssh failed"


def test_only_the_last_minute_counts():
    tracker = ProbeTracker(period=10.0)
    first = tracker.start_round(T0, "lvs-1", ["lvs-2"])
    tracker.sent(first, T0)
    tracker.arrived(first, "lvs-2", T0 + 2.0)  # a slow one, 61 s before the next
    second = tracker.start_round(T0 + 61, "lvs-1", ["lvs-2"])
    tracker.sent(second, T0 + 61)
    tracker.arrived(second, "lvs-2", T0 + 61.001)
    assert figures(tracker, "lvs-2", T0 + 59).worst == pytest.approx(2.0)
    got = figures(tracker, "lvs-2", T0 + 62)
    assert got.arrived == 1 and got.worst == pytest.approx(0.001)
    assert tracker.summary(T0 + 62).sent == 1


def test_a_backup_that_lacks_its_newest_three_probes_has_stopped_receiving_until_one_arrives():
    tracker = ProbeTracker(period=1.0)
    now = T0

    def probe(outcome: str) -> None:
        nonlocal now
        now += 1
        seq = tracker.start_round(now, "lvs-1", ["lvs-2", "lvs-3"])
        tracker.sent(seq, now)
        tracker.arrived(seq, "lvs-2", now + 0.001)
        if outcome == "arrived":
            tracker.arrived(seq, "lvs-3", now + 0.001)
        elif outcome == "lost":
            tracker.lost(seq, "lvs-3")

    for outcome in ("arrived", "lost", "lost"):
        probe(outcome)
    assert tracker.summary(now).stopped == ()
    probe("pending")  # not answered yet: neither way
    assert tracker.summary(now).stopped == ()
    probe("lost")
    summary = tracker.summary(now)
    assert summary.stopped == ("lvs-3",) and figures(tracker, "lvs-3", now).pending == 1
    probe("arrived")
    assert tracker.summary(now).stopped == ()


def test_a_miss_is_a_loss_only_when_the_backup_looked_from_the_wait_after_the_send_until_it_expired():
    tracker = ProbeTracker(period=2.0, wait=3.0, timeout=20.0)
    cases = {"lvs-2": (T0, T0 + 3.5), "lvs-3": (T0, T0 + 1.2), "lvs-4": (T0 + 25.0, T0 + 31.0), "lvs-5": None}
    seq = tracker.start_round(T0, "lvs-1", list(cases))
    tracker.sent(seq, T0 + 0.2)  # the look-ups began as the master was asked; the send left a little later
    for node, looked in cases.items():
        tracker.lost(seq, node, looked)
    by_node = {backup.node: backup for backup in tracker.summary(T0 + 40).backups}
    assert by_node["lvs-2"].lost == 1 and by_node["lvs-5"].lost == 1  # no times: the backup's word is taken
    assert by_node["lvs-3"].lost == 0 and by_node["lvs-3"].note == "probe 1: looked for only 1.0 s after its send"
    assert by_node["lvs-4"].lost == 0 and by_node["lvs-4"].note == "probe 1: first looked for after it expired"


def test_a_probe_the_master_could_not_send_is_no_loss_for_the_backups():
    tracker = ProbeTracker(period=1.0)
    for number in range(4):
        seq = tracker.start_round(T0 + number, "lvs-1", ["lvs-2"])
        tracker.lost(seq, "lvs-2")  # it looked, and there was nothing to find
        tracker.send_failed(seq, "sync-probe 1: not sent: interface eth0 is down")
    summary = tracker.summary(T0 + 4)
    assert summary.send_failures == 4 and summary.sent == 0
    assert summary.last_send_error == "sync-probe 1: not sent: interface eth0 is down"
    assert summary.stopped == () and figures(tracker, "lvs-2", T0 + 4).checked == 0


def test_a_backup_clock_behind_the_masters_shows_no_negative_delay():
    tracker = ProbeTracker(period=1.0)
    seq = tracker.start_round(T0, "lvs-1", ["lvs-2"])
    tracker.sent(seq, T0 + 0.5)
    tracker.arrived(seq, "lvs-2", T0 + 0.4)
    assert figures(tracker, "lvs-2", T0 + 1).median == 0.0


def test_no_round_keeps_its_reason_until_a_probe_goes_out():
    tracker = ProbeTracker(period=1.0)
    tracker.no_round("no probe sent: no reachable node runs a master sync daemon")
    assert tracker.summary(T0).note.endswith("master sync daemon")
    tracker.start_round(T0, "lvs-1", ["lvs-2"])
    assert tracker.summary(T0).note is None


def test_delays_are_written_to_their_scale():
    assert [format_delay(s) for s in (None, 0.0012, 0.25, 2.5)] == ["-", "1.2 ms", "250 ms", "2.5 s"]


# -- the probe connections and their look-up ------------------------------------------------------------


def proc_line(conn) -> str:
    """A line of /proc/net/ip_vs_conn as ip_vs_conn_seq_show prints an IPv4 entry."""

    def hexaddress(address: str) -> str:
        return "".join(f"{int(part):02X}" for part in address.split("."))

    return (f"{conn.protocol:<3} {hexaddress(conn.client)} {conn.client_port:04X} {hexaddress(conn.virtual)} "
            f"{conn.virtual_port:04X} {hexaddress(conn.dest)} {conn.dest_port:04X} {conn.state:<11} {conn.expires:7}\n")  # fmt: skip


HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
OTHER = "TCP 0A610032 C350 0A610064 0050 0A620302 1F90 ESTABLISHED    899\n"


def test_every_probe_of_a_series_hashes_alike_and_no_probe_looks_like_a_sync_test_entry():
    first, second = probe_connection(77, 1, 10), probe_connection(77, 2, 10)
    # The kernel hashes by protocol, client and client port: the same for every probe of a series.
    assert first[:3] == second[:3] and first.virtual_port != second.virtual_port
    assert first.client.startswith("198.51.100.") and not first.client.startswith("192.0.2.")
    assert probe_client(77) != probe_client(78)
    assert probe_port(1) == 1 and probe_port(65535) == 65535 and probe_port(65536) == 1
    assert proc_line(first).encode().startswith(proc_prefix(77))
    assert not proc_line(probe_connection(78, 1, 10)).encode().startswith(proc_prefix(77))


def test_probes_outlive_every_look_for_them_and_the_next_ones_but_not_by_much():
    for period in (1.0, 2.0, 30.0, 60.0):
        timeout = syncprobe.probe_timeout(period)
        assert period + 2 * syncprobe.LOOK_FOR < timeout <= period + 2 * syncprobe.LOOK_FOR + 6


class Reads(io.RawIOBase):
    """A /proc file that gives a page at most a read, and counts the reads."""

    def __init__(self, text: str, page: int = 4096):
        self.data, self.page, self.position, self.reads = text.encode(), page, 0, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        chunk = self.data[self.position : self.position + min(size if size > 0 else self.page, self.page)]
        self.position += len(chunk)
        return chunk


def table(before: int, probes: list[int], after: int, series: int = 77) -> str:
    lines = [HEADER] + [OTHER] * before + [proc_line(probe_connection(series, seq, 10)) for seq in probes]
    return "".join(lines + [OTHER] * after)


def test_a_look_up_stops_as_soon_as_the_wanted_probe_is_read():
    stream = Reads(table(300, [9, 8], 20_000))
    found = scan_probe_entries(stream, proc_prefix(77), {probe_port(9)})
    assert probe_port(9) in found
    assert stream.reads < 20 and stream.position < len(stream.data) // 10  # the table's rest never read


def test_a_look_up_for_a_probe_not_there_stops_once_its_series_bucket_is_behind_it():
    stream = Reads(table(300, [8, 7], 20_000))
    found = scan_probe_entries(stream, proc_prefix(77), {probe_port(9)}, slack=100)
    assert found == {probe_port(8), probe_port(7)}
    assert stream.position < len(stream.data) // 10


def test_without_any_entry_of_its_series_a_look_up_reads_to_the_end():
    stream = Reads(table(500, [], 500) + proc_line(probe_connection(78, 9, 10)))  # another dashboard's probe
    assert scan_probe_entries(stream, proc_prefix(77), {probe_port(9)}) == set()
    assert stream.position == len(stream.data)


class FakeTable:
    """scan() for a ProbeWatcher: probe ports show up after a number of look-ups."""

    def __init__(self, shows_after: dict[int, int]):
        self.shows_after, self.looks = shows_after, 0

    def __call__(self, series: int, wanted: set[int]) -> set[int]:
        self.looks += 1
        return {port for port, looks in self.shows_after.items() if self.looks >= looks}


def test_the_watcher_answers_a_find_with_its_time_and_a_miss_after_the_wait():
    now = [T0]
    answers: list[tuple] = []
    watcher = ProbeWatcher(FakeTable({probe_port(1): 2}), lambda *answer: answers.append(answer), 0.05,
                           clock=lambda: now[0])  # fmt: skip
    watcher._watches = [_Watch(10, 77, 1, 3.0, now[0]), _Watch(11, 77, 2, 3.0, now[0])]  # no thread: looked by hand
    now[0] += 0.5
    watcher.look(list(watcher._watches))
    assert answers == []
    now[0] += 0.5
    watcher.look(list(watcher._watches))
    assert answers[0][:2] == (10, True) and answers[0][3]["found"] and answers[0][3]["found_at"] == T0 + 1.0
    assert answers[0][3]["missed_at"] == T0 + 0.5 and answers[0][3]["scans"] == 2
    now[0] += 2.5
    watcher.look(list(watcher._watches))
    assert answers[1][:2] == (11, True) and answers[1][3] == {"found": False, "looked": [T0 + 0.5, T0 + 3.5], "scans": 3}
    assert watcher._watches == []


def test_the_watcher_thread_answers_and_a_table_it_cannot_read_is_said_in_one_line():
    answers: list[tuple] = []
    done = threading.Event()

    def broken(series: int, wanted: set[int]) -> set[int]:
        raise OSError("no /proc/net/ip_vs_conn: is the ip_vs module loaded?")

    watcher = ProbeWatcher(broken, lambda *answer: (answers.append(answer), done.set()), 0.05)
    watcher.watch(5, 77, 1, 3.0)
    assert done.wait(10)
    watcher.stop()
    assert answers == [(5, False, "probe-watch: cannot look: no /proc/net/ip_vs_conn: is the ip_vs module loaded?", {})]


# -- rounds -------------------------------------------------------------------------------------------


class Nodes:
    """A ClusterSource for probes: lvs-2 finds each probe 2 ms after the send, lvs-3 never, lvs-4 is unreachable."""

    def __init__(self):
        self.asked: list[tuple[str, str, dict]] = []
        self.watches: list = []

    def command(self, node, command, on_reply):
        self.asked.append((node, command.kind, dict(command.args)))
        if command.kind == "probe-watch":
            self.watches.append((node, command, on_reply))
            return
        sent_at = 500.0 + command.args["seq"]
        on_reply(CommandReply(node, command, True, "sent", {"sent_at": sent_at}))
        for backup, watch, reply in self.watches:
            if backup == "lvs-2":
                reply(CommandReply(backup, watch, True, "found", {"found": True, "found_at": sent_at + 0.002}))
            elif backup == "lvs-3":
                reply(CommandReply(backup, watch, True, "not found", {"found": False}))
            else:
                reply(CommandReply(backup, watch, False, "probe-watch: lvs-4 is unreachable: ssh failed"))
        self.watches.clear()


def test_each_round_asks_the_backups_to_look_and_the_master_to_send_one_series_apart():
    nodes = Nodes()
    now = [T0]
    probe = SyncProbe(nodes, 2.0, lambda: ("lvs-1", ["lvs-2", "lvs-3", "lvs-4"], None), clock=lambda: now[0], series=77)
    for _ in range(4):
        now[0] += 2.0
        probe.round()
    kinds = [(node, kind) for node, kind, _ in nodes.asked[:4]]
    assert kinds == [("lvs-2", "probe-watch"), ("lvs-3", "probe-watch"), ("lvs-4", "probe-watch"), ("lvs-1", "sync-probe")]
    assert nodes.asked[3][2] == {"series": 77, "seq": 1, "timeout": syncprobe.probe_timeout(2.0)}
    assert nodes.asked[0][2] == {"series": 77, "seq": 1, "wait": syncprobe.LOOK_FOR}
    summary = probe.summary()
    by_node = {backup.node: backup for backup in summary.backups}
    assert summary.master == "lvs-1" and summary.sent == 4
    assert by_node["lvs-2"].median == pytest.approx(0.002) and by_node["lvs-2"].lost == 0
    assert by_node["lvs-3"].lost == 4 and by_node["lvs-3"].stopped
    assert by_node["lvs-4"].checked == 0 and "unreachable" in by_node["lvs-4"].note and not by_node["lvs-4"].stopped
    assert summary.stopped == ("lvs-3",)


def test_without_a_single_sync_master_no_probe_goes_out_and_the_reason_is_kept():
    nodes = Nodes()
    probe = SyncProbe(nodes, 2.0, lambda: (None, [], "no probe sent: lvs-[1-2] all run a master sync daemon"))
    assert probe.round() is None and nodes.asked == []
    assert probe.summary().note == "no probe sent: lvs-[1-2] all run a master sync daemon"


def test_the_demo_cluster_gives_plausible_figures_through_the_same_bookkeeping():
    cluster = DemoCluster(["lvs-1", "lvs-2", "lvs-3"], seed=1, tick=1.0)
    now = [T0]
    probe = SyncProbe(cluster, 1.0, lambda: ("lvs-1", ["lvs-2", "lvs-3"], None), clock=lambda: now[0], series=5)
    for _ in range(60):
        now[0] += 1.0
        probe.round()
    summary = probe.summary()
    assert summary.sent == 60 and summary.send_failures == 0
    for backup in summary.backups:
        assert backup.checked == 60 and backup.lost <= 5, backup
        assert 0.0005 < backup.median < 0.005 and backup.median <= backup.worst < 0.3, backup
    assert len({(backup.median, backup.lost) for backup in summary.backups}) == 2  # each backup its own figures
    replies = []
    cluster.command("lvs-2", Command("sync-probe", {"series": 5, "seq": 99, "timeout": 10}), replies.append)
    assert not replies[0].ok and "runs no master sync daemon" in replies[0].message


# -- the option -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--demo", "--sync-probe", "2"], "--sync-probe goes with --nodes"),
        (["--demo", "--nodes", "lvs-[1-2]", "--sync-probe", "0.2"], "sync probe period must be 1-60, got 0.2"),
        (["--demo", "--nodes", "lvs-[1-2]", "--sync-probe", "2", "--once", "--json"], "not with --once"),
        (["--demo", "--nodes", "lvs-[1-2]", "--sync-probe", "2", "--read-only"], "not with --read-only"),
    ],
)
def test_the_option_is_refused_in_one_line_where_it_cannot_work(argv, said, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("ipvsman: error:") and said in last
