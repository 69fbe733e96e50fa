"""The dashboard's changes: weights (+, -, 0 drain), real servers added and removed, their pending state and audit lines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ipvsman.drift import dests_to_add, reload_warning
from ipvsman.model import FORWARD_LABELS, WEIGHT_MAX, DestKey, ServiceKey, Snapshot, join_host_port
from ipvsman.poller import AddDest, Command, CommandResult, RemoveDest, SetWeight
from ipvsman.topology import ConfiguredDest
from ipvsman.ui.audit import ATTEMPT, AuditLog, AuditLogError
from ipvsman.ui.views import server_label, service_title
from ipvsman.ui.widgets import fmt_count


def is_missing(selection) -> bool:
    """Whether a row stands for a configured service or real server the kernel lacks."""
    return isinstance(selection, tuple) and len(selection) == 2 and selection[0] == "missing"


@dataclass
class PendingChange:
    old: int
    new: int
    outstanding: int = 1  # commands sent and not answered yet
    warning: str | None = None  # keepalived's next reload undoes it (said again when confirmed)


@dataclass(frozen=True)
class AddOffer:
    """What `a` offers: the service, (label, real server) entries, and the entry to select first."""

    service: ServiceKey
    title: str
    entries: tuple[tuple[str, ConfiguredDest], ...]
    preselect: ConfiguredDest | None = None


@dataclass(frozen=True)
class Removal:
    """What `x` asks before removing a real server."""

    key: DestKey
    question: str
    details: str


class Changes:
    """Turns the operator's choices into poller commands, one audit line before each and one after.

    A change whose attempt cannot be written to the audit log is refused with that reason, never
    made unlogged. Everything reaches the operator through `status` (post, set_pending); the rest
    comes from callables so that the dashboard's current values are read at the time of the change.
    """

    def __init__(
        self,
        audit: AuditLog,
        status,
        *,
        poller: Callable[[], object | None],
        snapshot: Callable[[], Snapshot | None],
        configs: Callable[[], object],
        read_only_reason: Callable[[], str | None],
        names: Callable[[], object] | None = None,
    ):
        self.audit = audit
        self.status = status
        self._poller = poller
        self._snapshot = snapshot
        self._configs = configs
        self._read_only_reason = read_only_reason
        self._names = names
        self.pending: dict[DestKey, PendingChange] = {}
        self.drained: dict[DestKey, int] = {}  # weights before `0`, for `0` to restore

    def shown_pending(self) -> dict[DestKey, tuple[int, int]]:
        """(old, new) of each change waiting for confirmation, as the views mark it."""
        return {key: (change.old, change.new) for key, change in self.pending.items()}

    # -- submitting -------------------------------------------------------------------------------
    def _submit(self, command: Command, attempt: Callable[[], None], refused: str) -> bool:
        """Log the attempt, then hand the command to the poller; False after saying why not."""
        poller = self._poller()
        if poller is None:
            self.status.post(f"{command.describe()}: not connected to a poller", "error")
            return False
        try:
            attempt()
        except AuditLogError as exc:
            self.status.post(f"{refused}: {exc}", "error")
            return False
        poller.submit(command)
        return True

    # -- weights ----------------------------------------------------------------------------------
    def weight_target(self, selection, action: str) -> tuple[DestKey, int] | None:
        """The selected real server and its weight (as last requested), or None after saying why not."""
        key = selection if isinstance(selection, DestKey) else None
        if key is None and is_missing(selection):
            self.status.post(f"{action}: {selection[1]} is not in the kernel", "warn")
            return None
        if key is None:
            self.status.post(f"{action}: select a real server first (views 2 and 3 list them)", "warn")
            return None
        reason = self._read_only_reason()
        if reason:
            self.status.post(f"{action} disabled: {reason}", "warn")
            return None
        snapshot = self._snapshot()
        dest = snapshot.find_dest(key) if snapshot else None
        if dest is None:
            self.status.post(f"{action}: {key} is no longer there", "warn")
            return None
        change = self.pending.get(key)
        return key, change.new if change else dest.weight

    def set_weight(self, key: DestKey, old: int, new: int) -> bool:
        """Submit a weight change (logged first); True when it went to the poller."""
        command = SetWeight(key, old, new)
        if not self._submit(
            command, lambda: self.audit.record(key, old, new, ATTEMPT), f"weight of {key} not changed"
        ):
            return False
        change = self.pending.get(key)
        configs = self._configs()
        warning = reload_warning(getattr(configs, "keepalived", None), key, new)
        if change is None:
            self.pending[key] = PendingChange(old, new, warning=warning)
        else:
            change.new = new
            change.outstanding += 1
            change.warning = warning
        pending = self.pending[key]
        self.status.set_pending(key, f"weight of {key} {pending.old} -> {pending.new}")
        if warning:
            self.status.post(warning, "warn")
        return True

    def change_weight(self, selection, step: int) -> bool:
        target = self.weight_target(selection, "weight change")
        if target is None:
            return False
        key, current = target
        new = max(0, min(WEIGHT_MAX, current + step))
        if new == current:
            self.status.post(f"weight of {key} is already {current} (0..{WEIGHT_MAX})", "warn")
            return False
        return self.set_weight(key, current, new)

    def toggle_drain(self, selection) -> bool:
        target = self.weight_target(selection, "drain")
        if target is None:
            return False
        key, current = target
        if current > 0:
            if not self.set_weight(key, current, 0):
                return False
            self.drained[key] = current  # only once it is on its way: a refused drain has nothing to restore
            return True
        if key in self.drained:
            return self.set_weight(key, 0, self.drained[key])
        self.status.post(f"{key} has weight 0 but was not drained here: nothing to restore (+ raises it)", "warn")
        return False

    # -- real servers from the topology: add (a) and remove (x) -----------------------------------
    def offer_add(self, selection) -> AddOffer | None:
        """`a`: the real servers the topology lists for the selected service and the kernel lacks."""
        key = _service_of(selection)
        if key is None:
            self.status.post("add: select a service or one of its real servers first (views 1-3)", "warn")
            return None
        reason = self._read_only_reason()
        if reason:
            self.status.post(f"add disabled: {reason}", "warn")
            return None
        topology = getattr(self._configs(), "topology", None)
        if topology is None:
            self.status.post("add: no topology file lists real servers to add (--topology FILE)", "warn")
            return None
        snapshot = self._snapshot()
        kernel = snapshot.find_service(key) if snapshot is not None else None
        if kernel is None:
            self.status.post(f"add: {key} is not in the kernel (ipvsman adds real servers, not services)", "warn")
            return None
        candidates = dests_to_add(topology, key, kernel)
        if not candidates:
            if topology.find_service(key) is None:
                self.status.post(f"add: the topology does not list {key}", "warn")
            else:
                self.status.post(f"add: every real server the topology lists for {key} is in the kernel", "warn")
            return None
        names = self._names() if self._names is not None else None
        entries = tuple((self._candidate_label(key, dest, names), dest) for dest in candidates)
        preselect = None
        if is_missing(selection) and isinstance(selection[1], DestKey):  # a MISSING row: that one
            wanted = (selection[1].address, selection[1].port)
            preselect = next((d for d in candidates if (d.address, d.port) == wanted), None)
        title = f"Add to {service_title(key, names) if names is not None else key}"
        return AddOffer(key, title, entries, preselect)

    @staticmethod
    def _candidate_label(key: ServiceKey, dest: ConfiguredDest, names) -> str:
        dest_key = DestKey(key, dest.address, dest.port)
        server = server_label(dest_key, names) if names is not None else join_host_port(dest.address, dest.port)
        method = FORWARD_LABELS.get(dest.forward, dest.forward)
        return f"{server}  weight {dest.weight}  {method}"

    def add(self, key: ServiceKey, dest: ConfiguredDest) -> bool:
        """The chosen real server: look again (the choice may have taken a while), log, submit."""
        reason = self._read_only_reason()
        if reason:
            self.status.post(f"add disabled: {reason}", "warn")
            return False
        snapshot = self._snapshot()
        kernel = snapshot.find_service(key) if snapshot is not None else None
        server = join_host_port(dest.address, dest.port)
        if kernel is None:
            self.status.post(f"add: {key} is no longer in the kernel", "warn")
            return False
        if kernel.find_dest(dest.address, dest.port) is not None:
            self.status.post(f"add: {server} is already in {key}", "warn")
            return False
        command = AddDest(key, dest.address, dest.port, dest.forward, dest.weight)
        attempt = lambda: self.audit.record_add(key, dest.address, dest.port, dest.forward, dest.weight, ATTEMPT)  # noqa: E731
        if not self._submit(command, attempt, f"{server} not added to {key}"):
            return False
        self.status.post(f"adding {server} to {key} (weight {dest.weight})")
        return True

    def ask_remove(self, selection) -> Removal | None:
        """`x`: the question about the selected real server, or None after saying why not."""
        if is_missing(selection):
            self.status.post(f"remove: {selection[1]} is not in the kernel: nothing to remove", "warn")
            return None
        key = selection if isinstance(selection, DestKey) else None
        if key is None:
            self.status.post("remove: select a real server first (views 2 and 3 list them)", "warn")
            return None
        reason = self._read_only_reason()
        if reason:
            self.status.post(f"remove disabled: {reason}", "warn")
            return None
        snapshot = self._snapshot()
        dest = snapshot.find_dest(key) if snapshot is not None else None
        if dest is None:
            self.status.post(f"remove: {key} is no longer there", "warn")
            return None
        server = join_host_port(key.address, key.port)
        names = self._names() if self._names is not None else None
        name = names.dest_name(key) if names is not None else None
        details = [f"{name}/{server}" if name and name != key.address else server]
        details.append(
            f"weight {dest.weight}; {fmt_count(dest.active_conns)} active and {fmt_count(dest.inactive_conns)} "
            "inactive connections, which the kernel keeps until they end"
        )
        keepalived = getattr(self._configs(), "keepalived", None)
        if keepalived is not None and keepalived.find_dest(key) is not None:
            details.append("keepalived.conf lists it: keepalived's next reload adds it back")
        return Removal(key, f"remove {server} from {key.service}? y/n", "\n".join(details))

    def remove(self, key: DestKey) -> bool:
        """`y` to the question: look again, log, submit."""
        reason = self._read_only_reason()
        if reason:
            self.status.post(f"remove disabled: {reason}", "warn")
            return False
        server = join_host_port(key.address, key.port)
        attempt = lambda: self.audit.record_remove(key, ATTEMPT)  # noqa: E731
        if not self._submit(RemoveDest(key), attempt, f"{server} not removed from {key.service}"):
            return False
        self.status.post(f"removing {server} from {key.service}")
        return True

    # -- what comes back --------------------------------------------------------------------------
    def apply_result(self, result: CommandResult) -> None:
        """A command's result from the poller: its audit line, the pending change settled, one status line."""
        command = result.command
        outcome = "ok" if result.ok else f"refused: {result.message}"
        try:
            if isinstance(command, SetWeight):
                self.audit.record(command.dest, command.old_weight, command.new_weight, outcome)
            elif isinstance(command, AddDest):
                self.audit.record_add(
                    command.service, command.address, command.port, command.forward, command.weight, outcome
                )
            elif isinstance(command, RemoveDest):
                self.audit.record_remove(command.dest, outcome)
        except AuditLogError as exc:  # the change is made (or refused) already: say it went unlogged
            self.status.post(f"{exc}: not logged: {command.describe()}: {'ok' if result.ok else 'refused'}", "warn")
        if isinstance(command, SetWeight):
            change = self.pending.get(command.dest)
            if change is not None:
                change.outstanding = max(0, change.outstanding - 1)
                if not result.ok:
                    del self.pending[command.dest]
                    self.status.set_pending(command.dest, None)
        if result.ok:
            if not isinstance(command, SetWeight):
                self.status.post(result.message)
        elif isinstance(command, SetWeight):
            self.status.post(weight_refusal(command, result.message), "error")
        else:
            self.status.post(result.message, "error")

    def settle(self, snapshot: Snapshot) -> None:
        """A new snapshot: answered changes are confirmed (or not) against it, drains forgotten once moot."""
        for key, change in list(self.pending.items()):
            if change.outstanding:
                continue
            dest = snapshot.find_dest(key)
            del self.pending[key]
            self.status.set_pending(key, None)
            if dest is None:
                self.status.post(f"{key}: real server gone, weight {change.new} not confirmed", "warn")
            elif dest.weight == change.new:
                self.status.post(f"confirmed: weight of {key} is {change.new}")
                if change.warning:  # said again, as the newest message, so it stays in view
                    self.status.post(change.warning, "warn")
            else:
                self.status.post(f"weight of {key} is {dest.weight}, not {change.new} as set", "warn")
        for key in list(self.drained):
            dest = snapshot.find_dest(key)
            if (dest is None or dest.weight != 0) and key not in self.pending:
                del self.drained[key]  # gone, or raised since: nothing to restore any more


def weight_refusal(command: SetWeight, message: str) -> str:
    """One line for a refused weight change: "weight 10 -> 11 of SERVICE -> SERVER refused: REASON".

    The poller's message repeats the command and the backend's repeats the action; only the
    reason (e.g. the kernel's ENOENT as "no such real server") is kept.
    """
    verb, reason = "refused", message
    for word in ("refused", "failed"):
        head, sep, rest = message.partition(f": {word}: ")
        if sep:
            verb, reason = word, rest
            break
    action = f"set weight of {command.dest}: "
    if reason.startswith(action):
        reason = reason[len(action):]
    return f"weight {command.old_weight} -> {command.new_weight} of {command.dest} {verb}: {reason}"


def _service_of(selection) -> ServiceKey | None:
    if is_missing(selection):
        selection = selection[1]
    if isinstance(selection, DestKey):
        return selection.service
    return selection if isinstance(selection, ServiceKey) else None
