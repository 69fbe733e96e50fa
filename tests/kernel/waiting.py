"""Waiting in kernel tests: poll a condition until it holds, or fail naming what was awaited."""

from __future__ import annotations

import time

DEFAULT_TIMEOUT = 120.0  # seconds; everything in the guest is ~30x slower: this bounds a wait, it measures nothing


def wait_until(condition, what: str, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.25):
    """Call `condition` until it returns something true and return that; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
