"""ipvsmand's state file: written atomically by the daemon, read (and distrusted) by the dashboard.

The format is the contract in README.rst ("ipvsmand: health checks"). `read_state` is what the
dashboard imports: it returns an immutable DaemonState or raises StateFileError with one line,
whatever the file holds (another schema, garbage, a huge file, wrong types, control characters).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass

from ipvsman.daemon.health import STATES

SCHEMA = 1
DEFAULT_PATH = "/run/ipvsman/ipvsmand.json"
MAX_BYTES = 64 * 1024 * 1024  # about 200,000 real servers; a bigger file is not ipvsmand's
STALE_HEARTBEATS = 3  # stale when now - written_at > 3 * heartbeat
ACTIONS = ("quiesce", "remove")
MAX_TEXT = 1000  # a reason, a path or an error longer than this is cut


class StateFileError(ValueError):
    """A state file that cannot be read or trusted; the message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class RealServerState:
    service: str  # str(ServiceKey)
    address: str
    port: int
    state: str  # one of health.STATES
    since: float
    good: int
    rise: int
    bad: int
    fall: int
    check: str
    last_check_at: float | None
    last_ok: bool | None
    reason: str
    latency_ms: float | None
    configured_weight: int
    applied_weight: int | None
    action: str  # "quiesce" or "remove"


@dataclass(frozen=True, slots=True)
class DaemonState:
    ipvsmand: int
    version: str
    pid: int
    topology: str
    applied_at: float
    written_at: float
    heartbeat: float
    errors: tuple[str, ...]
    real_servers: tuple[RealServerState, ...]

    def stale(self, now: float) -> bool:
        """Whether the daemon stopped or froze: no write for more than three heartbeats."""
        return now - self.written_at > STALE_HEARTBEATS * self.heartbeat

    def find(self, service: str, address: str, port: int) -> RealServerState | None:
        for server in self.real_servers:
            if server.service == service and server.address == address and server.port == port:
                return server
        return None


def to_json(state: DaemonState) -> str:
    data = asdict(state)
    data["errors"] = list(state.errors)
    data["real_servers"] = [asdict(server) for server in state.real_servers]
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def write_state(path: str, state: DaemonState) -> None:
    """Write atomically: a temporary file in the same directory, fsync, rename; mode 0644."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".ipvsmand-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(to_json(state))
            out.flush()
            os.fchmod(out.fileno(), 0o644)
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


# -- reading ------------------------------------------------------------------------------------


def read_state(path: str) -> DaemonState:
    """The state in `path`; StateFileError (one line) when it is missing, unreadable or untrustworthy."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {os.strerror(exc.errno) if exc.errno else exc}") from None
    if len(raw) > MAX_BYTES:
        raise StateFileError(f"{path}: larger than {MAX_BYTES // (1024 * 1024)} MB: not an ipvsmand state file")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StateFileError(f"{path}: not JSON: {_line(str(exc))}") from None
    try:
        return parse_state(data)
    except _Bad as exc:
        raise StateFileError(f"{path}: {exc}") from None


class _Bad(ValueError):
    pass


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


def _line(text: str) -> str:
    """One printable line of at most MAX_TEXT characters."""
    text = "".join(char if char.isprintable() else " " for char in text)
    return text[:MAX_TEXT]


def parse_state(data: object) -> DaemonState:
    if not isinstance(data, dict):
        raise _Bad("expected a JSON object")
    schema = data.get("ipvsmand")
    if schema != SCHEMA or isinstance(schema, bool):
        raise _Bad(f"state file schema {_line(repr(schema))[:40]}, this ipvsman reads schema {SCHEMA}")
    servers = _field(data, "real_servers", list)
    errors = _field(data, "errors", list)
    heartbeat = _number(data, "heartbeat")
    if heartbeat <= 0:
        raise _Bad("heartbeat must be more than 0")
    return DaemonState(
        ipvsmand=SCHEMA,
        version=_text(data, "version"),
        pid=_whole(data, "pid", low=1),
        topology=_text(data, "topology"),
        applied_at=_number(data, "applied_at"),
        written_at=_number(data, "written_at"),
        heartbeat=heartbeat,
        errors=tuple(_line(error) if isinstance(error, str) else _fail("errors", "strings") for error in errors),
        real_servers=tuple(_server(server, index) for index, server in enumerate(servers)),
    )


def _fail(name: str, expected: str):
    raise _Bad(f"{name}: expected {expected}")


def _field(data: dict, name: str, kind: type, optional: bool = False):
    if name not in data:
        raise _Bad(f"{name} is missing")
    value = data[name]
    if value is None and optional:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = "number" if float in kinds else kinds[0].__name__
        raise _Bad(f"{name}: expected {expected}{' or null' if optional else ''}, got {type(value).__name__}")
    return value


def _number(data: dict, name: str, optional: bool = False) -> float:
    value = _field(data, name, (int, float), optional)  # type: ignore[arg-type]
    if value is not None and not math.isfinite(value):
        raise _Bad(f"{name}: expected a finite number")
    return None if value is None else float(value)  # type: ignore[return-value]


def _whole(data: dict, name: str, low: int = 0, high: int = 2**63, optional: bool = False) -> int:
    value = _field(data, name, int, optional)
    if value is not None and not low <= value <= high:
        raise _Bad(f"{name}: expected {low}-{high}, got {value}")
    return value


def _text(data: dict, name: str) -> str:
    return _line(_field(data, name, str))


def _server(data: object, index: int) -> RealServerState:
    if not isinstance(data, dict):
        raise _Bad(f"real_servers[{index}]: expected an object")
    try:
        state = _text(data, "state")
        if state not in STATES:
            raise _Bad(f"state: expected one of {', '.join(STATES)}, got {state[:20]!r}")
        action = _text(data, "action")
        if action not in ACTIONS:
            raise _Bad(f"action: expected quiesce or remove, got {action[:20]!r}")
        return RealServerState(
            service=_text(data, "service"),
            address=_text(data, "address"),
            port=_whole(data, "port", high=65535),
            state=state,
            since=_number(data, "since"),
            good=_whole(data, "good"),
            rise=_whole(data, "rise", low=1),
            bad=_whole(data, "bad"),
            fall=_whole(data, "fall", low=1),
            check=_text(data, "check"),
            last_check_at=_number(data, "last_check_at", optional=True),
            last_ok=_field(data, "last_ok", bool, optional=True),
            reason=_text(data, "reason"),
            latency_ms=_number(data, "latency_ms", optional=True),
            configured_weight=_whole(data, "configured_weight", high=65535),
            applied_weight=_whole(data, "applied_weight", high=65535, optional=True),
            action=action,
        )
    except _Bad as exc:
        raise _Bad(f"real_servers[{index}]: {exc}") from None
