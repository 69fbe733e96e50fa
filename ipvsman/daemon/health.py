"""The rise/fall state machine of one real server's health: pure values, no I/O and no clock."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

UP = "up"  # in service
FALLING = "falling"  # failed checks < fall, still in service
DOWN = "down"  # failed `fall` times: taken out
RISING = "rising"  # taken out, good checks < rise
SUSPENDED = "suspended"  # the topology holds it out (configured weight 0): checked, never brought in
UNKNOWN = "unknown"  # not checked yet: left in service until a verdict
STATES = (UP, DOWN, SUSPENDED, RISING, FALLING, UNKNOWN)
IN_SERVICE = frozenset((UP, FALLING, UNKNOWN))


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one check found: ok, why not (one line), and how long it took (None: no answer)."""

    ok: bool
    reason: str = ""
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """A real server's health after the checks so far."""

    rise: int
    fall: int
    state: str = UNKNOWN
    since: float = 0.0  # when the state began
    good: int = 0  # consecutive good checks
    bad: int = 0  # consecutive failed checks
    last: CheckResult | None = None
    last_check_at: float | None = None

    @property
    def in_service(self) -> bool:
        return self.state in IN_SERVICE

    def thresholds(self, rise: int, fall: int) -> Health:
        """The same history under new rise/fall counts (a reload changed them)."""
        return dataclasses.replace(self, rise=rise, fall=fall)


def initial(rise: int, fall: int, now: float, suspended: bool = False) -> Health:
    return Health(rise=rise, fall=fall, state=SUSPENDED if suspended else UNKNOWN, since=now)


def suspend(health: Health, suspended: bool, now: float) -> Health:
    """Enter or leave SUSPENDED as the configured weight becomes 0 or not."""
    if suspended and health.state != SUSPENDED:
        return dataclasses.replace(health, state=SUSPENDED, since=now)
    if not suspended and health.state == SUSPENDED:
        # Brought in by the topology: only on the checks' word, as if it had been down.
        if health.last is None:
            state = UNKNOWN
        elif health.good >= health.rise:
            state = UP
        else:
            state = RISING if health.good else DOWN
        return dataclasses.replace(health, state=state, since=now)
    return health


def observe(health: Health, result: CheckResult, now: float) -> Health:
    """The health after one more check result."""
    good = health.good + 1 if result.ok else 0
    bad = 0 if result.ok else health.bad + 1
    state = _next_state(health, result.ok, good, bad)
    since = health.since if state == health.state else now
    return Health(health.rise, health.fall, state, since, good, bad, result, now)


def _next_state(health: Health, ok: bool, good: int, bad: int) -> str:
    state = health.state
    if state == SUSPENDED:
        return SUSPENDED
    if state in IN_SERVICE:
        if ok:
            return UP
        return DOWN if bad >= health.fall else FALLING
    # out of service: DOWN or RISING
    if not ok:
        return DOWN
    return UP if good >= health.rise else RISING
