"""View 5 says "unknown (why)" for kernel settings that were not read, never 0 s or "no sync daemon running"."""

from __future__ import annotations

import dataclasses

import pytest
import urwid.testing
from uihelpers import WEB, Clock, FakeBackend, FakePoller, fixed_names, make_options, make_snapshot, screen

from ipvsman import model
from ipvsman.kernel import netlink
from ipvsman.kernel.backend import NOT_PERMITTED
from ipvsman.model import DestKey
from ipvsman.ui.app import Dashboard

SIZE = (100, 30)
WIDE = 140  # wide enough that no line of view 5 is cut
WARNING = f"{NOT_PERMITTED}: showing only the connection table"  # what KernelBackend.poll warns


class UnprivilegedBackend(FakeBackend):
    read_only_reason = NOT_PERMITTED


def unprivileged_snapshot(**fields) -> model.Snapshot:
    """A snapshot as the kernel backend polls without CAP_NET_ADMIN: its unread netlink dump
    (built as KernelBackend.poll builds it), the connection table and its warning."""
    snapshot = make_snapshot(services=(), writable=False)
    dump = netlink.IpvsDump(model.IpvsInfo(), model.Timeouts(), (), ())
    state = dataclasses.replace(
        snapshot.state, info=dump.info, timeouts=dump.timeouts, daemons=dump.daemons, warnings=(WARNING,)
    )
    return dataclasses.replace(snapshot, state=dataclasses.replace(state, **fields))


def view_5(snapshot: model.Snapshot, backend=None) -> tuple[Dashboard, list[str]]:
    board = Dashboard(make_options(), poller=FakePoller(), backend=backend or UnprivilegedBackend(),
                      hostname="lvs-test", clock=Clock(), names=fixed_names(show=False))  # fmt: skip
    board.apply_snapshot(snapshot)
    board.set_width(WIDE)
    urwid.testing.press(board.top, (WIDE, 40), "5")
    return board, [row.plain for row in board.view.walker]


def field(rows: list[str], label: str) -> str:
    """The value of the first field with this label ("Connection table" is in Kernel and in Polling)."""
    row = next(row for row in rows if row.startswith(f"   {label} "))
    return row[3 + len(label) :].strip()


def test_unread_kernel_settings_are_unknown_with_the_reason():
    _, rows = view_5(unprivileged_snapshot())
    unknown = f"unknown ({WARNING})"
    assert field(rows, "IPVS version") == unknown
    assert field(rows, "Connection table") == unknown
    assert field(rows, "Timeouts") == unknown
    daemons = rows[rows.index(" Sync daemons") + 1]
    assert daemons.strip() == unknown
    assert not any("no sync daemon running" in row or " 0s" in row for row in rows)
    # What was read is still shown as read.
    assert field(rows, "sync_version sysctl") == "1"


def test_a_failed_first_poll_gives_its_error_as_the_reason():
    # The poller hands out RawState() (nothing read) with the error when no poll ever succeeded.
    error = "the ip_vs module is not loaded: run 'modprobe ip_vs' as root"
    snapshot = dataclasses.replace(make_snapshot(services=()), state=model.RawState(), error=error)
    _, rows = view_5(snapshot, FakeBackend())
    assert field(rows, "IPVS version") == f"unknown ({error})"
    assert rows[rows.index(" Sync daemons") + 1].strip() == f"unknown ({error})"


def test_timeouts_read_in_part_say_which_are_unknown():
    _, rows = view_5(unprivileged_snapshot(timeouts=model.Timeouts(tcp=900)))
    assert field(rows, "Timeouts") == "tcp 900s   tcp-fin unknown   udp unknown"


@pytest.mark.parametrize("daemons", [(), (model.Daemon("backup", "eth1", 7),)])
def test_known_settings_are_shown_as_read(daemons):
    _, rows = view_5(make_snapshot(daemons=daemons), FakeBackend())
    assert field(rows, "IPVS version") == "1.2.1"
    assert field(rows, "Timeouts") == "tcp 900s   tcp-fin 120s   udp 300s"
    daemon_row = rows[rows.index(" Sync daemons") + 1].strip()
    if daemons:
        assert daemon_row.startswith("backup  interface eth1   syncid 7")
    else:
        assert daemon_row == "no sync daemon running"
    assert not any("unknown (" in row for row in rows)


def test_the_dashboard_says_needs_cap_net_admin_where_changes_are_refused():
    board, _ = view_5(unprivileged_snapshot(services=make_snapshot().services))
    assert "READ-ONLY" in screen(board, SIZE)[0]
    urwid.testing.press(board.top, SIZE, "2")
    assert board.view.select(DestKey(WEB, "10.1.0.11", 80))
    urwid.testing.press(board.top, SIZE, "+")
    assert board.poller.submitted == []
    assert f"disabled: {NOT_PERMITTED}" in board.status.text
    assert NOT_PERMITTED == "needs CAP_NET_ADMIN: run as root"
