"""Benchmark 3, watching cost: CPU of the ipvsman dashboard refreshing every second against `watch -n1 ipvsadm`.

Both run for real on a pseudo-terminal of 200x60 in the director's namespace: `ipvsman --netns`
(poller, views, screen output; numeric, like ipvsadm -n) and `watch -n1 ipvsadm -Ln --stats`,
and then the same watch loop with ipvsadm's output thrown away: watch cuts ipvsadm off after a
screenful (see watch_ipvsadm), so only that loop lists the whole director every refresh.
The window starts at each one's first full refresh, so ipvsman's Python start-up is not counted,
and lasts the same number of seconds for both. CPU is user + system of the process and of the
children it reaped (watch's shells and ipvsadm runs), read from /proc through psutil.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time

import psutil

from ipvsman.bench import Figure, Report, at_most
from ipvsman.bench.director import Director, terminal_env
from ipvsman.threadnames import thread_names

COLS, ROWS = 200, 60
START_TIMEOUT = 600.0  # seconds for the first refresh; ipvsman's imports alone take ~20 s in the guest
POLL_NUMBER = re.compile(rb"poll #(\d+)")
ESCAPES = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78])")


class PtyProcess:
    """A command on its own pseudo-terminal; what it writes is read (and mostly thrown away) by a thread."""

    def __init__(self, argv: list[str], env: dict | None = None):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                                     close_fds=True)  # fmt: skip
        os.close(slave)
        self.master = master
        self.tail = b""
        self.lock = threading.Lock()
        self.events: list[tuple[float, bytes]] = []  # (time, matched text) of what `watch_for` looks for
        self.patterns: list[re.Pattern] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.monotonic()
            with self.lock:
                text = self.tail + chunk
                for pattern in self.patterns:
                    for match in pattern.finditer(text):
                        self.events.append((now, match.group(0)))
                self.tail = text[-4096:]

    def watch_for(self, pattern: re.Pattern) -> None:
        with self.lock:
            self.patterns.append(pattern)

    def wait_for(self, pattern: re.Pattern, timeout: float) -> float | None:
        """The time `pattern` first showed up (it must have been passed to watch_for)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for when, text in self.events:
                    if pattern.search(text):
                        return when
            if self.proc.poll() is not None:
                return None
            time.sleep(0.1)
        return None

    def screen_text(self) -> str:
        with self.lock:
            return ESCAPES.sub(b"", self.tail).decode("utf-8", "replace")[-600:]

    def cpu_split(self) -> tuple[float, float]:
        """User time and system time (the kernel's work for it: netlink dumps, /proc reads) of the
        process and of the children it has waited for."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.children_user, times.system + times.children_system

    def thread_cpu(self) -> dict[str, float]:
        """User + system time of each thread of the process, by its kernel name (ipvsman names its own)."""
        names = thread_names(self.proc.pid)
        cpu: dict[str, float] = {}
        for thread in psutil.Process(self.proc.pid).threads():
            name = "main (UI)" if thread.id == self.proc.pid else names.get(thread.id, "other")
            cpu[name] = cpu.get(name, 0.0) + thread.user_time + thread.system_time
        return cpu

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        os.close(self.master)
        self.reader.join(timeout=5)


def watch_ipvsman(director: Director, seconds: float, log=print) -> dict:
    audit = tempfile.NamedTemporaryFile(prefix="ipvsman-bench-audit-", delete=False)
    audit.close()
    argv = [sys.executable, "-m", "ipvsman", "--netns", director.netns.name, "--no-resolve", "--interval", "1",
            "--audit-log", audit.name]  # fmt: skip
    process = PtyProcess(argv, terminal_env())
    process.watch_for(POLL_NUMBER)
    try:
        started = process.wait_for(POLL_NUMBER, START_TIMEOUT)
        if started is None:
            raise RuntimeError(f"ipvsman showed no poll within {START_TIMEOUT:.0f} s; screen: {process.screen_text()!r}")
        split_before, threads_before = process.cpu_split(), process.thread_cpu()
        first = _last_poll_number(process)
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        split, threads = process.cpu_split(), process.thread_cpu()
        last = _last_poll_number(process)
        by_thread = {name: round(value - threads_before.get(name, 0.0), 2) for name, value in threads.items()}
        return {**_cpu_figures(split_before, split), "refreshes": last - first, "seconds": seconds, "threads": by_thread}
    finally:
        process.close()
        os.unlink(audit.name)


def _cpu_figures(before: tuple[float, float], after: tuple[float, float]) -> dict[str, float]:
    """CPU seconds between two cpu_split()s: in all, in user space and in the kernel."""
    user, system = after[0] - before[0], after[1] - before[1]
    return {"cpu": user + system, "user": round(user, 2), "system": round(system, 2)}


def _last_poll_number(process: PtyProcess) -> int:
    with process.lock:
        numbers = [int(POLL_NUMBER.match(text).group(1)) for _, text in process.events if POLL_NUMBER.match(text)]
    return max(numbers, default=0)


def watch_ipvsadm(director: Director, seconds: float, whole: bool = False) -> dict:
    """`watch -n1 ipvsadm -Ln --stats`: refreshes are counted as the ipvsadm processes it starts.

    watch reads a command's output only until the screen is full and then closes the pipe, so
    ipvsadm dies of SIGPIPE after the first screenful (some 5 services of 10 real servers at
    60 rows) and never reads the rest of the director. With `whole`, its output goes to
    /dev/null instead, so that every run lists every service, as each poll of ipvsman does.
    """
    if whole:
        argv = director.netns.exec_argv(["watch", "-n1", "ipvsadm -Ln --stats > /dev/null"])
        listing = re.compile(rb"Every 1")  # watch's title: nothing else reaches the screen
    else:
        argv = director.netns.exec_argv(["watch", "-n1", "ipvsadm", "-Ln", "--stats"])
        listing = re.compile(rb"Prot LocalAddress")
    process = PtyProcess(argv, terminal_env())
    process.watch_for(listing)
    seen: set[int] = set()
    stop = threading.Event()

    def count_runs():
        while not stop.is_set():
            try:
                for child in psutil.Process(process.proc.pid).children(recursive=True):
                    try:
                        if child.name() == "ipvsadm":
                            seen.add(child.pid)
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                return
            stop.wait(0.1)

    try:
        started = process.wait_for(listing, START_TIMEOUT)
        if started is None:
            raise RuntimeError(f"watch showed no listing within {START_TIMEOUT:.0f} s; screen: {process.screen_text()!r}")
        counter = threading.Thread(target=count_runs, daemon=True)
        counter.start()
        split_before = process.cpu_split()
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        split = process.cpu_split()
        stop.set()
        counter.join()
        return {**_cpu_figures(split_before, split), "refreshes": len(seen), "seconds": seconds}
    finally:
        stop.set()
        process.close()


def run(director: Director, seconds: float, log=print) -> Report:
    report = Report()
    ours = watch_ipvsman(director, seconds, log)
    log(f"watch: ipvsman {ours}")
    theirs = watch_ipvsadm(director, seconds)
    log(f"watch: watch ipvsadm {theirs}")
    whole = watch_ipvsadm(director, seconds, whole=True)
    log(f"watch: watch ipvsadm, every service listed {whole}")
    scale = f"{director.services:,} x {director.dests}"
    report.figures.append(
        Figure("watch", f"CPU over {seconds:g} s refreshing every second, {scale}", ours["cpu"], "CPU s", theirs["cpu"],
               "watch -n1 ipvsadm -Ln --stats", "<= the watch loop", at_most(ours["cpu"], theirs["cpu"]),
               note=f"{ours['refreshes']} vs {theirs['refreshes']} refreshes")  # fmt: skip
    )
    report.figures.append(
        Figure("watch", "the same against a watch loop whose ipvsadm lists every service (output to /dev/null)",
               ours["cpu"], "CPU s", whole["cpu"], "watch -n1 'ipvsadm -Ln --stats > /dev/null'",
               "<= the listing loop", at_most(ours["cpu"], whole["cpu"]),
               note=f"{ours['refreshes']} vs {whole['refreshes']} refreshes")  # fmt: skip
    )
    report.notes.append(f"watch: ipvsman's CPU by thread over {seconds:g} s: {_threads_text(ours)}")
    report.notes.append(f"watch: user and system CPU over {seconds:g} s: ipvsman {_split_text(ours)}; "
                        f"the listing loop {_split_text(whole)}")
    per_ours = per_refresh(ours)
    report.figures.append(Figure("watch", f"CPU per refresh, {scale}", per_ours, "CPU s", per_refresh(theirs),
                                 "watch -n1 ipvsadm -Ln --stats (cut off after a screenful)"))  # fmt: skip
    report.figures.append(Figure("watch", f"CPU per refresh, {scale}, every service listed by both", per_ours,
                                 "CPU s", per_refresh(whole), "watch -n1 'ipvsadm -Ln --stats > /dev/null'"))  # fmt: skip
    return report


def per_refresh(watched: dict) -> float | None:
    return watched["cpu"] / watched["refreshes"] if watched["refreshes"] else None


def run_with_table(director: Director, messages: list, entries: int, seconds: float, log=print) -> Report:
    """Watching a director whose table holds `entries` connections (synced in through a backup
    daemon), against the same listing loop: the table's reads must fit in the dashboard's budget."""
    from ipvsman.bench.conns import SyncedTable, prefix_figure

    report = Report()
    table = SyncedTable(director, messages)
    try:
        reached = table.fill(entries, log)
        log(f"watch: table filled to {reached:,} entries")
        report.figures.append(prefix_figure("watch", director, reached, log))
        ours = watch_ipvsman(director, seconds, log)
        log(f"watch: ipvsman with {reached:,} connections {ours}")
        whole = watch_ipvsadm(director, seconds, whole=True)
        log(f"watch: watch ipvsadm, every service listed {whole}")
    finally:
        table.close()
    report.notes.append(f"watch: with {reached:,} connections, ipvsman's CPU by thread: {_threads_text(ours)}")
    scale = f"{director.services:,} x {director.dests}"
    report.figures.append(
        Figure("watch", f"CPU over {seconds:g} s, {scale} with {reached:,} connections (table reads on the "
               f"default budget)", ours["cpu"], "CPU s", whole["cpu"], "watch -n1 'ipvsadm -Ln --stats > /dev/null'",
               "<= 1.2x the listing loop", at_most(ours["cpu"], 1.2 * whole["cpu"]),
               note=f"{ours['refreshes']} vs {whole['refreshes']} refreshes")  # fmt: skip
    )
    return report


def _split_text(watched: dict) -> str:
    """User and system CPU, in all and per refresh: system time is the kernel's work for the dumps."""
    text = f"user {watched['user']:.1f} s, system {watched['system']:.1f} s"
    refreshes = watched["refreshes"]
    if not refreshes:
        return f"{text} (no refresh)"
    return f"{text} ({watched['user'] / refreshes:.3f} + {watched['system'] / refreshes:.3f} s a refresh)"


def _threads_text(watched: dict) -> str:
    threads = sorted(watched.get("threads", {}).items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {cpu:.1f} s" for name, cpu in threads)
