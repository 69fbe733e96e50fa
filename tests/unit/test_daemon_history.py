"""The chronology of applied topologies: versions, diffs, bounds, permissions, and `ipvsman history`."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from ipvsman import cli
from ipvsman.daemon.history import History, HistoryError

V1 = 'Web:t:10.0.0.1:80 ["web1-2:10.0.1.1+:8080"]\n'
V2 = 'Web:t:10.0.0.1:80 ["web1-3:10.0.1.1+:8080"] (-s wrr)\n'


def test_versions_are_kept_with_diff_and_actions_and_an_unchanged_text_is_not_kept_twice(tmp_path):
    history = History(str(tmp_path / "h"))
    first = history.record("/etc/topo", V1, ["create tcp 10.0.0.1:80 scheduler wlc"], now=100.0)
    assert first.number == 1 and first.diff == "" and first.actions == ("create tcp 10.0.0.1:80 scheduler wlc",)
    assert history.record("/etc/topo", V1, [], now=101.0) is None
    second = history.record("/etc/topo", V2, ["add ..."], now=102.0)
    assert second.number == 2
    assert "-Web:t:10.0.0.1:80 [\"web1-2" in second.diff and "+Web:t:10.0.0.1:80 [\"web1-3" in second.diff
    assert history.get(2) == second and [v.number for v in history.versions()] == [1, 2]
    assert stat.S_IMODE(os.stat(tmp_path / "h").st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(tmp_path / "h" / name).st_mode) == 0o600 for name in os.listdir(tmp_path / "h"))
    diff = history.diff(2, 1)
    assert diff.startswith("--- version 2") and "+Web:t:10.0.0.1:80 [\"web1-2" in diff


def test_bounded_by_count_and_bytes_keeping_the_newest(tmp_path):
    history = History(str(tmp_path), max_count=3)
    for number in range(6):
        history.record("/t", f"# {number}\n", [])
    assert history.numbers() == [4, 5, 6]
    sized = History(str(tmp_path / "s"), max_bytes=4000)
    for number in range(10):
        sized.record("/t", f"# {number}\n" + "x" * 1500, [])
    total = sum(os.path.getsize(tmp_path / "s" / name) for name in os.listdir(tmp_path / "s"))
    assert total <= 4000 and sized.numbers()[-1] == 10 and len(sized.numbers()) < 10
    huge = History(str(tmp_path / "huge"), max_bytes=10)
    huge.record("/t", "y" * 100, [])
    assert huge.numbers() == [1]  # the newest stays even past the bound


def test_missing_and_corrupt_versions_are_one_line(tmp_path):
    history = History(str(tmp_path))
    history.record("/t", V1, [])
    with pytest.raises(HistoryError, match="no version 7 in"):
        history.get(7)
    (tmp_path / "000002.json").write_text("{not json")
    with pytest.raises(HistoryError, match=r"000002.json: not a history version \(JSONDecodeError\)"):
        history.get(2)


def test_cli_list_diff_and_restore_with_sighup(tmp_path, capsys):
    topology = tmp_path / "topology"
    topology.write_text(V2)
    history = History(str(tmp_path / "h"))
    history.record(str(topology), V1, ["create tcp 10.0.0.1:80 scheduler wlc"])
    history.record(str(topology), V2, [])
    assert cli.main(["history", "--dir", str(tmp_path / "h")]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and "first version, 1 actions" in listed[0] and "+1 -1 lines, 0 actions" in listed[1]
    assert cli.main(["history", "--dir", str(tmp_path / "h"), "diff", "1", "2"]) == 0
    assert "+Web:t:10.0.0.1:80 [\"web1-3" in capsys.readouterr().out

    # A stand-in ipvsmand: a process named so, that records the SIGHUP it gets.
    got = tmp_path / "got-hup"
    fake = tmp_path / "ipvsmand"
    fake.write_text(
        f"import signal, sys, time\nsignal.signal(signal.SIGHUP, lambda *a: open({str(got)!r}, 'w').close())\n"
        "print('ready', flush=True)\ntime.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, str(fake)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        state = tmp_path / "state.json"
        state.write_text(
            '{"ipvsmand": 1, "version": "0", "pid": %d, "topology": "%s", "applied_at": 1, "written_at": 1,'
            ' "heartbeat": 5, "errors": [], "real_servers": []}' % (proc.pid, topology)
        )
        assert cli.main(["history", "--dir", str(tmp_path / "h"), "restore", "1", "--state-file", str(state)]) == 0
        assert topology.read_text() == V1
        out = capsys.readouterr().out
        assert f"ipvsmand (pid {proc.pid}) told to reload (SIGHUP)" in out
        deadline = time.monotonic() + 10
        while not got.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got.exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_restore_without_a_running_daemon_writes_the_file_only(tmp_path, capsys):
    topology = tmp_path / "topology"
    history = History(str(tmp_path / "h"))
    history.record(str(topology), V1, [])
    topology.write_text(V2)
    # The state file names a live process that is not ipvsmand (this test): it must not be signalled.
    state = tmp_path / "state.json"
    state.write_text(
        '{"ipvsmand": 1, "version": "0", "pid": %d, "topology": "%s", "applied_at": 1, "written_at": 1,'
        ' "heartbeat": 5, "errors": [], "real_servers": []}' % (os.getpid(), topology)
    )
    assert cli.main(["history", "--dir", str(tmp_path / "h"), "restore", "1", "--state-file", str(state)]) == 0
    assert topology.read_text() == V1
    assert "no running ipvsmand reads" in capsys.readouterr().out
    assert cli.main(["history", "--dir", str(tmp_path / "h"), "restore", "9"]) == 1
    assert capsys.readouterr().err == f"ipvsman history: no version 9 in {tmp_path / 'h'}\n"
