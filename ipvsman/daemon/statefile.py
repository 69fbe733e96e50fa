"""ipvsmand's state file: its format (defined here, once), the daemon's atomic writer, the one reader that checks it."""

from __future__ import annotations

import functools
import json
import math
import os
import socket
import stat
import tempfile
from dataclasses import asdict, dataclass
from typing import ClassVar, TypeVar

from ipvsman.daemon.health import STATES
from ipvsman.model import WEIGHT_MAX, DestKey, ServiceKey, split_host_port
from ipvsman.topology import FAILURE_ACTIONS

SCHEMA = 1
DEFAULT_PATH = "/run/ipvsman/ipvsmand.json"
MAX_BYTES = 64 * 1024 * 1024  # about 200,000 real servers; a bigger file is not ipvsmand's
STALE_HEARTBEATS = 3  # stale when now - written_at > 3 * heartbeat
TEXT_LIMIT = 200  # characters of a reason, a path or an error kept for one line of a terminal
PID_MAX = 2**22  # the kernel's PID_MAX_LIMIT
COUNT_MAX = 2**63 - 1  # bounds every other whole number, so a file's 400-digit one stops here


class StateFileError(ValueError):
    """A state file that cannot be read or trusted; the message is one line naming the file."""


@dataclass(frozen=True, slots=True)
class RealServerState:
    """One real server as the file has it: every field is written, None as null (the contract in README.rst)."""

    service: str  # str(ServiceKey): "tcp 10.0.0.1:80", "udp [fd00::1]:53", "fwmark 12", "fwmark 12 (IPv6)"
    address: str  # IPv6 compressed, as the kernel backend writes it
    port: int
    state: str  # one of health.STATES
    since: float  # when the state began
    good: int  # consecutive good checks
    rise: int
    bad: int  # consecutive failed checks
    fall: int
    check: str  # the check plugin's name
    last_check_at: float | None  # None: not checked yet
    last_ok: bool | None
    reason: str  # why the last check failed, "" when it passed
    latency_ms: float | None  # None: no answer
    configured_weight: int  # the topology's
    applied_weight: int | None  # what ipvsmand holds the kernel to; None: it removed the real server
    action: str  # on failure: one of topology.FAILURE_ACTIONS

    def dest_key(self) -> DestKey:
        """The real server as the kernel backend's key."""
        return DestKey(parse_service_key(self.service), self.address, self.port)


@dataclass(frozen=True, slots=True)
class DaemonState:
    """The whole file; a reader ignores fields it does not know within one schema version."""

    ipvsmand: int  # the schema version, SCHEMA
    version: str  # ipvsman's
    pid: int
    topology: str  # the topology file's absolute path
    applied_at: float  # when the running topology was applied; 0: never
    written_at: float
    heartbeat: float  # seconds between writes when nothing changes
    errors: tuple[str, ...]  # why the last reload was refused (the running topology stays); () when it was not
    real_servers: tuple[RealServerState, ...]

    server_kind: ClassVar[type[RealServerState]] = RealServerState  # what a reader makes of each real server

    def stale(self, now: float) -> bool:
        """Whether the daemon stopped or froze: no write for more than three heartbeats."""
        return now - self.written_at > STALE_HEARTBEATS * self.heartbeat

    def find(self, service: str, address: str, port: int) -> RealServerState | None:
        for server in self.real_servers:
            if server.service == service and server.address == address and server.port == port:
                return server
        return None


State = TypeVar("State", bound=DaemonState)


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


# -- reading: whatever the file holds, a DaemonState or one line ------------------------------------


def clean_text(text: str, limit: int = TEXT_LIMIT) -> str:
    """`text` made safe for one line of a terminal: what is not printable becomes '?', and it is cut at `limit`."""
    if len(text) <= limit and text.isprintable():  # nearly always: no character to look at one by one
        return text
    # isprintable() is False for escape sequences, newlines, C1 controls, bidi overrides and lone surrogates.
    cleaned = "".join(char if char.isprintable() else "?" for char in text[:limit])
    return cleaned + ("…" if len(text) > limit else "")


def read_state(path: str, max_bytes: int | None = None, kind: type[State] = DaemonState) -> State:
    """The state in `path` as a `kind`; StateFileError (one line) when it is missing, unreadable, too large or bad."""
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    try:
        # O_NONBLOCK: a FIFO put in its place must not hang the reader; only a regular file is read.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise StateFileError(f"{path}: missing (is ipvsmand running?)") from None
    except OSError as exc:
        raise StateFileError(f"{path}: not readable: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateFileError(f"{path}: not a regular file")
        if info.st_size > max_bytes:
            raise StateFileError(f"{path}: {info.st_size} bytes, more than the {max_bytes} bytes read")
        chunks, total = [], 0
        while total <= max_bytes:  # the size may grow between fstat and read
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise StateFileError(f"{path}: not readable: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if total > max_bytes:
        raise StateFileError(f"{path}: more than the {max_bytes} bytes read")
    return parse_state(b"".join(chunks), path, kind)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_state(data: bytes, path: str = "ipvsmand.json", kind: type[State] = DaemonState) -> State:
    """The state file's bytes as a `kind`; StateFileError (one line naming `path`) for anything off the format."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StateFileError(f"{path}: not UTF-8 text") from None
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise StateFileError(f"{path}: not JSON: nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, NaN, an integer of thousands of digits
        raise StateFileError(f"{path}: not JSON: {clean_text(str(exc).splitlines()[0], 80)}") from None
    if not isinstance(document, dict):
        raise StateFileError(f"{path}: not a JSON object")
    schema = document.get("ipvsmand")
    if type(schema) is not int:
        raise StateFileError(f"{path}: no schema version (\"ipvsmand\": {SCHEMA}): not ipvsmand's state file")
    if schema != SCHEMA:
        raise StateFileError(f"{path}: schema version {schema}, this ipvsman reads {SCHEMA}: update one of them")
    try:
        return _state(document, kind)
    except _Bad as exc:
        raise StateFileError(f"{path}: {exc}") from None


@functools.lru_cache(maxsize=4096)  # a service's text is parsed once, however many real servers it has
def parse_service_key(text: str) -> ServiceKey:
    """str(ServiceKey) read back: "tcp 10.0.0.1:80", "udp [fd00::1]:53", "fwmark 12", "fwmark 12 (IPv6)"."""
    if len(text) > 64:  # longer than "sctp [<45 characters of IPv6>]:65535": no service, and kept out of the cache
        raise ValueError(f"expected a service, got {len(text)} characters")
    words = text.split(" ")
    if words[0] == "fwmark":
        inet6 = words[2:] == ["(IPv6)"]
        if len(words) not in (2, 3) or (len(words) == 3 and not inet6) or not words[1].isdigit():
            raise ValueError(f"expected 'fwmark N', got {clean_text(text, 40)!r}")
        mark = int(words[1])
        if not 0 < mark < 2**32:
            raise ValueError(f"a firewall mark must be 1-4294967295, got {mark}")
        return ServiceKey("inet6" if inet6 else "inet", None, "", 0, fwmark=mark)
    if len(words) != 2 or words[0] not in ("tcp", "udp", "sctp"):
        raise ValueError(f"expected 'tcp|udp|sctp ADDRESS:PORT' or 'fwmark N', got {clean_text(text, 40)!r}")
    address, port = split_host_port(words[1])
    return ServiceKey("inet6" if ":" in address else "inet", words[0], address, port)


@functools.lru_cache(maxsize=4096)
def _canonical_service(text: str) -> str:
    return str(parse_service_key(text))


class _Bad(Exception):
    """A field off the format: "real_servers[3].port: must be a whole number 0-65535, got 70000"."""


def _show(value: object) -> str:
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "an object"
    return clean_text(json.dumps(value[:40] if isinstance(value, str) else value), 40)


def _field(document: dict, name: str, where: str = ""):
    if name not in document:
        raise _Bad(f"{where}{name}: missing")
    return document[name]


def _number(document: dict, name: str, where: str = "", *, optional: bool = False) -> float | None:
    value = _field(document, name, where)
    if value is None and optional:
        return None
    try:
        number = float(value) if type(value) in (int, float) else math.nan
    except OverflowError:  # an integer of hundreds of digits
        number = math.nan
    if not math.isfinite(number) or number < 0:  # 1e999 reads as infinity
        null = " or null" if optional else ""
        raise _Bad(f"{where}{name}: must be a number of at least 0{null}, got {_show(value)}")
    return number


def _integer(document: dict, name: str, where: str = "", low: int = 0, high: int = COUNT_MAX,
             optional: bool = False) -> int | None:  # fmt: skip
    value = _field(document, name, where)
    if value is None and optional:
        return None
    if type(value) is not int or not low <= value <= high:
        null = " or null" if optional else ""
        raise _Bad(f"{where}{name}: must be a whole number {low}-{high}{null}, got {_show(value)}")
    return value


def _text(document: dict, name: str, where: str = "") -> str:
    value = _field(document, name, where)
    if not isinstance(value, str):
        raise _Bad(f"{where}{name}: must be text, got {_show(value)}")
    return value


def _choice(document: dict, name: str, choices: tuple[str, ...], where: str) -> str:
    value = _field(document, name, where)
    if value not in choices:
        raise _Bad(f"{where}{name}: must be one of {', '.join(choices)}, got {_show(value)}")
    return value


def _state(document: dict, kind: type[State]) -> State:
    heartbeat = _number(document, "heartbeat")
    if heartbeat <= 0:
        raise _Bad(f"heartbeat: must be more than 0, got {_show(document['heartbeat'])}")
    errors = _field(document, "errors")
    if not isinstance(errors, list) or not all(isinstance(error, str) for error in errors):
        raise _Bad("errors: must be a list of text")
    entries = _field(document, "real_servers")
    if not isinstance(entries, list):
        raise _Bad(f"real_servers: must be a list, got {_show(entries)}")
    servers, seen = [], set()
    for index, entry in enumerate(entries):
        server = _server(entry, f"real_servers[{index}].", kind.server_kind)
        named = (server.service, server.address, server.port)  # canonical texts: as good as a DestKey, faster
        if named in seen:
            raise _Bad(f"real_servers[{index}]: {server.dest_key()} is named twice")
        seen.add(named)
        servers.append(server)
    return kind(
        ipvsmand=SCHEMA,
        version=_text(document, "version"),
        pid=_integer(document, "pid", low=1, high=PID_MAX),
        topology=_text(document, "topology"),
        applied_at=_number(document, "applied_at"),
        written_at=_number(document, "written_at"),
        heartbeat=heartbeat,
        errors=tuple(errors),
        real_servers=tuple(servers),
    )


def _server(entry: object, where: str, kind: type[RealServerState]) -> RealServerState:
    if not isinstance(entry, dict):
        raise _Bad(f"{where[:-1]}: must be an object, got {_show(entry)}")
    try:
        service = _canonical_service(_text(entry, "service", where))
    except ValueError as exc:
        raise _Bad(f"{where}service: {exc}") from None
    address = _field(entry, "address", where)
    address = _address(address) if isinstance(address, str) else None
    if address is None:
        raise _Bad(f"{where}address: must be an IP address, got {_show(entry['address'])}")
    last_ok = _field(entry, "last_ok", where)
    if last_ok is not None and not isinstance(last_ok, bool):
        raise _Bad(f"{where}last_ok: must be true, false or null, got {_show(last_ok)}")
    return kind(
        service=service,
        address=address,
        port=_integer(entry, "port", where, 0, 65535),
        state=_choice(entry, "state", STATES, where),
        since=_number(entry, "since", where),
        good=_integer(entry, "good", where),
        rise=_integer(entry, "rise", where, low=1),
        bad=_integer(entry, "bad", where),
        fall=_integer(entry, "fall", where, low=1),
        check=_text(entry, "check", where),
        last_check_at=_number(entry, "last_check_at", where, optional=True),
        last_ok=last_ok,
        reason=_text(entry, "reason", where),
        latency_ms=_number(entry, "latency_ms", where, optional=True),
        configured_weight=_integer(entry, "configured_weight", where, 0, WEIGHT_MAX),
        applied_weight=_integer(entry, "applied_weight", where, 0, WEIGHT_MAX, optional=True),
        action=_choice(entry, "action", FAILURE_ACTIONS, where),
    )


def _address(text: str) -> str | None:
    """The address as the kernel backend writes it (IPv6 compressed), or None when it is none."""
    for family in (socket.AF_INET, socket.AF_INET6):  # inet_pton: ten times faster than ipaddress
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except (OSError, ValueError):  # ValueError: a NUL in the text
            pass
    return None
