"""When Python's cyclic garbage collector may run: never during a poll, in the dashboard only between frames.

Everything ipvsman builds each second (snapshots, rows, connection tuples) is acyclic and freed
by reference counting the moment it is replaced. The automatic collector does not know that: at
10,000 services it holds some two million live objects and walks all of them again whenever
enough new ones have appeared, which a big snapshot makes happen almost every poll (measured:
0.8 s a walk, 6.6 s of a 20 s run, keys waiting a second). A 20 s run of that dashboard with
the automatic collector off left no cyclic garbage at all for a full collection to find.

So: `paused()` around the code that builds many objects (a poll, a /proc parse, the demo's
warm-up), and a `Schedule` while the dashboard runs, which turns automatic collection off and
runs full collections itself, between frames, spending at most SHARE of the time on them.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterator

# At most this share of the time goes to scheduled full collections, and they come at most
# every MIN_PERIOD seconds: 10 ms at 100 services means once a minute, 0.8 s at 10,000
# services once every 400 s.
SHARE = 0.002
MIN_PERIOD = 60.0

_lock = threading.Lock()
_pauses = 0  # paused() blocks active now, in any thread
_enable_after = False  # whether automatic collection was on when the first of them began
_schedules = 0  # running Schedules: automatic collection stays off until the last one stops


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No automatic collection inside the block, in any thread.

    Nested and concurrent blocks are counted, so the collector comes back on only when the last
    of them ends, and only if it was on before (a running Schedule keeps it off).
    """
    global _pauses, _enable_after
    with _lock:
        if _pauses == 0:
            _enable_after = gc.isenabled()
        _pauses += 1
        gc.disable()
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _enable_after and _schedules == 0:
                gc.enable()


class Schedule:
    """Full collections on the dashboard's schedule instead of the automatic collector's.

    `start()` turns automatic collection off until `stop()`; `collect_if_due()` runs a full
    collection when the last one is far enough behind (the loop calls it once a second, when no
    key has just been pressed).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, share: float = SHARE,
                 min_period: float = MIN_PERIOD):  # fmt: skip
        self.clock = clock
        self.share = share
        self.min_period = min_period
        self.running = False
        self.collections = 0
        self.last_seconds = 0.0  # how long the last full collection took
        self.found = 0  # unreachable objects the scheduled collections found, in all
        self._last = 0.0
        self._enable_after = False

    def start(self) -> None:
        global _schedules
        if self.running:
            return
        with _lock:
            if _schedules == 0:
                # A paused() block active now would restore its own view of the state; this one
                # is what comes back when the last Schedule stops.
                self._enable_after = gc.isenabled() if _pauses == 0 else _enable_after
            _schedules += 1
            gc.disable()
        self.running = True
        self._last = self.clock()

    def stop(self) -> None:
        global _schedules
        if not self.running:
            return
        self.running = False
        with _lock:
            _schedules -= 1
            if _schedules == 0 and _pauses == 0 and self._enable_after:
                gc.enable()

    def __enter__(self) -> Schedule:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def period(self) -> float:
        """Seconds between full collections: long enough that they take at most `share` of the time."""
        return max(self.min_period, self.last_seconds / self.share)

    def due(self) -> bool:
        return self.running and self.clock() - self._last >= self.period

    def collect_if_due(self) -> float | None:
        """Run a full collection if one is due; the seconds it took, or None."""
        if not self.due():
            return None
        started = time.perf_counter()
        self.found += gc.collect()
        self.last_seconds = time.perf_counter() - started
        self.collections += 1
        self._last = self.clock()
        return self.last_seconds
