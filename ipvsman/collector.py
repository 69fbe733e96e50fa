"""When Python's cyclic garbage collector runs, and what it walks: never the dashboard's live snapshots.

Everything ipvsman builds each second (snapshots, rows, connection tuples) is acyclic and freed
by reference counting the moment it is replaced. The automatic collector does not know that: at
10,000 services it holds some 1.5 million live objects and walks all of them again whenever
enough new ones have appeared, which a big snapshot makes happen almost every poll (measured:
0.8 s a walk, 6.6 s of a 20 s run, keys waiting a second). A full collection scheduled between
frames instead still walked them all, once every few minutes: 0.4-0.55 s during which a key waited.

So, while a dashboard's `Schedule` runs, the automatic collector is off and the polling thread
wraps each poll in `building_snapshot()`: before the poll it collects what was made since the
last poll (the dashboard's rows of the last snapshot, some 30,000 objects, a few ms) and then
`gc.freeze()`s what is left, and after the poll it freezes what the poll built. Frozen objects
are never walked again, yet reference counting still frees them as usual when the next snapshot
replaces them, so the frozen set stays the size of what is alive. Only a cycle frozen before it
became garbage would stay: the Schedule counts the memory blocks in use now and then, and when
their floor has grown by GROWTH it thaws everything and runs one full collection, between frames,
as before. (Not by gc.get_freeze_count(), which walks the frozen list: 2 s at 3.4 million objects
on a loaded machine. sys.getallocatedblocks() walks the allocator's pools, far fewer.)

`paused()` still goes around the code that builds many objects (a poll, a /proc parse, the demo's
warm-up) when no Schedule runs: no automatic collection inside it.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator

# The blocks in use are counted every CHECK_PERIOD seconds; their floor is the smallest of the
# last WINDOW counts, so a count taken while two snapshots were alive does not look like growth.
# A floor GROWTH above the lowest since the last thaw means frozen garbage (or a bigger director):
# thaw and collect everything once. Not less: in a dashboard's first minute its rate histories
# fill and the live objects grow by some 30%.
CHECK_PERIOD = 60.0
WINDOW = 3
GROWTH = 0.5

_lock = threading.Lock()
_pauses = 0  # paused() blocks active now, in any thread
_enable_after = False  # whether automatic collection was on when the first of them began
_schedules: list[Schedule] = []  # running: automatic collection stays off until the last one stops
# Freezing and collecting never interleave: a finalizer run by a collection may let the polling
# thread in, and a freeze in the middle of a collection would move the lists it is walking.
_gc_lock = threading.Lock()


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
            if _pauses == 0 and _enable_after and not _schedules:
                gc.enable()


@contextlib.contextmanager
def building_snapshot() -> Iterator[None]:
    """Around the code that builds a snapshot (Poller.run's poll_once): freeze what lives before and after it.

    Does nothing unless a Schedule runs (a dashboard); `--once`, tests and benchmarks that poll
    without one keep the collector as it was.
    """
    with _lock:
        schedule = _schedules[0] if _schedules else None
    if schedule is not None:
        schedule.collect_young()
    try:
        yield
    finally:
        if schedule is not None and schedule.running:
            with _gc_lock:
                gc.freeze()


class Schedule:
    """The dashboard's garbage collection: automatic collection off, snapshots frozen, full collections rare.

    `start()` turns automatic collection off until `stop()` (which thaws what was frozen);
    `building_snapshot()` does the frequent young collections from the polling thread, and
    `collect_if_due()` the rare checks and full collections from the loop, which calls it only
    when no key has just been pressed.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, check_period: float = CHECK_PERIOD,
                 window: int = WINDOW, growth: float = GROWTH):  # fmt: skip
        self.clock = clock
        self.check_period = check_period
        self.growth = growth
        self.running = False
        self.young_collections = 0
        self.young_seconds = 0.0  # the longest young collection
        self.collections = 0  # full collections (frozen objects thawed first)
        self.last_seconds = 0.0  # how long the last full collection took
        self.found = 0  # unreachable objects all collections found
        self.blocks: collections.deque[int] = collections.deque(maxlen=window)  # the last counts
        self.lowest: int | None = None  # the lowest floor since the last full collection
        self.check_seconds = 0.0  # the longest count of the blocks
        self._last_check = 0.0
        self._enable_after = False

    def start(self) -> None:
        if self.running:
            return
        with _lock:
            if not _schedules:
                # A paused() block active now would restore its own view of the state; this one
                # is what comes back when the last Schedule stops.
                self._enable_after = gc.isenabled() if _pauses == 0 else _enable_after
            _schedules.append(self)
            gc.disable()
        self.running = True
        self._last_check = self.clock()
        # What exists now (a dashboard and perhaps a first snapshot) is walked once, here, before
        # any key can come, rather than by the first poll's young collection.
        self.collect_young()

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        with _lock:
            _schedules.remove(self)
            last = not _schedules
            if last and _pauses == 0 and self._enable_after:
                gc.enable()
        if last:
            with _gc_lock:
                gc.unfreeze()  # back to the oldest generation: the next full collection sees them

    def __enter__(self) -> Schedule:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def collect_young(self) -> float:
        """Collect what is not frozen (what was made since the last freeze), then freeze what is left."""
        started = time.perf_counter()
        with _gc_lock:
            self.found += gc.collect()
            gc.freeze()
        seconds = time.perf_counter() - started
        self.young_collections += 1
        self.young_seconds = max(self.young_seconds, seconds)
        return seconds

    def floor(self) -> int | None:
        """The fewest blocks in use of the last counts, once there are enough of them."""
        if len(self.blocks) < (self.blocks.maxlen or 1):
            return None
        return min(self.blocks)

    def due(self) -> bool:
        return self.running and self.clock() - self._last_check >= self.check_period

    def collect_if_due(self) -> float | None:
        """Count the blocks in use if that is due, and collect everything if their floor grew: the seconds it took, or None."""
        if not self.due():
            return None
        self._last_check = self.clock()
        started = time.perf_counter()
        self.blocks.append(sys.getallocatedblocks())
        self.check_seconds = max(self.check_seconds, time.perf_counter() - started)
        floor = self.floor()
        if floor is not None:
            if self.lowest is not None and floor > self.lowest * (1 + self.growth):
                return self.collect_all()
            self.lowest = floor if self.lowest is None else min(self.lowest, floor)
        return time.perf_counter() - started

    def collect_all(self) -> float:
        """Thaw everything and run one full collection (what the counts of blocks call for)."""
        started = time.perf_counter()
        with _gc_lock:
            gc.unfreeze()
            self.found += gc.collect()
        self.last_seconds = time.perf_counter() - started
        self.collections += 1
        self.blocks.clear()
        self.lowest = None
        self._last_check = self.clock()
        return self.last_seconds
