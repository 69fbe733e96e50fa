"""The benchmark code paths at tiny sizes: well-formed reports, tables and JSON (nothing is timed here)."""

from __future__ import annotations

import gc
import json
import re
import time
import sys

import pytest

from ipvsman import model
from ipvsman.bench import Figure, Growth, Report, render
from ipvsman.bench import __main__ as bench_main
from ipvsman.bench import conns, director, poll, screen, watch
from ipvsman.sync import protocol


def sample_report() -> Report:
    report = Report(environment={"kernel": "6.1"})
    report.figures.append(Figure("poll", "full poll", 3.0, "s", 2.0, "ipvsadm -Ln", "<= 2x ipvsadm", True))
    report.figures.append(Figure("conns", "peak RSS", 120.0, "MB", target="< 150 MB", met=True))
    growth = Growth("poll", "poll by services", "services", "s", ["ipvsman", "ipvsadm"])
    growth.add(10, ipvsman=0.01, ipvsadm=0.02)
    growth.add(1000, ipvsman=1.0, ipvsadm=None)
    report.growth.append(growth)
    report.notes.append("a note")
    return report


def test_a_report_renders_as_a_table_with_ratios_and_growth():
    text = render(sample_report())
    lines = text.splitlines()
    assert "kernel: 6.1" in lines
    poll_row = next(line for line in lines if line.startswith("poll "))
    assert "3.000 s" in poll_row and "2.000 s" in poll_row and "1.50x" in poll_row and poll_row.endswith("yes")
    assert re.search(r"conns\s+peak RSS\s+120\.0 MB\s+-\s+-\s+< 150 MB\s+yes", text)
    growth_at = lines.index("Growth: poll by services")
    assert lines[growth_at + 1].split() == ["services", "ipvsman", "s", "per", "item", "us", "ipvsadm", "s", "per",
                                            "item", "us"]  # fmt: skip
    assert lines[growth_at + 3].split() == ["10", "0.010", "1,000", "0.020", "2,000"]
    assert lines[growth_at + 4].split() == ["1,000", "1.000", "1,000", "-", "-"]
    assert "ipvsman: per-item cost x1.00 over the last step" in text
    assert lines[-1] == "- a note"


def test_a_report_survives_json():
    report = sample_report()
    data = json.loads(report.dumps())
    assert data["figures"][0]["ratio"] == 1.5
    assert data["growth"][0]["rows"][1] == {"size": 1000, "ipvsman": 1.0, "ipvsadm": None}
    again = Report.from_json(data)
    assert render(again) == render(report)


def test_growth_linearity_compares_the_last_two_per_item_costs():
    growth = Growth("x", "t", "items", "s", ["a"])
    for size, seconds in ((10, 1.0), (100, 2.0), (1000, 40.0)):
        growth.add(size, a=seconds)
    assert growth.per_item("a") == [0.1, 0.02, 0.04]
    assert growth.linearity("a") == pytest.approx(2.0)


def test_the_director_rules_are_ipvsadm_restore_input():
    text = director.rules(0, 3, 2)
    lines = text.splitlines()
    assert lines[0] == "-A -t 10.10.0.1:80 -s wlc"
    assert lines[1] == "-a -t 10.10.0.1:80 -r 172.16.0.1:8080 -m -w 1"
    assert len(lines) == 3 * 3
    assert len({director.vip(index) for index in range(10_000)}) == 10_000
    assert len({director.rip(number) for number in range(100_000)}) == 100_000
    assert director.rules(3, 3, 2) == "\n"


def test_synthetic_connections_survive_the_sync_encoding_and_the_saved_file(tmp_path):
    table = conns.synthetic_connections(300, services=7, dests=3)
    assert len({(c.client, c.client_port) for c in table}) == 300
    assert {c.virtual for c in table} == {director.vip(index) for index in range(7)}
    messages = conns.encode_messages(300, services=7, dests=3)
    path = tmp_path / "messages.bin"
    conns.save_messages(path, messages)
    loaded = conns.load_messages(path)
    assert loaded == messages and sum(m.count for m in loaded) == 300
    decoded = [protocol.to_connection(entry) for m in loaded for entry in protocol.decode_message(m.data).conns]
    assert [(c.client, c.client_port, c.virtual, c.dest, c.state) for c in decoded] == [
        (c.client, c.client_port, c.virtual, c.dest, c.state) for c in table
    ]


def test_a_poll_that_saw_too_little_is_refused():
    key = model.ServiceKey("inet", "tcp", "10.10.0.1", 80)
    snapshot = model.Snapshot(1, 0.0, 0.1, "kernel", True,
                              model.RawState(services=(model.Service(key, "wlc", dests=(model.Dest("1.1.1.1", 80, "masq", 1),)),)))  # fmt: skip
    poll.check_snapshot(snapshot, 1, 1)
    with pytest.raises(RuntimeError, match="saw 1 services and 1 real servers, expected 1 and 2"):
        poll.check_snapshot(snapshot, 1, 2)


def test_watch_cuts_a_long_listing_off_after_a_screenful(tmp_path):
    # Why the watch benchmark also runs ipvsadm with its output thrown away: on a 60-row
    # terminal, watch closes the pipe once the screen is full and the command dies of SIGPIPE.
    progress, finished = tmp_path / "progress", tmp_path / "finished"
    listing = (f"i=0; while [ $i -lt 5000 ]; do echo line $i; echo $i > {progress}; i=$((i+1)); done; "
               f"echo done >> {finished}")  # fmt: skip
    process = watch.PtyProcess(["watch", "-n1", listing], watch.terminal_env())
    try:
        deadline = time.monotonic() + 20
        while not progress.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.5)  # two or three refreshes
    finally:
        process.close()
    assert not finished.exists()  # no run got to the end of its listing
    # Cut off soon after a screenful: on a loaded machine the shell may run ahead of watch's
    # reads by a hundred lines or so before the closed pipe stops it, never by thousands.
    assert 0 < int(progress.read_text()) < 1000


def test_a_command_on_a_pseudo_terminal_is_watched_and_stopped():
    script = "printf 'poll #1 '; sleep 0.3; printf 'poll #2 '; sleep 30"
    process = watch.PtyProcess(["sh", "-c", script], watch.terminal_env())
    process.watch_for(watch.POLL_NUMBER)
    try:
        assert process.wait_for(watch.POLL_NUMBER, 10) is not None
        process.wait_for(re.compile(rb"poll #2"), 10)
        assert watch._last_poll_number(process) == 2
        assert min(process.cpu_split()) >= 0
        assert "poll #2" in process.screen_text()
    finally:
        process.close()
    assert process.proc.poll() is not None


def test_watch_figures_keep_user_and_system_time_apart():
    figures = watch._cpu_figures((1.0, 0.5), (4.0, 2.5))
    assert figures == {"cpu": 5.0, "user": 3.0, "system": 2.0}
    text = watch._split_text({**figures, "refreshes": 4})
    assert text == "user 3.0 s, system 2.0 s (0.750 + 0.500 s a refresh)"
    assert watch._split_text({**figures, "refreshes": 0}) == "user 3.0 s, system 2.0 s (no refresh)"
    # A process that spends its time in the kernel shows it as system time.
    script = "printf 'poll #1 '; dd if=/dev/zero of=/dev/null bs=64 count=2000000 2>/dev/null; printf 'poll #2 '; sleep 30"
    process = watch.PtyProcess(["sh", "-c", script], watch.terminal_env())
    process.watch_for(watch.POLL_NUMBER)
    try:
        assert process.wait_for(re.compile(rb"poll #2"), 60) is not None
        user, system = process.cpu_split()
    finally:
        process.close()
    assert system > 0.05 and user >= 0


def test_the_screen_benchmark_at_a_tiny_size():
    report = screen.run((12, 2, 60), [4, 8], [30, 60], busy=0.05, presses=4, log=lambda message: None)
    views = ("virtual", "bindings", "realservers", "connections", "sync")
    labels = [figure.label for figure in report.figures]
    for view in views:
        assert sum(label.startswith(f"{view} view:") for label in labels) == 3
    assert all(figure.value is not None and figure.value > 0 for figure in report.figures if figure.label[0] != "k")
    in_flight, collection = report.figures[-2:]
    assert in_flight.label.startswith("key to frame while a poll is in flight")
    assert collection.label.startswith("a scheduled full garbage collection") and collection.value >= 0
    assert [growth.size_label for growth in report.growth] == ["services", "connections"]
    assert all(len(growth.rows) == 2 for growth in report.growth)
    assert "Growth: frame after a new snapshot, by services" in render(report)


def test_minutes_of_use_report_the_longest_key_wait_with_garbage_collection_included():
    scene = screen.Scene(12, 2, 60)
    try:
        figures = screen.keys_in_use(scene, 3.0, log=lambda message: None)
        assert gc.get_freeze_count() > 0  # the schedule still runs, its objects frozen again
    finally:
        scene.close()
    wait, in_collection, collections, cpu, memory = figures
    assert in_collection.label.startswith("keys: the longest part of a key's wait spent in garbage collection")
    assert 0 <= in_collection.value <= wait.value
    assert wait.label.startswith("key to frame over 3 s of use, garbage collection included")
    assert wait.value is not None and wait.value > 0 and wait.target == "< 50 ms"
    assert wait.met == (wait.value < 50) and "p99" in wait.note and "median" in wait.note
    assert collections.value > 0  # the polls' young collections, seen by gc.callbacks
    assert cpu.unit == "%" and cpu.value > 0
    assert memory.label.startswith("keys: memory (RSS) growth")
    assert gc.get_freeze_count() == 0  # the scene's schedule stopped and thawed


def test_the_command_line_runs_the_screen_benchmark_and_prints_json(monkeypatch, capsys):
    tiny = bench_main.Plan(screen_headline=(6, 2, 40), screen_services=[3], screen_connections=[20], busy_seconds=0.02,
                           presses=2, keys_seconds=0.0)  # fmt: skip
    monkeypatch.setattr(bench_main, "quick_plan", lambda: tiny)
    assert bench_main.main(["--quick", "--json", "screen"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["environment"]["command"] == "python -m ipvsman.bench --quick --json screen"
    assert {figure["benchmark"] for figure in data["figures"]} == {"screen"}


def test_an_unknown_benchmark_is_one_clear_line(capsys):
    with pytest.raises(SystemExit):
        bench_main.main(["pol"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("unknown benchmark 'pol': choose from poll, oneshot, conns, watch, screen, checks")


def test_the_guest_gets_the_kernel_part_and_its_results_come_back(monkeypatch, tmp_path):
    """Without IPVS here, the kernel part is one guest command whose JSON is read back."""
    seen = {}

    def fake_run_in_guest(command, rwdir, **kwargs):
        seen["command"] = command
        results = re.search(r"--kernel-part (\S+)", command).group(1)
        report = Report(environment={"kernel": "guest"})
        report.figures.append(Figure("poll", "full poll", 1.0, "s", 1.0))
        with open(results, "w") as out:
            out.write(report.dumps())
        return bench_main.guest.GuestRun(0, "")

    monkeypatch.setattr(bench_main.guest, "in_guest", lambda: False)
    monkeypatch.setattr(bench_main.guest, "host_has_ipvs", lambda: False)
    monkeypatch.setattr(bench_main.guest, "check_guest_tools", lambda: None)
    monkeypatch.setattr(bench_main.guest, "run_in_guest", fake_run_in_guest)
    report = bench_main.run_kernel(["poll"], bench_main.quick_plan(), quick=True)
    assert seen["command"].startswith(f"{sys.executable} -m ipvsman.bench --kernel-part ")
    assert seen["command"].endswith(" --quick poll")
    assert report.environment == {"kernel": "guest"} and report.figures[0].label == "full poll"


def test_a_process_started_by_a_big_one_reports_its_own_peak_memory():
    import subprocess

    from ipvsman.bench import current_rss_mb, peak_rss_mb

    ballast = bytearray(80 * 2**20)  # zeroed, so resident: this process is now 80 MB bigger
    assert current_rss_mb() > 80
    child = subprocess.run([sys.executable, "-c", "from ipvsman.bench import peak_rss_mb; print(peak_rss_mb())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    del ballast
    assert float(child.stdout) < 60 < peak_rss_mb()


def test_the_sync_messages_cover_the_largest_table_any_selected_benchmark_fills():
    plan = bench_main.Plan(conn_sizes=[1000, 200_000], watch_table_entries=500_000)
    assert bench_main.message_entries(["conns"], plan) == 200_000
    assert bench_main.message_entries(["conns", "watch"], plan) == 500_000
    assert bench_main.message_entries(["watch"], bench_main.Plan(watch_table_entries=50_000)) == 50_000


def test_the_table_stage_of_watch_can_be_left_out(monkeypatch, tmp_path):
    """--no-table-stage: the guest is told so, and no sync messages are encoded for it."""
    seen, run_kernel = {}, bench_main.run_kernel

    def fake_run_kernel(kernel, plan, quick, no_table_stage=False):
        seen.update(kernel=kernel, entries=plan.watch_table_entries, no_table_stage=no_table_stage)
        return Report()

    monkeypatch.setattr(bench_main, "run_kernel", fake_run_kernel)
    assert bench_main.main(["--no-table-stage", "watch"]) == 0
    assert seen == {"kernel": ["watch"], "entries": 0, "no_table_stage": True}

    def fake_run_in_guest(command, rwdir, **kwargs):
        seen["command"] = command
        return bench_main.guest.GuestRun(1, "")

    monkeypatch.setattr(bench_main.guest, "in_guest", lambda: False)
    monkeypatch.setattr(bench_main.guest, "host_has_ipvs", lambda: False)
    monkeypatch.setattr(bench_main.guest, "check_guest_tools", lambda: None)
    monkeypatch.setattr(bench_main.guest, "run_in_guest", fake_run_in_guest)
    monkeypatch.setattr(bench_main.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    plan = bench_main.Plan(watch_table_entries=0)
    with pytest.raises(RuntimeError, match="gave no results"):
        run_kernel(["watch"], plan, quick=False, no_table_stage=True)
    assert seen["command"].endswith(" --no-table-stage watch") and "--messages" not in seen["command"]
    assert not (tmp_path / "sync-messages.bin").exists()


def test_the_longest_key_waits_are_taken_apart():
    from ipvsman.bench import keys

    scene = screen.Scene(12, 2, 60)
    try:
        figures = keys.run(scene, 3.0, log=lambda message: None)
    finally:
        scene.close()
    waits = figures["longest_waits"]
    assert 1 <= len(waits) <= keys.SLOW_KEPT
    # The longest first, in whole milliseconds, with where its time went.
    assert waits[0].startswith(f"{figures['max']:.0f} ms for ")
    assert all("read by a turn that began" in wait and "loop CPU" in wait for wait in waits)


def test_oneshot_measures_past_the_imports_and_less_the_start_up_with_ipvsadm_in_every_round(monkeypatch):
    from types import SimpleNamespace

    from ipvsman.bench import oneshot

    class FakeNetns:
        def __init__(self, role):
            self.name = role

        def exec_argv(self, argv):
            return ["ip", "netns", "exec", self.name, *argv]

        def close(self):
            self.closed = True

    # A start-up that drifts from round to round, and the rest on top of it: past the imports the
    # director's run takes 1.3 s (1.1 CPU s) more than the empty one's, whatever the start-ups took.
    startups = iter([10.0, 14.0, 12.0])
    timings = {"empty": [], "director": []}
    order = []

    def timed(argv):
        if argv[0] == "ip":
            order.append("ipvsadm")
            return oneshot.Run(1.0, 0.9, system=0.3)
        where = argv[argv.index("--netns") + 1]
        order.append(where)
        assert argv[1] == "-c" and oneshot.MARK in argv[2]
        if where == "empty":
            timings["empty"].append(next(startups))
            return oneshot.Run(timings["empty"][-1], 8.0, 0.5, 0.4, system=0.5)
        return oneshot.Run(timings["empty"][-1] + 1.4, 9.2, 1.8, 1.5, system=0.9)

    monkeypatch.setattr(oneshot, "_timed", timed)
    monkeypatch.setattr(oneshot, "Netns", FakeNetns)
    fake = SimpleNamespace(netns=FakeNetns("director"), services=1000, dests=10)
    report = oneshot.run(fake, runs=3, log=lambda *args: None)
    assert order == ["empty", "director", "ipvsadm"] * 3
    past, past_cpu, fixed, rest, cpu, whole = report.figures
    assert past.value == pytest.approx(1.3) and past.reference == 1.0 and past.met and past.ratio == pytest.approx(1.3)
    assert past_cpu.value == pytest.approx(1.1) and past_cpu.reference == pytest.approx(0.9)
    assert fixed.value == pytest.approx(0.5) and fixed.reference is None
    assert rest.value == pytest.approx(1.4) and rest.reference == 1.0 and rest.ratio == pytest.approx(1.4)
    assert "1.40, 1.40, 1.40 s" in rest.note and "1.40x" in rest.note
    assert cpu.value == pytest.approx(1.2) and cpu.reference == pytest.approx(0.9) and cpu.unit == "CPU s"
    assert "1.20, 1.20, 1.20 CPU s" in cpu.note
    assert whole.value == pytest.approx(13.4) and "12.00 s of it" in whole.label
    # The kernel's part apart: 0.4 CPU s of system time for the director's size against ipvsadm's 0.3.
    (split,) = [note for note in report.notes if "system CPU" in note]
    assert "empty director's 0.40 s, ipvsadm 0.30 s" in split and "user CPU: ipvsman 0.70 s" in split
    assert "ipvsadm 0.60 s" in split


def test_the_mark_of_the_imports_is_read_from_a_real_process():
    from ipvsman.bench import oneshot

    run = oneshot._timed([sys.executable, "-c", oneshot.MARK_IMPORTS, "--demo", "--once", "--json"])
    assert 0 < run.rest_wall < run.wall and 0 <= run.rest_cpu < run.cpu and 0 <= run.system < run.cpu
    plain = oneshot._timed([sys.executable, "-c", "pass"])
    assert plain.rest_wall is None and plain.rest_cpu is None