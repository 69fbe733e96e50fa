"""Gives the process's threads their Python names in the kernel too, so `top -H` and `ps -L` show
which part of ipvsman (the poller, the table reader, the health watcher) uses the CPU."""

from __future__ import annotations

import ctypes
import os
import threading

PR_SET_NAME = 15
_libc = None


def name_this_thread() -> None:
    """Set the calling thread's kernel name (15 bytes at most) to its threading name; never raises."""
    global _libc
    try:
        if _libc is None:
            # The process's own symbols, libc's among them: no find_library (which runs ldconfig).
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(PR_SET_NAME, threading.current_thread().name.encode("ascii", "replace")[:15], 0, 0, 0)
    except (OSError, AttributeError):  # not Linux, or no libc to be found: names are a nicety
        pass


def thread_names(pid: int) -> dict[int, str]:
    """{thread id: kernel name} of a process, from /proc (for benchmarks that split CPU by thread)."""
    names = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return names
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8", errors="replace") as comm:
                names[int(tid)] = comm.read().strip()
        except OSError:
            continue
    return names
