"""Threads named in the kernel as in Python, so top -H tells the poller from the table reader."""

from __future__ import annotations

import os
import threading

from ipvsman.threadnames import name_this_thread, thread_names


def test_a_named_thread_shows_its_name_in_proc_cut_to_the_kernels_15_bytes():
    seen = {}
    ready, done = threading.Event(), threading.Event()

    def work():
        name_this_thread()
        seen["tid"] = threading.get_native_id()
        ready.set()
        done.wait(10)

    thread = threading.Thread(target=work, name="ipvsman-table-reader-long")
    thread.start()
    try:
        assert ready.wait(10)
        assert thread_names(os.getpid())[seen["tid"]] == "ipvsman-table-r"
    finally:
        done.set()
        thread.join()


def test_names_of_a_process_that_is_gone_are_none():
    assert thread_names(2**22 + 12345) == {}
