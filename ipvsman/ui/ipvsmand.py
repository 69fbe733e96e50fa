"""The dashboard's side of ipvsmand: its verdicts for the views, staleness in the header, and H (reload after y/n)."""

from __future__ import annotations

import os
from collections.abc import Callable
from types import MappingProxyType

from ipvsman.model import DestKey, Snapshot
from ipvsman.ui.audit import ATTEMPT, AuditLog, AuditLogError
from ipvsman.verdicts import (
    DEFAULT_PATH,
    NO_VERDICTS,
    VerdictReader,
    Verdicts,
    VerdictsError,
    demo_verdicts,
    reload_refusal,
    send_reload,
    verdict_drift,
)

EMPTY: MappingProxyType = MappingProxyType({})


class IpvsmandLink:
    """Holds the newest verdicts (read by a VerdictReader thread, handed over in the loop's thread),
    their drift against the snapshot shown, and says in one status line what goes wrong: a file
    that cannot be used, a daemon that stopped writing it. Never writes to ipvsmand: H sends SIGHUP."""

    def __init__(
        self,
        path: str | None,
        status,
        audit: AuditLog,
        clock: Callable[[], float],
        read_only_reason: Callable[[], str | None],
        process_of: Callable[[int], object] | None = None,
        kill: Callable[[int, int], None] = os.kill,
    ):
        self.path = path
        self.status = status
        self.audit = audit
        self.clock = clock
        self.read_only_reason = read_only_reason
        self.process_of = process_of
        self.kill = kill
        self.demo = False
        self.verdicts: Verdicts | None = None
        self.error: str | None = None
        self.drift = EMPTY
        self.reader: VerdictReader | None = None
        self._stale_said = False
        self._services: tuple = ()
        self._demo_basis: tuple | None = None  # (layout, weights) the demo's verdicts were made for

    @property
    def watched(self) -> bool:
        return self.path is not None or self.demo

    # -- where verdicts come from ----------------------------------------------------------------
    def use_demo(self) -> None:
        """The demo's made-up daemon: verdicts for its real servers with each snapshot, nothing read."""
        self.demo, self.path = True, None

    def start(self, loop) -> None:
        """Read the state file in a thread of its own (the default one when it exists and none was named)."""
        if self.demo:
            return
        if self.path is None and os.path.exists(DEFAULT_PATH):
            self.path = DEFAULT_PATH
        if self.path is None:
            return

        def hand_over(result):
            try:
                loop.call_from_thread(self.apply, result)
            except RuntimeError:
                pass  # the loop has stopped

        self.reader = VerdictReader(self.path, hand_over)
        self.reader.start()

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.stop()

    # -- in the loop's thread -------------------------------------------------------------------
    def apply(self, result: Verdicts | VerdictsError) -> None:
        """A read of the state file: its verdicts, or why there are none (said once per new reason)."""
        if isinstance(result, VerdictsError):
            message = str(result)
            if message != self.error:
                self.status.post(message, "warn", seconds=30.0)
            self.error, self.verdicts = message, None
        else:
            said = self.verdicts.errors if self.verdicts is not None else ()
            if result.errors and result.errors != said:  # a reload's refusals, once each time they change
                more = f" (+{len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
                self.status.post(f"ipvsmand kept its running topology: {result.errors[0]}{more}", "warn", seconds=30.0)
            self.error, self.verdicts = None, result
            self._stale_said = False
        self._work_out_drift()

    def follow(self, snapshot: Snapshot) -> None:
        """A new snapshot: the demo's verdicts made for it, the drift against it worked out."""
        self._services = snapshot.services
        if self.demo:
            # The same real servers at the same weights: the demo daemon's verdicts stand as they were.
            basis = (snapshot.layout, [dest.weight for service in snapshot.services for dest in service.dests])
            same = snapshot.layout is not None and basis == self._demo_basis and self.verdicts is not None
            self._demo_basis = basis
            self.verdicts = demo_verdicts(snapshot.services, snapshot.taken_at, self.verdicts if same else None)
        self._work_out_drift()

    def _work_out_drift(self) -> None:
        self.drift = MappingProxyType(verdict_drift(self.verdicts, self._services)) if self.verdicts else EMPTY

    def shown(self) -> Verdicts | None:
        """What views 1-3 show: the verdicts, or an empty set while the file cannot be used (the
        columns stay, with '-': the operator sees the daemon is watched but says nothing); None unwatched."""
        if self.verdicts is not None or not self.watched:
            return self.verdicts
        return NO_VERDICTS

    def header_words(self, now: float) -> list[tuple[str, str]]:
        """The header's word, when there is one: IPVSMAND 41s OLD, IPVSMAND ? (no usable file), IPVSMAND DRIFT 2."""
        if not self.watched:
            return []
        if self.verdicts is None:
            return [("header.error", "IPVSMAND ?")]
        if self.verdicts.stale(now):
            return [("header.error", f"IPVSMAND {self.verdicts.age(now):.0f}s OLD")]
        if self.drift:
            return [("header.drift", f"IPVSMAND DRIFT {len(self.drift)}")]
        return []

    def tick(self, now: float) -> None:
        """Once a second: say it in the status line when the file goes stale."""
        verdicts = self.verdicts
        if verdicts is None or self.demo:
            return
        line = verdicts.stale_line(now)
        if line is not None and not self._stale_said:
            self.status.post(line, "error")
            self._stale_said = True

    def details(self, key: DestKey) -> list[str]:
        """Lines for the `i` overlay of a real server."""
        if not self.watched:
            return []
        verdict = self.verdicts.by_dest.get(key) if self.verdicts is not None else None
        if verdict is None:
            why = self.error or "its state file names no such real server"
            return [f"ipvsmand: {why}"]
        lines = [f"ipvsmand: {verdict.describe()} ({verdict.check_text()}, {verdict.action} on failure)"]
        if key in self.drift:
            lines.append(f"DRIFT: {self.drift[key]}")
        return lines

    # -- H: reload ---------------------------------------------------------------------------------
    def ask_reload(self) -> tuple[str, str] | None:
        """The y/n question of H (question, details), or None after saying in one line why not."""
        refusal = self._refusal()
        if refusal is not None:
            self.status.post(refusal, "warn")
            return None
        verdicts = self.verdicts
        question = f"send SIGHUP to ipvsmand (pid {verdicts.pid}) to reload {verdicts.topology}? y/n"
        details = "ipvsmand applies the topology file again; a line that fails to parse leaves it running as it is"
        return question, details

    def reload(self) -> bool:
        """`y`: look again, log, send SIGHUP; True when it was sent."""
        refusal = self._refusal()
        if refusal is not None:
            self.status.post(refusal, "warn")
            return False
        pid, topology = self.verdicts.pid, self.verdicts.topology
        try:
            self.audit.record_reload(pid, topology, ATTEMPT)
        except AuditLogError as exc:
            self.status.post(f"ipvsmand not reloaded: {exc}", "error")
            return False
        try:
            message, outcome, level = send_reload(pid, self.kill), "ok", "info"
        except OSError as exc:
            reason = exc.strerror or str(exc)
            message, outcome, level = f"reload ipvsmand (pid {pid}): {reason}", f"refused: {reason}", "error"
        try:
            self.audit.record_reload(pid, topology, outcome)
        except AuditLogError as exc:
            message += f" ({exc}: not logged)"
        self.status.post(message, level)
        return outcome == "ok"

    def _refusal(self) -> str | None:
        reason = self.read_only_reason()
        if reason:
            return f"reload ipvsmand disabled: {reason}"
        if self.demo:
            return "reload ipvsmand: not in the demo (its ipvsmand is made up)"
        if self.verdicts is None:
            if self.path is None:
                return "reload ipvsmand: no state file watched (--ipvsmand-state PATH)"
            return f"reload ipvsmand: {self.error or 'its state file is not read yet'}"
        return reload_refusal(self.verdicts, self.process_of)
