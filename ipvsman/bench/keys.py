"""Keys over minutes of use: the longest wait from a key to its frame, garbage collection included.

The dashboard's own handlers run as urwid's MainLoop would run them: snapshots come from the
real Poller's thread (demo director, one a second) through call_from_thread, the dashboard's
once-a-second tick is an alarm, and keys arrive at random moments (a reader's pauses and a
scroller's bursts). After each batch of events the screen is rendered headless, as the loop's
idle handler would draw it. A key's wait runs from the moment it arrived to the end of its
frame, so it includes whatever the loop was doing then: applying a snapshot, a tick, a garbage
collection, or sharing the interpreter with the polling thread.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ipvsman.bench import current_rss_mb
from ipvsman.poller import Poller
from ipvsman.ui.keymap import KEYMAP

SIZE = (200, 60)
TARGET_MS = 50.0
SLOW_KEPT = 5  # the longest waits taken apart in the figures
NAVIGATION = ("down", "down", "down", "page down", "up", "page up", "end", "home")


class HeadlessLoop:
    """What the Dashboard asks of urwid.MainLoop (alarms, call_from_thread), run by `Use`."""

    def __init__(self):
        self.alarms: list[tuple[float, int, Callable, object]] = []
        self._numbers = itertools.count()
        self._removed: set[int] = set()
        self._calls: list[Callable[[], object]] = []
        self._calls_lock = threading.Lock()
        self.wakeup = threading.Event()

    def set_alarm_in(self, seconds: float, callback: Callable, user_data=None):
        alarm = (time.monotonic() + seconds, next(self._numbers), callback, user_data)
        heapq.heappush(self.alarms, alarm)
        return alarm

    def remove_alarm(self, handle) -> bool:
        self._removed.add(handle[1])
        return True

    def call_from_thread(self, callback: Callable, *args) -> None:
        with self._calls_lock:
            self._calls.append(lambda: callback(*args))
        self.wakeup.set()

    def next_alarm(self) -> float:
        while self.alarms and self.alarms[0][1] in self._removed:
            self._removed.discard(heapq.heappop(self.alarms)[1])
        return self.alarms[0][0] if self.alarms else float("inf")

    def run_due(self, now: float) -> int:
        """Thread calls, then due alarms; how many events ran."""
        with self._calls_lock:
            calls, self._calls = self._calls, []
            self.wakeup.clear()
        for call in calls:
            call()
        ran = len(calls)
        while self.next_alarm() <= now:
            _, number, callback, user_data = heapq.heappop(self.alarms)
            callback(self, user_data)
            ran += 1
        return ran


class Collections:
    """Every garbage collection while it is on (gc.callbacks): milliseconds, CPU milliseconds, objects found.

    The CPU time is the collecting thread's: on a machine shared with other work it is what the
    collection itself cost, where the wall time also counts the waits for a CPU.
    """

    def __init__(self):
        self.runs: list[tuple[float, float, int]] = []
        self.spans: list[tuple[float, float]] = []  # time.monotonic() at the start and end of each
        self._started = (0.0, 0.0)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = (time.monotonic(), time.thread_time())
        else:
            end = time.monotonic()
            wall, cpu = end - self._started[0], time.thread_time() - self._started[1]
            self.runs.append((wall * 1000, cpu * 1000, info["collected"]))
            self.spans.append((self._started[0], end))

    def inside(self, start: float, end: float) -> float:
        """Milliseconds of collections between `start` and `end`."""
        return sum(max(0.0, min(end, span[1]) - max(start, span[0])) for span in self.spans) * 1000

    def __enter__(self) -> Collections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc_info) -> None:
        gc.callbacks.remove(self)


class CountingPoller(Poller):
    """The Poller (whose run() builds each snapshot inside collector.building_snapshot()), counting its polls."""

    polls = 0

    def poll_once(self):
        self.polls += 1
        return super().poll_once()


@dataclass(frozen=True)
class CpuClocks:
    """The loop thread's and the polling thread's CPU seconds at one moment."""

    at: float
    loop: float
    poller: float | None

    @classmethod
    def take(cls, poller: Poller) -> CpuClocks:
        try:
            polling = time.clock_gettime(time.pthread_getcpuclockid(poller.ident)) if poller.ident else None
        except (OSError, OverflowError):  # the thread has ended
            polling = None
        return cls(time.monotonic(), time.thread_time(), polling)


@dataclass(frozen=True)
class Wait:
    """One key's wait taken apart: how late the loop turned to it, what it ran first, and whose CPU it was.

    Two spans: from the end of the loop's previous turn (when it went idle) to the start of the
    turn that read the key, and that turn itself, up to the key's frame. When the threads' CPU in
    a span falls well short of its wall time, the process waited for a CPU (the machine's load);
    when it adds up, the wait was ipvsman's own work.
    """

    key: str
    view: str
    wait: float  # ms from the key's arrival to the end of its frame
    late: float  # ms from the key's arrival to the turn that read it
    idle: tuple[float, float | None]  # the span before that turn: wall ms, polling thread CPU ms
    events: tuple[int, float]  # thread calls and alarms that turn ran before the key, and their ms (with their frame)
    turn: tuple[float, float, float | None]  # the turn: wall ms, loop thread CPU ms, polling thread CPU ms
    window: tuple[float, float]  # the key's arrival and the end of its frame (time.monotonic)

    @classmethod
    def of(cls, key: str, view: str, arrived: float, idle: CpuClocks, turn: CpuClocks, events: tuple[int, float],
           done: CpuClocks) -> Wait:  # fmt: skip
        """`done` is the clocks taken as the key's frame ended: the same moment its recorded wait ends."""

        def polling(start: CpuClocks, end: CpuClocks) -> float | None:
            return None if start.poller is None or end.poller is None else (end.poller - start.poller) * 1000

        return cls(key, view, (done.at - arrived) * 1000, (turn.at - arrived) * 1000,
                   ((turn.at - idle.at) * 1000, polling(idle, turn)), (events[0], events[1] * 1000),
                   ((done.at - turn.at) * 1000, (done.loop - turn.loop) * 1000, polling(turn, done)),
                   (arrived, done.at))  # fmt: skip

    def describe(self, collections: Collections) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}"

        return (f"{self.wait:.0f} ms for {self.key!r} in the {self.view} view: read by a turn that began "
                f"{self.late:.0f} ms after it (idle before {ms(self.idle[0])} ms, polling thread CPU {ms(self.idle[1])} ms); "
                f"the turn ran {self.events[0]} events for {self.events[1]:.0f} ms first, and took {ms(self.turn[0])} ms "
                f"(loop CPU {ms(self.turn[1])} ms, polling thread CPU {ms(self.turn[2])} ms); "
                f"garbage collection in the wait {collections.inside(*self.window):.0f} ms")


def key_sequence(rng: random.Random, views: list[str]):
    """Navigation mostly, with a view switch now and then, as someone reading the dashboard would press."""
    view_keys = [KEYMAP.keys_for(f"view.{name}")[0] for name in views]
    while True:
        if rng.random() < 0.05:
            yield rng.choice(view_keys)
        else:
            yield rng.choice(NAVIGATION)


def key_gaps(rng: random.Random, mean: float):
    """Seconds between keys: bursts of quick presses (scrolling) between pauses of a few seconds (reading)."""
    while True:
        for _ in range(rng.randint(1, 8)):
            yield rng.uniform(0.05, 0.4)
        yield rng.expovariate(1 / mean)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(scene, seconds: float, seed: int = 12, mean_pause: float = 3.0, log=print) -> dict:
    """Use the scene's dashboard for `seconds`: its figures (waits in ms, collections, memory, CPU)."""

    dashboard = scene.dashboard
    loop = HeadlessLoop()
    dashboard.attach(loop)
    rng = random.Random(seed)
    keys = key_sequence(rng, [view.name for view in dashboard.views])
    gaps = key_gaps(rng, mean_pause)

    poller = CountingPoller(scene.backend, on_snapshot=dashboard.on_snapshot, interval=1.0)
    waits: list[float] = []
    spans: list[tuple[float, float]] = []  # each key's arrival and the end of its frame
    rss = [current_rss_mb()]
    blocks = [sys.getallocatedblocks()]  # Python's memory blocks in use: a leak grows them, fragmentation does not
    cpu_started, started = time.process_time(), time.monotonic()
    sample_at = started + 30.0
    rss_half = blocks_half = None  # the last samples of the run's first half
    releaser = dashboard.collector.releaser
    released_before, release_cpu_before = releaser.released, releaser.busy_seconds
    slow: list[Wait] = []  # the longest waits, longest first
    with Collections() as collections:
        poller.start()
        idle = CpuClocks.take(poller)
        try:
            next_key = started + next(gaps)
            end = started + seconds
            while (now := time.monotonic()) < end:
                timeout = min(next_key, loop.next_alarm(), end) - now
                if timeout > 0:
                    loop.wakeup.wait(timeout)
                turn = CpuClocks.take(poller)
                now = turn.at
                ran = loop.run_due(now)
                if ran:
                    dashboard.top.render(SIZE, focus=True)
                events = time.monotonic() - now
                if now >= next_key:
                    key = next(keys)
                    dashboard.top.keypress(SIZE, key)
                    dashboard.top.render(SIZE, focus=True)
                    done = CpuClocks.take(poller)
                    wait = (done.at - next_key) * 1000
                    waits.append(wait)
                    spans.append((next_key, done.at))
                    if wait > TARGET_MS or not slow or wait > slow[0].wait:
                        slow.append(Wait.of(key, dashboard.view.name, next_key, idle, turn, (ran, events), done))
                        slow.sort(key=lambda item: -item.wait)
                        del slow[SLOW_KEPT:]
                    next_key += next(gaps)
                idle = CpuClocks.take(poller)  # the loop goes idle
                if now >= sample_at:
                    rss.append(current_rss_mb())  # not gc.get_freeze_count(): it walks millions of objects
                    blocks.append(sys.getallocatedblocks())
                    if now - started < seconds / 2:
                        rss_half, blocks_half = rss[-1], blocks[-1]
                    sample_at += 30.0
        finally:
            poller.stop(timeout=30)
            dashboard.loop = None
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_started
    rss.append(current_rss_mb())
    blocks.append(sys.getallocatedblocks())
    frozen = gc.get_freeze_count()
    # What frozen cycles kept: garbage that only a collection of everything, thawed, finds.
    gc.unfreeze()
    leaked = gc.collect()
    if dashboard.collector.running:
        dashboard.collector.collect_young()  # frozen again, as it was
    figures = {
        "seconds": elapsed,
        "keys": len(waits),
        "max": max(waits, default=None),
        "p99": percentile(waits, 0.99) if waits else None,
        "median": statistics.median(waits) if waits else None,
        "over_target": sum(wait > TARGET_MS for wait in waits),
        "polls": poller.polls,
        "collections": len(collections.runs),
        "longest_collection": max((run[0] for run in collections.runs), default=0.0),
        "longest_collection_cpu": max((run[1] for run in collections.runs), default=0.0),
        "collection_ms": sum(run[0] for run in collections.runs),
        "found": sum(run[2] for run in collections.runs),
        # The part of a key's wait that was garbage collection: on a loaded machine the waits
        # themselves also count waits for a CPU, this does not.
        "gc_in_wait_max": max((collections.inside(*span) for span in spans), default=0.0),
        "keys_behind_gc": sum(collections.inside(*span) > 0 for span in spans),
        "longest_check": dashboard.collector.check_seconds * 1000,
        "longest_waits": [item.describe(collections) for item in slow],
        "load": os.getloadavg()[0],
        "cpu_share": cpu / elapsed,
        "rss_first": rss[0],
        "rss_last": rss[-1],
        "rss_growth": None if rss_half is None else rss[-1] - rss_half,  # over the run's second half
        "rss_half": rss_half,
        "frozen_last": frozen,
        "leaked": leaked,
        "blocks_first": blocks[0],
        "blocks_half": blocks_half,
        "blocks_last": blocks[-1],
        # Old snapshots freed by the collector's Releaser thread, outside the loop.
        "released": releaser.released - released_before,
        "release_cpu": releaser.busy_seconds - release_cpu_before,
        "release_slice_max": releaser.longest_slice * 1000,
    }
    log(f"keys: {figures}")
    return figures
