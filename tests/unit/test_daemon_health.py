"""The rise/fall state machine: falling, down, rising, up, suspension and flapping."""

from __future__ import annotations

from ipvsman.daemon import health
from ipvsman.daemon.health import CheckResult

OK = CheckResult(True, "", 1.0)
FAIL = CheckResult(False, "HTTP 503", 2.0)


def run(results, rise=3, fall=2, start=None):
    state = start or health.initial(rise, fall, now=0.0)
    seen = []
    for now, result in enumerate(results, start=1):
        state = health.observe(state, result, float(now))
        seen.append(state.state)
    return state, seen


def test_first_good_check_is_up_and_fall_failures_take_it_out():
    state, seen = run([OK, FAIL, FAIL, FAIL], fall=2)
    assert seen == ["up", "falling", "down", "down"]
    assert state.bad == 3 and state.good == 0 and not state.in_service
    assert state.since == 3.0  # down since the second failure, not the third
    assert state.last.reason == "HTTP 503" and state.last_check_at == 4.0


def test_rise_good_checks_bring_it_back_and_a_failure_while_rising_starts_over():
    down, _ = run([FAIL, FAIL], fall=2)
    assert down.state == "down"
    state, seen = run([OK, OK, FAIL, OK, OK, OK], rise=3, start=down)
    assert seen == ["rising", "rising", "down", "rising", "rising", "up"]
    assert state.in_service and state.good == 3


def test_an_unknown_server_stays_in_service_until_fall_failures():
    state = health.initial(3, 3, now=0.0)
    assert state.state == "unknown" and state.in_service
    state, seen = run([FAIL, FAIL, FAIL], fall=3, start=state)
    assert seen == ["falling", "falling", "down"]


def test_flapping_never_changes_service_with_rise_and_fall_above_one():
    up, _ = run([OK])
    state, seen = run([FAIL, OK] * 10, rise=2, fall=2, start=up)
    assert set(seen) == {"falling", "up"} and all(s in health.IN_SERVICE for s in seen)
    down, _ = run([FAIL, FAIL], fall=2)
    state, seen = run([OK, FAIL] * 10, rise=2, fall=2, start=down)
    assert set(seen) == {"rising", "down"} and not any(s in health.IN_SERVICE for s in seen)


def test_fall_one_and_rise_one_follow_every_result():
    state, seen = run([FAIL, OK, FAIL, OK], rise=1, fall=1)
    assert seen == ["down", "up", "down", "up"]


def test_suspended_is_checked_but_never_brought_in_and_leaves_by_the_checks_word():
    state = health.initial(2, 2, now=0.0, suspended=True)
    state, seen = run([OK, OK, OK], rise=2, start=state)
    assert seen == ["suspended"] * 3 and not state.in_service and state.good == 3
    assert health.suspend(state, False, now=9.0).state == "up"  # enough good checks already
    failing, _ = run([FAIL], start=health.initial(2, 2, 0.0, suspended=True))
    assert health.suspend(failing, False, now=9.0).state == "down"
    rising, _ = run([OK], rise=2, start=health.initial(2, 2, 0.0, suspended=True))
    assert health.suspend(rising, False, now=9.0).state == "rising"
    unchecked = health.suspend(health.initial(2, 2, 0.0, suspended=True), False, now=9.0)
    assert unchecked.state == "unknown" and unchecked.since == 9.0
    assert health.suspend(run([OK])[0], True, now=5.0).state == "suspended"
