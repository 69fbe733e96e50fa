"""The sync probe's bookkeeping: the marked probe connections, and per backup their delay and loss over the last minute."""

from __future__ import annotations

import ipaddress
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ipvsman.model import Connection

WINDOW = 60.0  # seconds of probes the figures cover ("the last minute")
STOPPED_AFTER = 3  # consecutive probes a backup looked for and lacked: it has stopped receiving
WATCH_WAIT = 3.0  # seconds after its send a probe must be in a backup's table, or it is lost (the sync test's wait)
# Seconds a backup looks once asked. It is asked as the master is, so that it already looks when the
# probe arrives; the send may leave a while after that (a busy master), and the look must still
# reach WATCH_WAIT past it for a miss to count as a loss.
LOOK_FOR = 2 * WATCH_WAIT
MIN_PERIOD, MAX_PERIOD = 1.0, 60.0  # --sync-probe's bounds: every backup looks up each probe in its table
MIN_TIMEOUT = 10  # seconds a probe entry lives on a backup at least (TCP CLOSE's own timeout)

# TEST-NET-2, never a real client, and not the sync test's TEST-NET-1: a probe and a test entry
# cannot be taken for each other.
PROBE_NET = ipaddress.IPv4Network("198.51.100.0/24")
PROBE_VIRTUAL = str(PROBE_NET[254])  # no service: the backups install the entry bound to no real server
PROBE_DEST = str(PROBE_NET[253])
# CLOSE: an inactive entry, and its default timeout is 10 s, so that even sync protocol v0, which
# carries no timeout, lets probes expire soon.
PROBE_STATE = "CLOSE"


# -- the probe connections -----------------------------------------------------------------------------


def probe_client(series: int) -> tuple[str, int]:
    """The client address and port of every probe of a series (one per dashboard).

    The kernel hashes a connection by protocol, client address and client port only, so every
    probe of a series sits in one bucket of a backup's table: a look-up stops soon after it.
    """
    return str(PROBE_NET[1 + series % 250]), 1024 + (series // 250) % 64000


def probe_port(seq: int) -> int:
    """The virtual port that tells the probes of a series apart: 1-65535, from seq (1, 2, ...)."""
    return 1 + (seq - 1) % 65535


def probe_timeout(period: float, look_for: float = LOOK_FOR) -> int:
    """Seconds a probe entry lives on the backups: past every look for it, and past the next
    probe's, so that the newest entry of the series marks its bucket; not much longer."""
    return max(MIN_TIMEOUT, math.ceil(period + 2 * look_for) + 5)


def probe_connection(series: int, seq: int, timeout: int) -> Connection:
    """Probe `seq` of `series` as a connection entry, for the sync sender."""
    client, client_port = probe_client(series)
    port = probe_port(seq)
    return Connection("TCP", client, client_port, PROBE_VIRTUAL, port, PROBE_DEST, port, PROBE_STATE, timeout)


def proc_prefix(series: int) -> bytes:
    """How every /proc/net/ip_vs_conn line of the series begins, up to its virtual port
    ("%-3s %08X %04X %08X %04X" in ip_vs_conn.c): the next 4 characters are that port in hex."""
    client, client_port = probe_client(series)
    virtual = int(ipaddress.IPv4Address(PROBE_VIRTUAL))
    return f"TCP {int(ipaddress.IPv4Address(client)):08X} {client_port:04X} {virtual:08X} ".encode()


# -- the figures ----------------------------------------------------------------------------------------

ARRIVED, LOST, UNKNOWN = "arrived", "lost", "unknown"


@dataclass
class _Round:
    """One probe: sent by `master`, looked for by each of `backups`."""

    seq: int
    started_at: float  # the dashboard's clock
    master: str
    backups: tuple[str, ...]
    sent_at: float | None = None  # the master's clock, just before the send
    send_error: str | None = None
    # backup -> (ARRIVED, found_at) | (LOST, (first look, last look) or None) | (UNKNOWN, reason)
    outcomes: dict[str, tuple[str, object]] = field(default_factory=dict)

    @property
    def sent(self) -> bool:
        return self.sent_at is not None and self.send_error is None


@dataclass(frozen=True)
class BackupFigures:
    """One backup over the window: how many probes it found, how late, how many it lacked."""

    node: str
    arrived: int
    lost: int
    pending: int  # sent, not answered for yet
    median: float | None  # seconds from the send to the look-up that found it
    worst: float | None
    stopped: bool  # of the probes it found or lacked, the newest STOPPED_AFTER were all lacked
    note: str | None = None  # why its newest probe counts neither way (not asked, not looked for long enough)

    @property
    def checked(self) -> int:
        return self.arrived + self.lost

    @property
    def loss(self) -> float | None:
        return self.lost / self.checked if self.checked else None


@dataclass(frozen=True)
class ProbeSummary:
    """The probe over the last window, for view 6 and the header: immutable, read in the loop's thread."""

    period: float
    window: float
    master: str | None  # who sent the newest probe
    sent: int  # probes that left the master in the window
    send_failures: int
    last_send_error: str | None
    note: str | None  # why no probe went out the last time (no single sync master, no backup)
    backups: tuple[BackupFigures, ...] = ()

    @property
    def stopped(self) -> tuple[str, ...]:
        return tuple(figures.node for figures in self.backups if figures.stopped)


class ProbeTracker:
    """What each probe became: sent or not by the master, found or lacked by each backup.

    Answers come in any order (a backup may report its find before the master reports the send);
    a round's figures count once its send is known. No I/O and no threads: callers lock.
    """

    def __init__(self, period: float, window: float = WINDOW, stopped_after: int = STOPPED_AFTER,
                 wait: float = WATCH_WAIT, timeout: float | None = None):  # fmt: skip
        self.period = period
        self.window = window
        self.stopped_after = stopped_after
        self.wait = wait  # a probe not found this long after its send is lost
        self.timeout = probe_timeout(period) if timeout is None else timeout  # how long it lives on the backups
        self._rounds: dict[int, _Round] = {}
        self._seq = 0
        self._note: str | None = None
        # Rounds are kept for the window, and long enough to tell a stop at long periods.
        self._keep = max(window, stopped_after * period) + 2 * LOOK_FOR + period

    def start_round(self, now: float, master: str, backups: Sequence[str]) -> int:
        """A new probe from `master` to `backups`: its seq, which the probe connection is made from."""
        self._seq += 1
        self._rounds[self._seq] = _Round(self._seq, now, master, tuple(backups))
        self._note = None
        for seq in [seq for seq, found in self._rounds.items() if found.started_at < now - self._keep]:
            del self._rounds[seq]
        return self._seq

    def no_round(self, reason: str) -> None:
        """No probe could go out this period, for `reason` (one line)."""
        self._note = reason

    def sent(self, seq: int, sent_at: float) -> None:
        if seq in self._rounds:
            self._rounds[seq].sent_at = sent_at

    def send_failed(self, seq: int, reason: str) -> None:
        if seq in self._rounds:
            self._rounds[seq].send_error = reason

    def arrived(self, seq: int, backup: str, found_at: float) -> None:
        self._outcome(seq, backup, ARRIVED, found_at)

    def lost(self, seq: int, backup: str, looked: tuple[float, float] | None = None) -> None:
        """The backup did not find it; `looked`: when its first and its last look-up began (its clock)."""
        self._outcome(seq, backup, LOST, looked)

    def unknown(self, seq: int, backup: str, reason: str) -> None:
        """The backup could not be asked or did not answer: neither an arrival nor a loss."""
        self._outcome(seq, backup, UNKNOWN, reason)

    def _outcome(self, seq: int, backup: str, kind: str, detail) -> None:
        found = self._rounds.get(seq)
        if found is not None and backup in found.backups:
            found.outcomes[backup] = (kind, detail)

    def summary(self, now: float) -> ProbeSummary:
        rounds = sorted(self._rounds.values(), key=lambda r: r.seq)
        recent = [r for r in rounds if r.started_at > now - self.window]
        failures = [r for r in recent if r.send_error is not None]
        newest_failure = next((r.send_error for r in reversed(rounds) if r.send_error is not None), None)
        names: dict[str, None] = {}
        for found in rounds:
            names.update(dict.fromkeys(found.backups))
        figures = tuple(self._backup(name, rounds, recent) for name in names)
        master = rounds[-1].master if rounds else None
        return ProbeSummary(self.period, self.window, master, sum(1 for r in recent if r.sent), len(failures),
                            newest_failure if failures else None, self._note, figures)  # fmt: skip

    def _verdict(self, found: _Round, name: str) -> tuple[str | None, object]:
        """What probe `found` became for backup `name`: (ARRIVED, delay), (LOST, None), (UNKNOWN,
        reason), or (None, None) while it is not known yet."""
        kind, detail = found.outcomes.get(name, (None, None))
        if kind == UNKNOWN:
            return kind, detail
        if not found.sent or kind is None:
            return None, None
        if kind == ARRIVED:
            # The nodes' clocks are compared here: a backup a little behind the master would show
            # less than nothing.
            return kind, max(0.0, detail - found.sent_at)
        if detail is not None:
            first, last = detail
            # A miss says something only if the backup looked while the probe should have been
            # there: from `wait` after the send until it expired.
            if last < found.sent_at + self.wait:
                after = max(0.0, last - found.sent_at)
                return UNKNOWN, f"probe {found.seq}: looked for only {after:.1f} s after its send"
            if first >= found.sent_at + self.timeout:
                return UNKNOWN, f"probe {found.seq}: first looked for after it expired"
        return LOST, None

    def _backup(self, name: str, rounds: Iterable[_Round], recent: Sequence[_Round]) -> BackupFigures:
        delays, lost, pending, note = [], 0, 0, None
        for found in recent:
            if name not in found.backups or found.send_error is not None:
                continue
            kind, detail = self._verdict(found, name)
            if kind == UNKNOWN:
                note = detail  # kept while it is the newest word from the backup
            elif kind is None:
                pending += 1
            elif kind == ARRIVED:
                delays.append(detail)
                note = None
            else:
                lost += 1
                note = None
        verdicts = [self._verdict(found, name)[0] for found in rounds if name in found.backups]
        decided = [kind for kind in verdicts if kind in (ARRIVED, LOST)]
        stopped = len(decided) >= self.stopped_after and all(kind == LOST for kind in decided[-self.stopped_after:])
        return BackupFigures(name, len(delays), lost, pending, statistics.median(delays) if delays else None,
                             max(delays) if delays else None, stopped, note)  # fmt: skip


def format_delay(seconds: float | None) -> str:
    """0.0012 -> "1.2 ms", 0.25 -> "250 ms", 2.5 -> "2.5 s"."""
    if seconds is None:
        return "-"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"
