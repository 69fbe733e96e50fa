"""Entering a named network namespace moves only the calling thread, and leaving brings it back."""

import os
import subprocess
import threading

import pytest

from ipvsman.kernel import netns


@pytest.mark.parametrize("name", ["", "a/b", "..", "x\0y"])
def test_bad_names_are_refused_with_a_reason(name):
    with pytest.raises(netns.NetnsError, match="not a network namespace name"):
        netns.enter(name)


def test_a_missing_namespace_says_how_to_list_them():
    with pytest.raises(netns.NetnsError, match="ip netns list"):
        netns.enter(f"ipvsman-missing-{os.getpid()}")


def interfaces() -> set[str]:
    with open("/proc/thread-self/net/dev") as dev:
        return {line.split(":")[0].strip() for line in dev.readlines()[2:]}


@pytest.fixture
def named_namespace():
    if os.geteuid() != 0:
        pytest.skip("creating a network namespace needs root")
    name = f"ipvsman-unit-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow 'ip netns add'")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_only_the_calling_thread_moves_and_leave_returns_it(named_namespace):
    outside = interfaces()
    seen = {}
    inside, looked = threading.Event(), threading.Event()

    def worker():
        with netns.entered(named_namespace):
            seen["inside"] = interfaces()
            inside.set()
            looked.wait(10)
        seen["after"] = interfaces()

    thread = threading.Thread(target=worker)
    thread.start()
    assert inside.wait(10)
    seen["main thread meanwhile"] = interfaces()
    looked.set()
    thread.join()
    assert seen["inside"] == {"lo"}
    assert seen["main thread meanwhile"] == outside
    assert seen["after"] == outside
