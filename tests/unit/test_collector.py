"""The garbage collector schedule: automatic collection off, what polls build frozen, cycles still freed."""

import gc
import threading
import weakref

import pytest

from ipvsman import collector


@pytest.fixture(autouse=True)
def collector_on():
    gc.enable()
    yield
    gc.unfreeze()
    gc.enable()


def test_a_pause_turns_automatic_collection_off_and_back_on():
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still runs
    assert gc.isenabled()


def test_a_pause_leaves_the_collector_off_when_it_was_off():
    gc.disable()
    with collector.paused():
        pass
    assert not gc.isenabled()


def test_a_pause_ending_in_another_thread_does_not_end_this_one():
    inside, release = threading.Event(), threading.Event()

    def other():
        with collector.paused():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    with collector.paused():
        thread.start()
        assert inside.wait(5)
    assert not gc.isenabled()  # the other thread's pause is still on
    release.set()
    thread.join(5)
    assert gc.isenabled()


def test_a_running_schedule_keeps_automatic_collection_off_through_pauses():
    schedule = collector.Schedule()
    with schedule:
        assert not gc.isenabled()
        with collector.paused():  # a poll in the polling thread
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_schedule_started_during_a_pause_restores_the_collector_when_both_end():
    schedule = collector.Schedule()
    with collector.paused():
        schedule.start()
    assert not gc.isenabled()
    schedule.stop()
    assert gc.isenabled()


class Node:
    """Tracked by the collector, and weakly referable so a test can see when it is freed."""

    def __init__(self, other=None):
        self.other = other


def cycles(count: int) -> list[Node]:
    """`count` pairs of nodes that refer to each other: once dropped, only a collection frees them."""
    pairs = []
    for _ in range(count):
        first = Node()
        first.other = Node(first)
        pairs.append(first)
    return pairs


def test_what_a_poll_builds_is_frozen_yet_freed_when_the_next_one_replaces_it():
    with collector.Schedule():
        with collector.building_snapshot():
            snapshot = [Node() for _ in range(1000)]
        alive = weakref.ref(snapshot[0])
        unfrozen = gc.get_objects()
        assert not any(item is snapshot for item in unfrozen)  # no collection walks it again
        frozen = gc.get_freeze_count()
        assert frozen >= 1000
        del unfrozen, snapshot
        assert alive() is None  # reference counting does not care about freezing
        assert gc.get_freeze_count() <= frozen - 1000


def test_the_frozen_set_stays_the_size_of_what_is_alive_over_many_polls():
    with collector.Schedule():
        snapshot = None
        with collector.building_snapshot():
            snapshot = [Node() for _ in range(2000)]
        first = gc.get_freeze_count()
        for _ in range(50):
            with collector.building_snapshot():
                snapshot = [Node() for _ in range(2000)]
        assert gc.get_freeze_count() < first + 2000  # not 50 snapshots' worth
        assert len(snapshot) == 2000


def test_cycles_made_between_polls_are_collected_before_the_next_poll_freezes_them():
    with collector.Schedule() as schedule:
        garbage = cycles(100)
        gone = weakref.ref(garbage[0])
        del garbage
        assert gone() is not None  # the automatic collector is off
        with collector.building_snapshot():
            assert gone() is None
        assert schedule.found >= 200 and schedule.young_collections == 2  # start() and this poll


def test_without_a_schedule_a_poll_freezes_and_collects_nothing():
    garbage = cycles(10)
    gone = weakref.ref(garbage[0])
    gc.disable()
    del garbage
    with collector.building_snapshot():
        pass
    assert gone() is not None and gc.get_freeze_count() == 0
    gc.collect()


def test_stopping_the_schedule_thaws_what_it_froze():
    schedule = collector.Schedule()
    with schedule:
        with collector.building_snapshot():
            kept = cycles(100)
        assert gc.get_freeze_count() >= 200
    assert gc.get_freeze_count() == 0 and len(kept) == 100


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def checks(schedule: collector.Schedule, clock: Clock, count: int) -> list[float | None]:
    results = []
    for _ in range(count):
        clock.now += schedule.check_period
        results.append(schedule.collect_if_due())
    return results


def test_frozen_cycles_are_thawed_and_collected_once_the_frozen_floor_has_grown():
    clock = Clock()
    schedule = collector.Schedule(clock=clock, check_period=30.0, window=2, growth=0.1)
    assert schedule.collect_if_due() is None  # not running: never
    with schedule:
        assert schedule.collect_if_due() is None  # not a period yet
        checks(schedule, clock, 4)
        assert schedule.lowest is not None and schedule.collections == 0  # a steady floor: no full collection
        # Cycles alive when a poll froze them, dropped since: garbage no young collection sees.
        with collector.building_snapshot():
            garbage = cycles(max(1000, schedule.lowest // 4))
        gone = weakref.ref(garbage[0])
        del garbage
        checks(schedule, clock, 1)
        assert schedule.collections == 0  # one high count is not a floor (two snapshots alive, say)
        checks(schedule, clock, 1)
        assert schedule.collections == 1 and gone() is None and schedule.last_seconds > 0
        assert schedule.lowest is None and not schedule.blocks  # counted afresh from here
        checks(schedule, clock, 4)
        assert schedule.collections == 1


def test_the_dashboard_collects_only_when_no_key_came_within_a_second():
    from ipvsman.bench.memory import headless_options
    from ipvsman.ui.app import Dashboard
    from ipvsman.ui.audit import AuditLog

    dashboard = Dashboard(headless_options(), audit=AuditLog(None))
    dashboard.collector = collector.Schedule(clock=Clock(), check_period=0.0)
    with dashboard.collector:
        dashboard.top.keypress((100, 30), "down")
        assert dashboard.collect_garbage_if_idle() is None
        assert not dashboard.collector.blocks  # not even counted
        dashboard._last_key_at -= 1.5
        assert dashboard.collect_garbage_if_idle() is not None
        assert len(dashboard.collector.blocks) == 1


# -- the Releaser: old snapshots freed in a thread of their own, a slice at a time ------------------


class Part:
    """A weakly referable part of a released structure that notes which thread freed it."""

    freed_by: list[str] = []

    def __del__(self):
        Part.freed_by.append(threading.current_thread().name)


def snapshot_like(services: int = 2000) -> tuple:
    """A record holding collections of small records, as a Snapshot holds its services."""
    return ("record", [(Part(), [index] * 3) for index in range(services)], {index: Part() for index in range(300)})


def wait_until(condition, seconds: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def test_a_released_object_is_freed_in_the_releasers_thread_once_nothing_else_holds_it():
    releaser = collector.Releaser()
    releaser.start()
    try:
        Part.freed_by = []
        released = snapshot_like()
        shown = released  # a view still showing it
        first = weakref.ref(released[1][0][0])
        releaser.release(released)
        del released
        assert not wait_until(lambda: releaser.released, 0.6)  # held elsewhere: waits (rechecked every 0.25 s)
        assert first() is not None and releaser.pending() == 1
        del shown
        assert wait_until(lambda: releaser.released == 1)
        assert first() is None and releaser.pending() == 0
        assert len(Part.freed_by) == 2300 and set(Part.freed_by) == {"ipvsman-release"}
        assert releaser.freed >= 2300
    finally:
        releaser.stop()


def test_a_part_held_elsewhere_is_left_to_its_holder():
    releaser = collector.Releaser()
    releaser.start()
    try:
        released = snapshot_like(100)
        kept = released[2]  # the connection table a hidden view keeps, say
        releaser.release(released)
        del released
        assert wait_until(lambda: releaser.released == 1 and not releaser.busy)
        assert len(kept) == 300 and all(isinstance(part, Part) for part in kept.values())
    finally:
        releaser.stop()


def test_the_same_object_released_twice_is_freed_once():
    releaser = collector.Releaser()
    releaser.start()
    try:
        Part.freed_by = []
        released = snapshot_like(10)
        releaser.release(released)
        releaser.release(released)  # the polling thread's newest and the loop's shown one
        del released
        assert wait_until(lambda: releaser.released == 1 and not releaser.busy)
        assert len(Part.freed_by) == 310
    finally:
        releaser.stop()


def test_a_large_collection_goes_in_many_slices():
    releaser = collector.Releaser()
    releaser.start()
    try:
        releaser.release(("record", [[index, str(index)] for index in range(200_000)]))
        assert wait_until(lambda: releaser.released == 1 and not releaser.busy)
        # Slices start at FIRST_SLICE parts and at most double, up to LARGEST_SLICE: 200,000 take many.
        assert releaser.freed >= 200_000 and releaser.slices >= 200_000 // collector.LARGEST_SLICE
    finally:
        releaser.stop()


def test_objects_held_elsewhere_for_long_are_given_up_past_the_limit():
    releaser = collector.Releaser(recheck=0.01, limit=3)
    releaser.start()
    try:
        held = [snapshot_like(5) for _ in range(5)]
        for item in held:
            releaser.release(item)
        assert wait_until(lambda: releaser.given_up == 2 and releaser.pending() == 3)
        assert releaser.released == 0 and len(held) == 5  # nothing freed under its holder
    finally:
        releaser.stop()


def test_without_a_running_releaser_the_caller_frees_as_usual():
    releaser = collector.Releaser()
    released = snapshot_like(5)
    gone = weakref.ref(released[1][0][0])
    releaser.release(released)
    del released
    assert gone() is None and releaser.pending() == 0


def test_the_schedule_runs_its_releaser_while_it_runs():
    schedule = collector.Schedule()
    assert not schedule.releaser.running
    with schedule:
        assert schedule.releaser.running
        released = snapshot_like(5)
        gone = weakref.ref(released[1][0][0])
        schedule.release(released)
        del released
        assert wait_until(lambda: gone() is None)
    assert not schedule.releaser.running
