"""The garbage collector schedule: automatic collection off while a Schedule runs or a pause lasts, and back on after."""

import gc
import threading

import pytest

from ipvsman import collector


@pytest.fixture(autouse=True)
def collector_on():
    gc.enable()
    yield
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


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_full_collections_come_once_the_period_has_passed_and_find_cycles():
    clock = Clock()
    schedule = collector.Schedule(clock=clock, share=0.002, min_period=60.0)
    assert schedule.collect_if_due() is None  # not running: never
    with schedule:

        class Node:
            pass

        for _ in range(100):  # cycles nobody refers to: only a collection frees them
            first, second = Node(), Node()
            first.other, second.other = second, first
        del first, second
        clock.now += 59.9
        assert schedule.collect_if_due() is None
        clock.now += 0.2
        seconds = schedule.collect_if_due()
        assert seconds is not None and seconds >= 0
        assert schedule.collections == 1 and schedule.found >= 200
        assert schedule.collect_if_due() is None  # the next one is a period away


def test_a_slow_collection_stretches_the_period_to_keep_its_share():
    schedule = collector.Schedule(share=0.002, min_period=60.0)
    schedule.last_seconds = 0.8  # 10,000 services
    assert schedule.period == pytest.approx(400.0)
    schedule.last_seconds = 0.01
    assert schedule.period == 60.0


def test_the_dashboard_collects_only_when_no_key_came_within_a_second():
    from ipvsman.bench.memory import headless_options
    from ipvsman.ui.app import Dashboard
    from ipvsman.ui.audit import AuditLog

    dashboard = Dashboard(headless_options(), audit=AuditLog(None))
    dashboard.collector = collector.Schedule(clock=Clock(), min_period=0.0)
    with dashboard.collector:
        dashboard.top.keypress((100, 30), "down")
        assert dashboard.collect_garbage_if_idle() is None
        dashboard._last_key_at -= 1.5
        assert dashboard.collect_garbage_if_idle() is not None
        assert dashboard.collector.collections == 1
