"""The audit log's defaults, its backend field, its failures as one line, and stderr held or written at once."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from ipvsman import cli
from ipvsman.model import DestKey, ServiceKey
from ipvsman.ui.audit import (
    ATTEMPT,
    SYSTEM_PATH,
    AuditLog,
    AuditLogError,
    backend_label,
    default_path,
    for_backend,
)

WEB1 = DestKey(ServiceKey("inet", "tcp", "192.0.2.10", 80), "10.1.0.11", 80)


@pytest.mark.parametrize(
    "demo, euid, environ, expected",
    [
        (False, 0, {"HOME": "/root"}, SYSTEM_PATH),
        (True, 0, {"HOME": "/root"}, "/root/.local/state/ipvsman/demo-audit.log"),
        (False, 1000, {"HOME": "/home/al"}, "/home/al/.local/state/ipvsman/audit.log"),
        (True, 1000, {"HOME": "/home/al", "XDG_STATE_HOME": "/st"}, "/st/ipvsman/demo-audit.log"),
    ],
)
def test_default_path_keeps_the_demo_out_of_the_system_log(demo, euid, environ, expected):
    assert default_path(demo, euid=euid, environ=environ) == expected


def test_the_help_says_where_the_demo_logs():
    help_text = " ".join(cli.build_parser().format_help().split())
    assert f"with --demo {default_path(True)}" in help_text and "'-' for stderr" in help_text
    assert cli.build_parser().parse_args([]).audit_log is None  # the dashboard picks by backend


def test_for_backend_names_the_backend_and_refuses_the_demo_on_the_system_log():
    demo, kernel = SimpleNamespace(name="demo"), SimpleNamespace(name="kernel", netns="lb-1")
    assert for_backend(None, demo).path == default_path(True)
    assert for_backend(None, demo).backend == "demo"
    assert for_backend("/tmp/x.log", kernel).backend == "kernel netns=lb-1"
    assert for_backend("-", SimpleNamespace(name="kernel"), "blue").backend == "kernel netns=blue"
    with pytest.raises(AuditLogError, match=r"never go to the system audit log /var/log/ipvsman-audit.log"):
        for_backend(SYSTEM_PATH, demo)
    assert for_backend("-", demo).path == "-"


def test_backend_label_quotes_only_what_needs_it():
    assert backend_label("kernel") == "kernel"
    assert backend_label(None, "lb 1") == 'kernel netns="lb 1"'
    assert backend_label("demo") == "demo"


def test_sysfs_refuses_root_too():
    with pytest.raises(AuditLogError, match=r"^audit log /sys/ipvsman-audit.log not writable: Permission denied$"):
        AuditLog("/sys/ipvsman-audit.log").record(WEB1, 1, 2, ATTEMPT)


def test_a_closed_stderr_is_a_refusal_too():
    stream = io.StringIO()
    stream.close()
    with pytest.raises(AuditLogError, match=r"^audit log stderr not writable: "):
        AuditLog("-", stream=stream, hold=False).record(WEB1, 1, 2, ATTEMPT)


def test_held_lines_come_out_once_in_order():
    stream = io.StringIO()
    log = AuditLog("-", user="bob", stream=stream, hold=True)
    log.record(WEB1, 1, 2, ATTEMPT)
    log.record(WEB1, 1, 2, "ok")
    assert stream.getvalue() == ""
    log.release()
    log.release()
    assert [line.rsplit(" result=", 1)[1] for line in stream.getvalue().splitlines()] == ['"attempt"', '"ok"']


def test_no_path_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path of None must not become a file named "None" here
    AuditLog(None).record(WEB1, 1, 2, ATTEMPT)
    assert list(tmp_path.iterdir()) == []
