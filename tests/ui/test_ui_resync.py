"""R (resync, after y/n) and T (sync test) in the dashboard, with a fake job: nothing is ever sent."""

from __future__ import annotations

import dataclasses
import re
import threading

import pytest
import urwid.testing
from uihelpers import WEB, WEB1, FakeBackend, make_options, make_snapshot, screen

from ipvsman.model import Daemon
from ipvsman.sync import resync
from ipvsman.sync.resync import JobOutcome
from ipvsman.sync.sender import SendProgress
from ipvsman.ui.app import Dashboard
from ipvsman.ui.dialogs import ConfirmDialog

SIZE = (100, 30)
DAEMON = Daemon("master", "eth0", 10, maxlen=1472, group="239.1.2.3", port=9000)


def press(board, *keys):
    return urwid.testing.press(board.top, SIZE, *keys)


def select(board, view_key, row_key):
    press(board, view_key)
    assert board.view.select(row_key), f"no row {row_key} in view {view_key}"


def press_r(board, *then):
    """R, then the planning thread's answer reaches the loop (the question opens), then `then`."""
    press(board, "R")
    board._planner.join()
    board.loop.run_pending()
    if then:
        press(board, *then)


def dialog_text(board) -> str:
    """The dialog as drawn on the screen, as one line of words (it wraps its text anywhere)."""
    width = 80  # what the dashboard gives it on a 100-column screen
    lines = urwid.testing.render_text(board.dialog, (width, board.dialog.height(width, SIZE[1])), strip=True)
    return re.sub(r"[\s│┌┐└┘─]+", " ", " ".join(lines))


class FakeJob:
    """Stands in for SyncJob: records what it was given; the test plays its thread's callbacks."""

    made: list[FakeJob] = []

    def __init__(self, label, plan=None, settings=None, on_progress=None, on_done=None, kwargs=None):
        self.label, self.plan, self.settings, self.kwargs = label, plan, settings, kwargs
        self.on_progress, self.on_done = on_progress, on_done
        self.started = self.cancelled = self.finished = False
        self.outcome = None
        FakeJob.made.append(self)

    @classmethod
    def resync(cls, plan, on_progress=None, on_done=None):
        return cls("resync", plan=plan, on_progress=on_progress, on_done=on_done)

    @classmethod
    def sync_test(cls, settings, on_done=None, **kwargs):
        return cls("sync-test", settings=settings, on_done=on_done, kwargs=kwargs)

    def start(self):
        self.started = True

    def is_alive(self):
        return self.started and not self.finished

    def cancel(self):
        self.cancelled = True

    def finish(self, outcome):
        self.finished, self.outcome = True, outcome
        self.on_done(outcome)


class FakeLoop:
    """MainLoop.call_from_thread queued, run when the test says; `stopped` refuses like a stopped loop."""

    def __init__(self):
        self.calls = []
        self.stopped = False

    def call_from_thread(self, function, *args):
        if self.stopped:
            raise RuntimeError("the loop is not running")
        self.calls.append((function, args))

    def run_pending(self):
        calls, self.calls = self.calls, []
        for function, args in calls:
            function(*args)


@pytest.fixture
def job_class(monkeypatch):
    FakeJob.made = []
    monkeypatch.setattr(resync, "SyncJob", FakeJob)
    # The daemon's interface need not exist on this machine: the plan is only sent by a FakeJob.
    monkeypatch.setattr(resync, "interface_index", lambda interface, netns=None: 2)
    return FakeJob


@pytest.fixture
def board(poller, clock, job_class):
    board = Dashboard(make_options(), poller=poller, backend=FakeBackend(), clock=clock)
    board.loop = FakeLoop()
    board.apply_snapshot(make_snapshot(daemons=(DAEMON,)))
    return board


def web_connections(board, real_server=None):
    conns = board.snapshot.state.connections
    return [
        c for c in conns
        if (c.virtual, c.virtual_port) == ("192.0.2.10", 80)
        and (real_server is None or (c.dest, c.dest_port) == (real_server.address, real_server.port))
    ]  # fmt: skip


def test_r_asks_first_with_count_group_port_interface_and_syncid(board, job_class):
    press(board, "4")  # no row of views 1-3 selected: the whole table
    press_r(board)
    assert isinstance(board.dialog, ConfirmDialog)
    assert job_class.made == []
    assert any("─ Resync ─" in line for line in screen(board, SIZE))  # drawn over the dashboard
    text = dialog_text(board)
    total = len(board.snapshot.state.connections)
    assert f"send {total} connections (all connections) to the backup directors? y/n" in text
    for words in ("group 239.1.2.3", "port 9000", "interface eth0", "syncid 10", "sync protocol v1"):
        assert words in text, words
    assert "Esc cancels the send" in text


@pytest.mark.parametrize("key", ["n", "esc", "q"])
def test_no_starts_nothing(board, job_class, key):
    press_r(board)
    press(board, key)
    assert board.dialog is None and board.job is None and job_class.made == []
    assert "resync: nothing sent" in board.status.text


def test_yes_starts_a_job_with_only_the_selected_service(board, job_class):
    select(board, "1", WEB)
    press_r(board)
    expected = len(web_connections(board))
    assert 0 < expected < len(board.snapshot.state.connections)
    assert f"send {expected} connections (service {WEB})" in dialog_text(board)
    press(board, "y")
    [job] = job_class.made
    assert job.started and board.job is job and board.dialog is None
    assert job.plan.connections == expected and job.plan.selection == f"service {WEB}"
    assert job.plan.settings.interface == "eth0" and job.plan.settings.syncid == 10
    assert f"resync: sending {expected} connections" in board.status.text


def test_a_selected_real_server_limits_it_to_its_entries(board, job_class):
    select(board, "2", WEB1)
    press_r(board)
    expected = len(web_connections(board, WEB1))
    assert 0 < expected < len(web_connections(board))
    assert "real server 10.1.0.11:80" in dialog_text(board)
    press(board, "y")
    assert job_class.made[0].plan.connections == expected


def test_other_keys_wait_for_the_answer(board, job_class):
    press_r(board)
    press(board, "2")
    assert isinstance(board.dialog, ConfirmDialog) and job_class.made == []
    assert "answer y or n first" in board.status.text


def test_progress_fills_the_status_bar_and_the_outcome_replaces_it(board, job_class):
    press_r(board, "y")
    [job] = job_class.made
    total = job.plan.connections
    for sent in (1, 2, 3):  # three reports before the loop gets round to it: one repaint, the newest
        job.on_progress(SendProgress(sent, total, 1, 1, 0.1 * sent))
    assert len(board.loop.calls) == 1
    board.loop.run_pending()
    assert f"resync: 3/{total} connections" in board.status.text
    assert "Esc cancels" in screen(board, SIZE)[-1]
    job.on_progress(SendProgress(total, total, 1, 1, 0.5))
    board.loop.run_pending()
    assert f"resync: {total}/{total} connections (100%)" in board.status.text
    progress_lines = [m.text for m in board.status.history if m.text.startswith("resync: ") and "/" in m.text]
    assert len(progress_lines) == 1  # each progress line replaced the one before
    job.finish(JobOutcome(True, f"sent {total} connections in 1 messages"))
    board.loop.run_pending()
    assert f"sent {total} connections in 1 messages" in board.status.text
    assert not any("/" in m.text and m.text.startswith("resync: ") for m in board.status.history)
    job.on_progress(SendProgress(total, total, 1, 1, 0.5))  # late: the outcome stays
    board.loop.run_pending()
    assert f"sent {total} connections" in board.status.text


def test_esc_during_a_resync_cancels_it(board, job_class):
    press_r(board, "y")
    [job] = job_class.made
    press(board, "esc")
    assert job.cancelled
    assert "resync: cancelling" in board.status.text
    job.on_progress(SendProgress(1, job.plan.connections, 1, 1, 0.1))
    board.loop.run_pending()
    assert "cancelling" in board.status.text
    job.finish(JobOutcome(False, "sent 1 connections; cancelled, 5 not sent"))
    board.loop.run_pending()
    assert "cancelled, 5 not sent" in board.status.text


def test_a_second_r_while_one_runs_is_refused(board, job_class):
    press_r(board, "y")
    press(board, "R")
    assert board.dialog is None and len(job_class.made) == 1
    assert "resync still running (Esc cancels it)" in board.status.text


def test_callbacks_after_the_loop_stopped_are_dropped(board, job_class):
    press_r(board, "y")
    [job] = job_class.made
    board.loop.stopped = True
    job.on_progress(SendProgress(1, 2, 1, 1, 0.1))  # no exception escapes into the job's thread
    job.finish(JobOutcome(True, "sent"))
    board.loop.stopped = False
    job.on_progress(SendProgress(2, 2, 1, 1, 0.1))  # the refused repaint did not block the next one
    assert len(board.loop.calls) == 1


def test_the_table_is_planned_outside_the_loop_and_esc_drops_the_plan(board, job_class, monkeypatch):
    planned_in = []
    plan_resync = resync.plan_resync

    def recording_plan_resync(*args, **kwargs):
        planned_in.append(threading.current_thread())
        return plan_resync(*args, **kwargs)

    monkeypatch.setattr(resync, "plan_resync", recording_plan_resync)
    press(board, "R")
    assert f"resync: reading {len(board.snapshot.state.connections)} connections" in board.status.text
    press(board, "R")  # while it is planned
    assert "resync: still reading the connection table" in board.status.text
    press(board, "esc")
    assert "resync: cancelled, nothing sent" in board.status.text
    board._planner.join()
    board.loop.run_pending()
    assert planned_in and threading.main_thread() not in planned_in
    assert board.dialog is None and job_class.made == []  # the late plan asked nothing
    press_r(board)  # and R works again
    assert isinstance(board.dialog, ConfirmDialog)


def test_nothing_to_resync(poller, clock, job_class):
    board = Dashboard(make_options(), poller=poller, backend=FakeBackend(), clock=clock)
    board.loop = FakeLoop()
    board.apply_snapshot(make_snapshot(daemons=(DAEMON,), connections=()))
    press_r(board)
    assert board.dialog is None and job_class.made == []
    assert "resync: nothing to resync: no connections (all connections)" in board.status.text


def test_a_missing_interface_found_while_planning_is_reported(board, job_class, monkeypatch):
    def no_interface(interface, netns=None):
        raise resync.SyncConfigError(f"interface {interface} does not exist")

    monkeypatch.setattr(resync, "interface_index", no_interface)
    press_r(board)
    assert board.dialog is None and job_class.made == []
    assert "resync: interface eth0 does not exist" in screen(board, SIZE)[-1]
    press_r(board)  # nothing is left busy
    assert "resync: interface eth0 does not exist" in board.status.text


@pytest.mark.parametrize(
    "options, backend_name, daemons, reason",
    [
        (dict(read_only=True), "kernel", (DAEMON,), "resync disabled: read-only mode (--read-only)"),
        ({}, "demo", (DAEMON,), "resync: not in the demo (it would send to the real network)"),
        ({}, "kernel", (), "resync: no master sync daemon is running: pass --interface IF"),
        ({}, "kernel", (Daemon("backup", "eth0", 10),), "resync: no master sync daemon is running"),
        (dict(connections=False), "kernel", None, "resync: the connection table is not being read"),
    ],
)
def test_refusals_render_their_reason(poller, clock, job_class, options, backend_name, daemons, reason):
    class Backend(FakeBackend):
        name = backend_name

    board = Dashboard(make_options(**options), poller=poller, backend=Backend(), clock=clock)
    snapshot = make_snapshot(daemons=daemons if daemons is not None else (DAEMON,))
    if options.get("connections") is False:  # --no-connections: the poll reads no connection table
        snapshot = dataclasses.replace(snapshot, state=dataclasses.replace(snapshot.state, connections=None))
    board.apply_snapshot(snapshot)
    press(board, "R")
    assert board.dialog is None and job_class.made == []
    assert reason in " ".join(screen(board, (200, 30))[-1:])


def test_t_runs_the_sync_test_and_shows_its_outcome(board, job_class):
    press(board, "T")
    [job] = job_class.made
    assert job.label == "sync-test" and job.started and board.dialog is None
    assert job.settings.interface == "eth0" and job.settings.syncid == 10 and job.settings.group == "239.1.2.3"
    assert "sync test: started (group 239.1.2.3 port 9000 on interface eth0, syncid 10" in board.status.text
    job.finish(JobOutcome(True, "sync test: TCP 192.0.2.77 sent; no backup daemon on this host to verify receipt"))
    board.loop.run_pending()
    assert "no backup daemon on this host to verify receipt" in board.status.text
