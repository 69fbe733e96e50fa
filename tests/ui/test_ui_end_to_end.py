"""`python -m ipvsman --demo` in a real terminal (tmux): every view, `+` on a real server, `q`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One tmux server of our own (its own socket), one window of 100x30."""

    def __init__(self, socket: str):
        self.socket = socket

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "ui")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "ui", *keys)

    def wait_for(self, predicate, what: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")
            time.sleep(0.1)


def server_row(text: str, server: str) -> str:
    rows = [line for line in text.splitlines()[3:-1] if f"-> {server} " in line]
    assert rows, f"no row for {server}:\n{text}"
    return rows[0]


def test_demo_in_tmux(tmp_path):
    tmux = Tmux(f"ipvsman-test-{os.getpid()}")
    status = tmp_path / "status"
    audit = tmp_path / "audit.log"
    command = (
        f"cd {ROOT} && LANG=C.UTF-8 {sys.executable} -m ipvsman --demo --no-resolve --audit-log {audit}; "
        f"echo $? > {status}; sleep 60"
    )
    tmux.run("-u", "new-session", "-d", "-s", "ui", "-x", "100", "-y", "30", command)
    try:
        tmux.wait_for(lambda t: "DEMO" in t and "conns" in t, "the first snapshot")
        for key, marker in [
            ("1", "VIRTUAL SERVER / SERVICE"),
            ("3", "REAL SERVER / VIRTUAL SERVICE"),
            ("4", "connections"),
            ("5", "SYNC AND KERNEL"),
            ("2", "METHOD"),
        ]:
            tmux.keys(key)
            tmux.wait_for(lambda t, marker=marker: marker in t, f"view {key}")
        tmux.keys("Down", "Down")  # from the first VIP to its second real server
        time.sleep(0.3)
        tmux.keys("+")
        text = tmux.wait_for(lambda t: "confirmed: weight of" in t, "the change to be confirmed")
        found = re.search(r"confirmed: weight of \S+ \S+ -> (\S+) is (\d+)", text)
        assert found, text
        server, weight = found.group(1), int(found.group(2))
        assert server_row(text, server).split()[-1] == str(weight)
        assert f"server={server} old={weight - 1} new={weight} result=\"ok\"" in audit.read_text()
        tmux.keys("q")
        deadline = time.monotonic() + 15
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status.exists(), f"ipvsman did not quit; screen:\n{tmux.screen()}"
        assert status.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)
