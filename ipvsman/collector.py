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

Freeing is the other half. A snapshot of 10,000 services x 10 real servers is some 1.2 million
objects, and dropping its last reference frees all of them in one go, in C, holding the
interpreter lock throughout (25-45 ms, more on a loaded machine), in whichever thread dropped it:
the loop's, when a view let go of an old snapshot on a key. So the dashboard hands each snapshot it
is done with to the Schedule's `Releaser`, a thread that waits until nothing else refers to it and
then frees it a slice at a time, letting the loop in between slices.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

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
    when no key has just been pressed. `release()` frees old snapshots in a thread of their own.
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
        self.releaser = Releaser()  # frees old snapshots outside the loop, while this runs

    def start(self) -> None:
        if self.running:
            return
        self.releaser.start()
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
        self.releaser.stop()
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

    def release(self, obj: object) -> None:
        """Hand over what the caller is done with (an old snapshot): freed in the Releaser's thread, a
        slice at a time, once nothing refers to it; at once, by the caller, when no Schedule runs."""
        self.releaser.release(obj)

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


# -- freeing old snapshots a slice at a time -------------------------------------------------------

# A slice frees about this much; the lock is let go after each (time.sleep: the loop gets it).
SLICE_SECONDS = 0.0005
YIELD_SECONDS = 0.0001
# An object with fewer referents than this is a record (a Snapshot, a RawState): its parts are
# released one by one. One with more is a collection (10,000 services, a dict of 100,000 servers):
# its parts, each small, are freed a slice of them at a time, the slice sized by the time it takes.
RECORD_PARTS = 64
FIRST_SLICE = 16  # then doubled while slices are quick: a few large parts are not freed at once
LARGEST_SLICE = 512  # parts shared with the next snapshot cost nothing, and make slices grow: kept small
# What is still held elsewhere waits (checked again every RECHECK_SECONDS); past PENDING_LIMIT of
# them the oldest is given up to whoever holds it (a leak elsewhere must not grow here too).
RECHECK_SECONDS = 0.25
PENDING_LIMIT = 16


def _held_in_dict_and_local() -> int:
    """sys.getrefcount of an object held by a dict and a local name, as `Releaser._take` sees it."""
    pending = {0: object()}
    item = pending[0]
    return sys.getrefcount(item)


def _held_in_local() -> int:
    """sys.getrefcount of an object held by a local name alone, as `Releaser._free` sees it."""
    stack = [object()]
    item = stack.pop()
    return sys.getrefcount(item)


class Releaser:
    """A thread that frees what the dashboard is done with (old snapshots), a slice at a time.

    `release(obj)` keeps `obj` until nothing else refers to it (views that still show it let go
    first), then frees it in slices of about SLICE_SECONDS, sleeping a moment between them, so
    that the loop's thread never waits long for the interpreter lock. Until `start()`, and after
    `stop()`, release() keeps nothing: the caller's reference frees the object as usual.
    """

    def __init__(self, slice_seconds: float = SLICE_SECONDS, recheck: float = RECHECK_SECONDS,
                 limit: int = PENDING_LIMIT):  # fmt: skip
        self.slice_seconds = slice_seconds
        self.recheck = recheck
        self.limit = limit
        self.freed = 0  # objects freed here (released ones and their parts)
        self.released = 0  # released objects freed here
        self.given_up = 0  # released objects still held elsewhere when the limit was passed
        self.longest_slice = 0.0  # CPU seconds of the longest slice: about how long it kept the lock
        self.busy_seconds = 0.0  # CPU seconds of all the slices together
        self.busy = False  # freeing now
        self.slices = 0
        self._pending: dict[int, Any] = {}  # id -> object, oldest first
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._in_dict, self._in_local = _held_in_dict_and_local(), _held_in_local()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ipvsman-release", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None
        with self._cond:
            self._pending.clear()

    def release(self, obj: object) -> None:
        """Take a reference to `obj`: freed later in this thread once the caller's and all others are gone."""
        if obj is None or self._thread is None:
            return
        with self._cond:
            self._pending[id(obj)] = obj
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def _take(self) -> Any:
        """A pending object that nothing else refers to any more (removed from the pending ones), or None."""
        for key in list(self._pending):
            item = self._pending[key]
            if sys.getrefcount(item) <= self._in_dict:
                del self._pending[key]
                return item
            del item
        if len(self._pending) > self.limit:
            # Held elsewhere for long: no longer ours to free (its holder frees it, whole).
            del self._pending[next(iter(self._pending))]
            self.given_up += 1
        return None

    def _run(self) -> None:
        from ipvsman.threadnames import name_this_thread

        name_this_thread()
        while True:
            with self._cond:
                if self._stopping:
                    return
                item = self._take()
                if item is None:
                    self._cond.wait(self.recheck)
                    continue
                self.busy = True
            stack = [item]
            del item
            self._free(stack)
            self.released += 1
            self.busy = False

    def _free(self, stack: list) -> None:
        """Free the objects on `stack` (each referred to by the stack alone) and what only they hold, in slices."""
        slice_started = time.thread_time()
        while stack and not self._stopping:
            item = stack.pop()
            if sys.getrefcount(item) > self._in_local:
                del item  # held elsewhere too: not ours to free
                continue
            if type(item) is list and len(item) >= RECORD_PARTS:  # ours alone: emptied in place, not copied
                parts = item
            else:
                parts = gc.get_referents(item)
                if len(parts) < RECORD_PARTS:
                    stack.extend(parts)  # a record: each part in turn (the small ones cost nothing)
                    del parts, item
                    self.freed += 1
                    if time.thread_time() - slice_started >= self.slice_seconds:
                        slice_started = self._yield(slice_started)
                    continue
                slice_started = self._yield(slice_started)  # the copy of a large collection's items
            del item  # a collection: frees it alone, `parts` holds what it held
            self.freed += 1
            size = FIRST_SLICE  # parts of one collection are alike; another's may be much larger
            while parts and not self._stopping:
                count = min(size, len(parts))
                started = time.thread_time()
                del parts[-count:]
                took = time.thread_time() - started
                self.freed += count
                if took > self.slice_seconds:
                    size = max(1, size // 2)
                elif took < self.slice_seconds / 4:
                    size = min(size * 2, LARGEST_SLICE)
                slice_started = self._yield(slice_started)
        # Stopping: what is left goes at once.

    def _yield(self, slice_started: float) -> float:
        """The end of a slice: counted, then the lock let go for a moment. Returns when the next began."""
        took = time.thread_time() - slice_started
        self.longest_slice = max(self.longest_slice, took)
        self.busy_seconds += took
        self.slices += 1
        time.sleep(YIELD_SECONDS)
        return time.thread_time()
