"""The guided drain: after `0`, a real server's connections counted down to empty, with an estimate and warnings."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass

from ipvsman.model import Dest, DestKey, Snapshot, join_host_port
from ipvsman.ui.audit import AuditLog, AuditLogError
from ipvsman.ui.widgets import fmt_count, fmt_duration

WINDOW = 60.0  # seconds of counts the estimate is drawn from
ESTIMATE_AFTER = 5.0  # seconds of counts before an estimate is given
STUCK_AFTER = 30.0  # seconds without decline before the drain is said not to empty
LONG_DRAIN = 3600.0  # an estimate past this is a warning too

DRAINING, EMPTY, STUCK = "draining", "empty", "stuck"


@dataclass(frozen=True, slots=True)
class DrainSample:
    at: float
    active: int
    inactive: int
    persistent: int

    @property
    def total(self) -> int:
        return self.active + self.inactive + self.persistent


@dataclass(frozen=True, slots=True)
class DrainStatus:
    """Where one drain stands: its newest counts, phase, estimate and warning."""

    key: DestKey
    restore_weight: int  # what `0` gives back
    started_at: float
    active: int
    inactive: int
    persistent: int
    phase: str  # DRAINING, EMPTY or STUCK
    eta: float | None = None  # seconds until empty, by the last minute's decline; None: not known
    warning: str = ""  # why it will not empty (STUCK), or takes very long
    empty_since: float | None = None

    @property
    def total(self) -> int:
        return self.active + self.inactive + self.persistent

    def counts_text(self) -> str:
        return (f"{fmt_count(self.active)} active, {fmt_count(self.inactive)} inactive, "
                f"{fmt_count(self.persistent)} persistent")  # fmt: skip

    def describe(self) -> str:
        """One line for view 3 and the status bar."""
        if self.phase == EMPTY:
            return f"drained: empty; x removes it, 0 restores weight {self.restore_weight}"
        text = f"draining: {self.counts_text()}"
        if self.phase == STUCK:
            return f"{text}; will not empty: {self.warning}"
        if self.eta is not None:
            text += f"; empty in ~{fmt_duration(self.eta)}"
        else:
            text += "; estimating"
        return text + (f"; {self.warning}" if self.warning else "")

    @property
    def word(self) -> str:
        """DRAIN, EMPTY or STUCK: view 2's state column."""
        return {EMPTY: "EMPTY", STUCK: "STUCK"}.get(self.phase, "DRAIN")


def _slope(samples: list[DrainSample]) -> float:
    """Least-squares change of the total per second (negative while it declines)."""
    count = len(samples)
    mean_t = sum(s.at for s in samples) / count
    mean_y = sum(s.total for s in samples) / count
    spread = sum((s.at - mean_t) ** 2 for s in samples)
    if spread == 0:
        return 0.0
    return sum((s.at - mean_t) * (s.total - mean_y) for s in samples) / spread


def _why_stuck(samples: list[DrainSample]) -> str:
    first, last = samples[0], samples[-1]
    if last.persistent and last.persistent >= first.persistent:
        return "persistence templates are being renewed (clients keep coming back within the persistence timeout)"
    if last.active and last.active >= first.active:
        return "active connections are not ending (long-lived or reused connections)"
    return "connections are not declining (new ones still arrive)"


class DrainTracker:
    """Counts of the drained real servers over time: fed each snapshot's counts, it answers per
    real server the estimate, the warning and whether it is empty. Pure: no terminal, no I/O."""

    def __init__(self, window: float = WINDOW, stuck_after: float = STUCK_AFTER):
        self.window = window
        self.stuck_after = stuck_after
        self._samples: dict[DestKey, collections.deque[DrainSample]] = {}
        self._started: dict[DestKey, tuple[float, int]] = {}  # key -> (started at, restore weight)
        self._empty_since: dict[DestKey, float] = {}
        self.statuses: dict[DestKey, DrainStatus] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._started

    def start(self, key: DestKey, restore_weight: int, now: float) -> None:
        self._started[key] = (now, restore_weight)
        self._samples[key] = collections.deque()

    def stop(self, key: DestKey) -> DrainStatus | None:
        self._started.pop(key, None)
        self._samples.pop(key, None)
        self._empty_since.pop(key, None)
        return self.statuses.pop(key, None)

    def observe(self, key: DestKey, dest: Dest, now: float) -> DrainStatus:
        """This poll's counts of a tracked real server; its status afterwards."""
        samples = self._samples[key]
        if samples and samples[-1].at >= now:
            samples.pop()  # the same poll seen twice (a paused snapshot): the newest counts win
        samples.append(DrainSample(now, dest.active_conns, dest.inactive_conns, dest.persist_conns))
        while len(samples) > 2 and now - samples[0].at > self.window:
            samples.popleft()
        started_at, restore = self._started[key]
        last = samples[-1]
        kept = list(samples)
        span = last.at - kept[0].at
        eta, warning, phase = None, "", DRAINING
        if last.total == 0:
            phase = EMPTY
            self._empty_since.setdefault(key, now)
        else:
            self._empty_since.pop(key, None)
            slope = _slope(kept) if span >= ESTIMATE_AFTER else 0.0
            if slope < 0:
                eta = last.total / -slope
                if eta > LONG_DRAIN:
                    warning = f"at this pace it takes {fmt_duration(eta)}"
            elif span >= self.stuck_after:
                phase, warning = STUCK, _why_stuck(kept)
        status = DrainStatus(key, restore, started_at, last.active, last.inactive, last.persistent, phase, eta,
                             warning, self._empty_since.get(key))  # fmt: skip
        self.statuses[key] = status
        return status


class Drains:
    """The dashboard's side of the guided drain: follows Changes.drained through the snapshots, and
    says each step (started, will not empty, empty with its offer, ended) in the status line and the
    audit log."""

    def __init__(self, audit: AuditLog, status, tracker: DrainTracker | None = None):
        self.audit = audit
        self.status = status
        self.tracker = tracker or DrainTracker()
        self._phases: dict[DestKey, str] = {}
        self._unlogged_said = False

    @property
    def statuses(self) -> Mapping[DestKey, DrainStatus]:
        return self.tracker.statuses

    def follow(self, snapshot: Snapshot, drained: Mapping[DestKey, int]) -> None:
        """A new snapshot: start tracking what `0` drained, end what was restored or removed, and
        say what changed."""
        now = snapshot.taken_at
        for key in list(self._phases):
            if key not in drained:
                dest = snapshot.find_dest(key)
                ended = "removed" if dest is None else f"restored to weight {dest.weight}"
                self._end(key, ended)
        for key, restore in drained.items():
            dest = snapshot.find_dest(key)
            if dest is None or dest.weight != 0:
                continue  # not drained in the kernel yet (the change is on its way)
            if key not in self.tracker:
                self.tracker.start(key, restore, now)
                self._phases[key] = ""
            status = self.tracker.observe(key, dest, now)
            if status.phase != self._phases[key]:
                self._step(status, self._phases[key])
                self._phases[key] = status.phase

    def _step(self, status: DrainStatus, before: str) -> None:
        key, server = status.key, join_host_port(status.key.address, status.key.port)
        if before == "":
            self._log(key, "started", f"{status.counts_text()}; restore weight {status.restore_weight}")
            if status.phase == DRAINING:
                return
        if status.phase == EMPTY:
            self._log(key, "empty", f"x removes it, 0 restores weight {status.restore_weight}")
            self.status.post(f"{server} of {key.service} is drained empty: x removes it, "
                             f"0 restores weight {status.restore_weight}", "warn", seconds=60.0)  # fmt: skip
        elif status.phase == STUCK:
            self._log(key, "will not empty", f"{status.counts_text()}; {status.warning}")
            self.status.post(f"{server} of {key.service} will not empty: {status.warning}", "warn", seconds=30.0)
        elif before in (EMPTY, STUCK):
            self._log(key, "draining again", status.counts_text())

    def _end(self, key: DestKey, how: str) -> None:
        self._phases.pop(key, None)
        status = self.tracker.stop(key)
        counts = f"; {status.counts_text()} left" if status is not None and status.phase != EMPTY else ""
        self._log(key, "ended", how + counts)

    def _log(self, key: DestKey, step: str, detail: str) -> None:
        try:
            self.audit.record_drain(key, step, detail)
        except AuditLogError as exc:
            if not self._unlogged_said:  # said once, not on every step of every drain
                self.status.post(f"{exc}: drain steps not logged", "warn")
                self._unlogged_said = True
