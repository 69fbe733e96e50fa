"""Parse keepalived.conf (and the files it includes) into the services and VRRP addresses it configures.

Only what ipvsman shows or compares is kept: virtual_server (IP PORT, fwmark N, group NAME),
virtual_server_group, real_server, weight, lb_algo/lvs_sched, lb_kind/lvs_method, protocol,
persistence_timeout, persistence_granularity, ip_family, snmp_name, health checkers (only that
there is one) and vrrp_instance (interface, state, virtual_ipaddress). Every other keyword is
skipped. The defaults are those keepalived 2.2 applies: scheduler wlc, NAT, protocol UDP when
none is given, weight 1, persistence 360 s when persistence_timeout has no value. Includes
(glob patterns and {a,b} alternatives, relative to the including file, loops reported),
$PARAMETER substitution and '@config-id' conditional lines are followed as keepalived does.

A malformed statement is reported with its file, line and what was expected; the rest of the
file still counts, as far as it can be understood.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from ipvsman.model import SCHEDULER_NAMES, WEIGHT_MAX, ServiceKey
from ipvsman.topology import (
    DEFAULT_SCHEDULER,
    MAX_RANGE,
    ConfigError,
    Configuration,
    ConfiguredDest,
    ConfiguredService,
    VirtualAddress,
    VrrpInstance,
)

DEFAULT_PATH = "/etc/keepalived/keepalived.conf"
DEFAULT_PERSISTENCE = 360  # persistence_timeout without a value, and keepalived's fix for port 0
DEFAULT_PROTOCOL = "udp"  # keepalived 2.x: "no protocol set - defaulting to UDP"
INCLUDE_KEYWORDS = frozenset({"include", "includer", "includem", "includew", "includeb", "includea"})
LVS_METHODS = {"NAT": "masq", "DR": "route", "TUN": "tunnel"}
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
CHECKERS = frozenset(
    {
        "HTTP_GET",
        "SSL_GET",
        "TCP_CHECK",
        "SMTP_CHECK",
        "DNS_CHECK",
        "MISC_CHECK",
        "BFD_CHECK",
        "UDP_CHECK",
        "PING_CHECK",
        "FILE_CHECK",
    }
)
MAX_WEIGHT = 2**31 - 1  # keepalived's limit; the kernel takes any non-negative int
MAX_SUBSTITUTION_DEPTH = 16  # $A=$B, $B=$A must end
TRUE_WORDS = frozenset({"on", "true", "yes"})
FALSE_WORDS = frozenset({"off", "false", "no"})


def default_path() -> str | None:
    """/etc/keepalived/keepalived.conf when it exists, else None."""
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None


def default_config_id() -> str:
    """keepalived's default config id: the first part of this machine's node name."""
    return os.uname().nodename.split(".", 1)[0]


def read_keepalived(path: str, config_id: str | None = None) -> Configuration:
    """Parse a keepalived.conf and its includes; an unreadable file is one error, not an exception.

    `config_id` selects '@ID' conditional lines as keepalived -i does (default: the node name).
    """
    reader = _Reader(config_id or default_config_id())
    lines = reader.read_file(path, stack=(), via=None)
    return _finish(path, lines, reader)


def parse_keepalived(text: str, path: str = "keepalived.conf", config_id: str | None = None) -> Configuration:
    """Parse configuration text as if read from `path` (relative includes start in its directory)."""
    reader = _Reader(config_id or default_config_id())
    reader.files.append(path)
    lines = reader.read_text(text, path, stack=(os.path.realpath(path),))
    return _finish(path, lines, reader)


def _finish(path: str, lines: list[list[_Token]], reader: _Reader) -> Configuration:
    nodes = _build_tree(lines, reader.errors)
    interpreter = _Interpreter(reader.errors)
    services, vrrp = interpreter.run(nodes)
    # Errors in reading order: by file (as first read), then by line.
    file_order = {name: index for index, name in reversed(list(enumerate(reader.files)))}
    errors = sorted(reader.errors, key=lambda error: (file_order.get(error.path, len(file_order)), error.line))
    return Configuration(
        source="keepalived",
        path=path,
        services=tuple(services),
        vrrp_instances=tuple(vrrp),
        errors=tuple(errors),
        files=tuple(reader.files),
    )


# -- reading: lexing and includes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    path: str
    line: int
    quoted: bool = False

    @property
    def is_open(self) -> bool:
        return self.text == "{" and not self.quoted

    @property
    def is_close(self) -> bool:
        return self.text == "}" and not self.quoted


@dataclass
class _Reader:
    config_id: str = field(default_factory=default_config_id)
    errors: list[ConfigError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)  # $NAME=VALUE definitions, in reading order

    def error(self, path: str, line: int, message: str) -> None:
        self.errors.append(ConfigError(path, line, message))

    def read_file(self, path: str, stack: tuple[str, ...], via: _Token | None) -> list[list[_Token]]:
        real = os.path.realpath(path)
        if real in stack:
            assert via is not None
            self.error(via.path, via.line, f"include loop: {path} is already being read; skipped")
            return []
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError as exc:
            where = (via.path, via.line) if via else (path, 0)
            self.error(*where, f"cannot read {path}: {exc.strerror}")
            return []
        self.files.append(path)
        return self.read_text(text, path, stack + (real,))

    def read_text(self, text: str, path: str, stack: tuple[str, ...]) -> list[list[_Token]]:
        lines: list[list[_Token]] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            raw = self._conditional(raw)
            if raw is None:
                continue
            definition = _PARAMETER_DEFINITION.match(raw)
            if definition:
                self.parameters[definition["name"]] = definition["value"].strip()
                continue
            if "$" in raw:
                raw = self._substitute(raw)
            tokens = self._lex(raw, path, number)
            if tokens and not tokens[0].quoted and tokens[0].text in INCLUDE_KEYWORDS:
                lines.extend(self._include(raw, tokens[0], path, stack))
            elif tokens:
                lines.append(tokens)
        return lines

    def _include(self, raw: str, keyword: _Token, path: str, stack: tuple[str, ...]) -> Iterator[list[_Token]]:
        # The pattern is the rest of the line, braces included: they are glob alternatives here.
        pattern = _strip_comment(raw).strip()[len(keyword.text) :].strip().strip('"')
        if not pattern:
            self.error(path, keyword.line, f"expected a file name or pattern after {keyword.text}")
            return
        base = os.path.dirname(os.path.abspath(path))
        matches: list[str] = []
        for alternative in _expand_braces(pattern):
            full = alternative if os.path.isabs(alternative) else os.path.join(base, alternative)
            if glob.has_magic(full):
                matches.extend(sorted(glob.glob(full)))
            elif os.path.exists(full):
                matches.append(full)
            elif "{" not in pattern:
                self.error(path, keyword.line, f"included file {alternative} does not exist")
        for match in matches:
            if os.path.isdir(match):
                continue
            yield from self.read_file(match, stack, via=keyword)

    def _conditional(self, raw: str) -> str | None:
        """'@lb1 text' is text on the director whose config id is lb1, '@^lb1 text' on all others."""
        stripped = raw.lstrip()
        if not stripped.startswith("@"):
            return raw
        word, _, rest = stripped[1:].partition(" ")
        negated = word.startswith("^")
        matches = word.removeprefix("^") == self.config_id
        return rest if matches != negated else None

    def _substitute(self, raw: str) -> str:
        """Replace ${NAME}, and $NAME before whitespace, by defined values (recursively, as keepalived does)."""

        def value(match: re.Match) -> str:
            name = match["braced"] or match["bare"]
            return self.parameters.get(name, match[0])

        for _ in range(MAX_SUBSTITUTION_DEPTH):
            replaced = _PARAMETER_USE.sub(value, raw)
            if replaced == raw:
                break
            raw = replaced
        return raw

    def _lex(self, raw: str, path: str, number: int) -> list[_Token]:
        """Words, quoted strings and braces of one line; a # or ! starting a word starts a comment."""
        tokens: list[_Token] = []
        index = 0
        length = len(raw)
        while index < length:
            char = raw[index]
            if char.isspace():
                index += 1
            elif char in "#!":
                break
            elif char in "{}":
                tokens.append(_Token(char, path, number))
                index += 1
            elif char == '"':
                end = raw.find('"', index + 1)
                if end < 0:
                    self.error(path, number, "expected a closing quote")
                    end = length
                tokens.append(_Token(raw[index + 1 : end], path, number, quoted=True))
                index = end + 1
            else:
                end = index
                while end < length and not raw[end].isspace() and raw[end] not in '{}"':
                    end += 1
                tokens.append(_Token(raw[index:end], path, number))
                index = end
        return tokens


_PARAMETER_DEFINITION = re.compile(r"^\s*\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
_PARAMETER_USE = re.compile(r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)(?=\s|$)")


def _strip_comment(raw: str) -> str:
    match = re.search(r"(^|\s)[#!]", raw)
    return raw[: match.start()] if match else raw


def _expand_braces(pattern: str) -> list[str]:
    """csh-style alternatives as keepalived's glob() has them: 'a{b,c}d' -> ['abd', 'acd']."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    expanded: list[str] = []
    for choice in match.group(1).split(","):
        expanded.extend(_expand_braces(head + choice + tail))
    return expanded


# -- the block tree -----------------------------------------------------------------------------


@dataclass
class _Node:
    """A statement: its words and, when a block follows, its children."""

    words: list[_Token]
    children: list[_Node] | None = None
    opener: _Token | None = None

    @property
    def keyword(self) -> str:
        return self.words[0].text if self.words else ""

    @property
    def args(self) -> list[str]:
        return [token.text for token in self.words[1:]]

    @property
    def path(self) -> str:
        return (self.words[0] if self.words else self.opener).path  # type: ignore[union-attr]

    @property
    def line(self) -> int:
        return (self.words[0] if self.words else self.opener).line  # type: ignore[union-attr]


def _build_tree(lines: list[list[_Token]], errors: list[ConfigError]) -> list[_Node]:
    """Statements end at a line end, a { or a }; a { on the next line opens the previous statement's block."""
    root: list[_Node] = []
    stack: list[tuple[list[_Node], _Node]] = []  # (the enclosing list, the block's node)
    level = root
    words: list[_Token] = []
    attachable: _Node | None = None  # the statement a { on the next line belongs to

    def flush() -> _Node | None:
        nonlocal words
        if not words:
            return None
        node = _Node(words)
        level.append(node)
        words = []
        return node

    for tokens in lines:
        for token in tokens:
            if token.is_open:
                node = flush() or attachable
                if node is None or node.children is not None:
                    errors.append(ConfigError(token.path, token.line, "unexpected '{' (no keyword before it)"))
                    node = _Node([], opener=token)
                    level.append(node)
                node.children = []
                node.opener = token
                stack.append((level, node))
                level = node.children
                attachable = None
            elif token.is_close:
                flush()
                attachable = None
                if not stack:
                    errors.append(ConfigError(token.path, token.line, "unexpected '}' (no block is open)"))
                    continue
                level, _ = stack.pop()
            else:
                attachable = None
                words.append(token)
        attachable = flush()
    flush()
    for _, node in stack:
        opener = node.opener
        assert opener is not None
        what = f"{node.keyword} block" if node.words else "block"
        errors.append(ConfigError(opener.path, opener.line, f"expected '}}' to close the {what} opened here"))
    return root


# -- interpretation -----------------------------------------------------------------------------


class _Bad(ValueError):
    """A statement that cannot be understood; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class _GroupEntry:
    addresses: tuple[str, ...] = ()  # empty for a firewall mark
    port: int = 0
    fwmark: int = 0
    af: str | None = None  # for a fwmark: inet or inet6 when given


@dataclass(frozen=True, slots=True)
class _RealServer:
    address: str
    port: int | None
    weight: int
    forward: str | None
    name: str | None
    health_checked: bool
    inhibit: bool | None
    origin: str


class _Interpreter:
    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        self.groups: dict[str, tuple[_GroupEntry, ...]] = {}

    def error(self, node: _Node, message: str) -> None:
        self.errors.append(ConfigError(node.path, node.line, message))

    def run(self, nodes: list[_Node]) -> tuple[list[ConfiguredService], list[VrrpInstance]]:
        virtual_servers: list[_Node] = []
        vrrp: list[VrrpInstance] = []
        for node in nodes:
            try:
                if node.keyword == "virtual_server_group":
                    self._group(node)
                elif node.keyword == "virtual_server":
                    virtual_servers.append(node)  # after all groups: a group may be defined below its use
                elif node.keyword == "vrrp_instance":
                    vrrp.append(self._vrrp_instance(node))
            except _Bad as exc:
                self.error(node, str(exc))
        services: list[ConfiguredService] = []
        defined: dict[ServiceKey, str] = {}
        for node in virtual_servers:
            try:
                expanded = self._virtual_server(node)
            except _Bad as exc:
                self.error(node, str(exc))
                continue
            for service in expanded:
                if service.key in defined:
                    self.error(node, f"virtual server {service.key} is already defined at {defined[service.key]}")
                    continue
                defined[service.key] = service.origin
                services.append(service)
        return services, vrrp

    # virtual_server_group NAME { 10.0.0.1-10 80 / 10.0.0.0/29 80 / fwmark 5 [inet6] }
    def _group(self, node: _Node) -> None:
        if len(node.args) != 1:
            raise _Bad("expected virtual_server_group NAME {")
        if node.children is None:
            raise _Bad("expected '{' after virtual_server_group NAME")
        entries: list[_GroupEntry] = []
        for child in node.children:
            try:
                entries.append(self._group_entry(child))
            except _Bad as exc:
                self.error(child, str(exc))
        self.groups[node.args[0]] = tuple(entries)

    def _group_entry(self, node: _Node) -> _GroupEntry:
        words = [token.text for token in node.words]
        if words and words[0] == "fwmark":
            if len(words) not in (2, 3) or not _is_uint(words[1], 2**32 - 1) or int(words[1]) == 0:
                raise _Bad("expected fwmark N [inet|inet6] in virtual_server_group")
            af = words[2] if len(words) == 3 else None
            if af not in (None, "inet", "inet6"):
                raise _Bad(f"expected inet or inet6 after fwmark {words[1]}, got {af!r}")
            return _GroupEntry(fwmark=int(words[1]), af=af)
        if len(words) not in (1, 2):
            raise _Bad("expected ADDRESS[-RANGE] [PORT] or fwmark N in virtual_server_group")
        port = _port(words[1]) if len(words) == 2 else 0
        return _GroupEntry(addresses=tuple(_address_range(words[0])), port=port)

    def _virtual_server(self, node: _Node) -> list[ConfiguredService]:
        args = node.args
        origin = f"{node.path}:{node.line}"
        if node.children is None:
            raise _Bad("expected '{' after virtual_server")
        group_entries: tuple[_GroupEntry, ...] | None = None
        group_name: str | None = None
        fwmark = 0
        address = ""
        port = 0
        if len(args) == 2 and args[0] == "fwmark":
            if not _is_uint(args[1], 2**32 - 1) or int(args[1]) == 0:
                raise _Bad(f"expected a firewall mark (1-4294967295) after virtual_server fwmark, got {args[1]!r}")
            fwmark = int(args[1])
        elif len(args) == 2 and args[0] == "group":
            group_name = args[1]
            if group_name not in self.groups:
                raise _Bad(f"virtual_server group {group_name}: no virtual_server_group {group_name} is defined")
            group_entries = self.groups[group_name]
        elif len(args) in (1, 2):
            address = _address(args[0])
            port = _port(args[1]) if len(args) == 2 else 0
        else:
            raise _Bad("expected virtual_server IP [PORT], virtual_server fwmark N or virtual_server group NAME")

        settings = self._virtual_server_settings(node)
        real_servers = settings.pop("real_servers")
        if not real_servers:
            raise _Bad(f"virtual server {' '.join(args)} has no real servers; keepalived ignores it")
        scheduler = settings["scheduler"] or DEFAULT_SCHEDULER
        protocol = settings["protocol"] or DEFAULT_PROTOCOL
        persistent = settings["persistent"]
        forward_default = settings["forward"] or "masq"
        name = settings["name"] or group_name

        rs_families = {_family(rs.address) for rs in real_servers}
        fwmark_af = settings["ip_family"] or (rs_families.pop() if len(rs_families) == 1 else "inet")
        targets: list[tuple[ServiceKey, str]] = []  # (key, kind) with kind "address", "fwmark"
        if group_entries is not None:
            for entry in group_entries:
                if entry.fwmark:
                    targets.append((ServiceKey(entry.af or fwmark_af, None, "", 0, entry.fwmark), "fwmark"))
                    continue
                for member in entry.addresses:
                    targets.append((ServiceKey(_family(member), protocol, member, entry.port), "group"))
                if entry.port == 0 and persistent is None:
                    persistent = DEFAULT_PERSISTENCE  # keepalived: zero port only valid for persistent services
        elif fwmark:
            targets.append((ServiceKey(fwmark_af, None, "", 0, fwmark), "fwmark"))
        else:
            if port == 0 and persistent is None:
                persistent = DEFAULT_PERSISTENCE
            targets.append((ServiceKey(_family(address), protocol, address, port), "address"))

        services = []
        for key, kind in targets:
            dests = self._dests_for(key, kind, real_servers, forward_default, settings["inhibit"])
            sorry: tuple[ConfiguredDest, ...] = ()
            if settings["sorry_server"] is not None:
                sorry_forward = settings["sorry_forward"] or forward_default
                sorry = self._dests_for(key, kind, [settings["sorry_server"]], sorry_forward, False)
            services.append(
                ConfiguredService(
                    key=key,
                    scheduler=scheduler,
                    dests=dests,
                    sorry_servers=sorry,
                    name=name,
                    persistent=persistent,
                    netmask=settings["netmask"] if persistent is not None else "",
                    origin=origin,
                )
            )
        return services

    def _virtual_server_settings(self, node: _Node) -> dict:
        settings: dict = {
            "scheduler": None,
            "protocol": None,
            "persistent": None,
            "netmask": "",
            "forward": None,
            "ip_family": None,
            "name": None,
            "inhibit": False,
            "real_servers": [],
            "sorry_server": None,
            "sorry_forward": None,
        }
        for child in node.children or ():
            keyword, args = child.keyword, child.args
            try:
                if keyword in ("lb_algo", "lvs_sched"):
                    settings["scheduler"] = _scheduler(keyword, args)
                elif keyword in ("lb_kind", "lvs_method"):
                    settings["forward"] = _lvs_method(keyword, args)
                elif keyword == "protocol":
                    if len(args) != 1 or args[0].upper() not in PROTOCOLS:
                        raise _Bad(f"expected protocol TCP, UDP or SCTP, got {' '.join(args)!r}")
                    settings["protocol"] = PROTOCOLS[args[0].upper()]
                elif keyword == "persistence_timeout":
                    if not args:
                        settings["persistent"] = DEFAULT_PERSISTENCE
                    elif len(args) == 1 and _is_uint(args[0], 2**31):
                        settings["persistent"] = int(args[0]) or None  # 0 means not persistent
                    else:
                        raise _Bad(f"expected persistence_timeout [SECONDS], got {' '.join(args)!r}")
                elif keyword == "persistence_granularity":
                    if len(args) != 1:
                        raise _Bad("expected persistence_granularity NETMASK")
                    settings["netmask"] = _netmask(args[0])
                elif keyword == "ip_family":
                    if args not in (["inet"], ["inet6"]):
                        raise _Bad(f"expected ip_family inet or inet6, got {' '.join(args)!r}")
                    settings["ip_family"] = args[0]
                elif keyword == "snmp_name" and args:
                    settings["name"] = " ".join(args)
                elif keyword == "inhibit_on_failure":
                    settings["inhibit"] = _bool(args, keyword)
                elif keyword == "real_server":
                    settings["real_servers"].append(self._real_server(child))
                elif keyword == "sorry_server":
                    if len(args) not in (1, 2):
                        raise _Bad("expected sorry_server IP [PORT]")
                    port = _port(args[1]) if len(args) == 2 else None
                    origin = f"{child.path}:{child.line}"
                    settings["sorry_server"] = _RealServer(_address(args[0]), port, 1, None, None, False, None, origin)
                elif keyword == "sorry_server_lvs_method":
                    settings["sorry_forward"] = _lvs_method(keyword, args)
            except _Bad as exc:
                self.error(child, str(exc))
        return settings

    def _real_server(self, node: _Node) -> _RealServer:
        args = node.args
        if len(args) not in (1, 2):
            raise _Bad("expected real_server IP [PORT] {")
        address = _address(args[0])
        port = _port(args[1]) if len(args) == 2 else None
        weight = 1
        forward = None
        name = None
        checked = False
        inhibit = None
        for child in node.children or ():
            keyword, child_args = child.keyword, child.args
            try:
                if keyword == "weight":
                    if len(child_args) != 1 or not _is_uint(child_args[0], MAX_WEIGHT):
                        raise _Bad(f"expected weight 0-{WEIGHT_MAX}, got {' '.join(child_args)!r}")
                    weight = int(child_args[0])
                    if weight > WEIGHT_MAX:
                        # Kept: keepalived 2 hands it to the kernel as is, so drift compares with what is there.
                        self.error(child, f"weight {weight} is out of range 0-{WEIGHT_MAX} (ipvsadm's and "
                                          "ipvsman's limit; keepalived 2 passes it to the kernel as is)")  # fmt: skip
                elif keyword in ("lvs_method", "lb_kind"):
                    forward = _lvs_method(keyword, child_args)
                elif keyword == "snmp_name" and child_args:
                    name = " ".join(child_args)
                elif keyword == "inhibit_on_failure":
                    inhibit = _bool(child_args, keyword)
                elif keyword in CHECKERS:
                    checked = True
            except _Bad as exc:
                self.error(child, str(exc))
        return _RealServer(address, port, weight, forward, name, checked, inhibit, f"{node.path}:{node.line}")

    def _dests_for(
        self,
        key: ServiceKey,
        kind: str,
        real_servers: list[_RealServer],
        forward_default: str,
        inhibit_default: bool,
    ) -> tuple[ConfiguredDest, ...]:
        """The real servers as keepalived programs them into one service (its port rules included)."""
        dests: list[ConfiguredDest] = []
        seen: set[tuple[str, int]] = set()
        for rs in real_servers:
            forward = rs.forward or forward_default
            if kind == "fwmark":
                # Only NAT can change the port; other methods keep the client's destination port.
                port = (rs.port or 0) if forward == "masq" else 0
            elif kind == "group":
                port = rs.port if rs.port is not None else key.port
            elif forward == "masq":
                port = rs.port if rs.port else key.port
            else:
                port = key.port  # keepalived resets a DR/TUN real server's port to the virtual server's
            if (rs.address, port) in seen:
                self.errors.append(
                    ConfigError(*_split_origin(rs.origin), f"real server {rs.address} {port} is duplicated; ignored")
                )
                continue
            seen.add((rs.address, port))
            dests.append(
                ConfiguredDest(
                    address=rs.address,
                    port=port,
                    forward=forward,
                    weight=rs.weight,
                    name=rs.name,
                    health_checked=rs.health_checked,
                    inhibit_on_failure=inhibit_default if rs.inhibit is None else rs.inhibit,
                    origin=rs.origin,
                )
            )
        return tuple(dests)

    # vrrp_instance NAME { interface eth0  state MASTER  virtual_ipaddress { 10.0.0.1/24 dev eth0 label eth0:1 } }
    def _vrrp_instance(self, node: _Node) -> VrrpInstance:
        if len(node.args) != 1:
            raise _Bad("expected vrrp_instance NAME {")
        if node.children is None:
            raise _Bad("expected '{' after vrrp_instance NAME")
        instance = VrrpInstance(node.args[0], origin=f"{node.path}:{node.line}")
        addresses: list[VirtualAddress] = []
        for child in node.children:
            if child.keyword == "interface" and len(child.args) == 1:
                instance = replace(instance, interface=child.args[0])
            elif child.keyword == "state" and len(child.args) == 1:
                instance = replace(instance, state=child.args[0].upper())
            elif child.keyword in ("virtual_ipaddress", "virtual_ipaddress_excluded"):
                if child.children is None:
                    self.error(child, f"expected '{{' after {child.keyword}")
                    continue
                for entry in child.children:
                    try:
                        addresses.append(_virtual_address(entry))
                    except _Bad as exc:
                        self.error(entry, str(exc))
        return replace(instance, addresses=tuple(addresses))


def _virtual_address(node: _Node) -> VirtualAddress:
    words = [token.text for token in node.words]
    if not words:
        raise _Bad("expected an address in virtual_ipaddress")
    text, _, prefix = words[0].partition("/")
    address = _address(text)
    prefixlen = None
    if prefix:
        limit = 128 if ":" in address else 32
        if not _is_uint(prefix, limit):
            raise _Bad(f"expected a prefix length 0-{limit} after {text}/, got {prefix!r}")
        prefixlen = int(prefix)
    options = dict(zip(words[1::2], words[2::2]))
    return VirtualAddress(address, prefixlen, options.get("dev"), options.get("label"))


def _scheduler(keyword: str, args: list[str]) -> str:
    if len(args) != 1:
        raise _Bad(f"expected {keyword} SCHEDULER")
    scheduler = args[0].lower()
    if scheduler not in SCHEDULER_NAMES:
        raise _Bad(f"expected a scheduler ({', '.join(SCHEDULER_NAMES)}) after {keyword}, got {args[0]!r}")
    return scheduler


def _lvs_method(keyword: str, args: list[str]) -> str:
    # TUN may be followed by "type ipip|gue port N|gre" and checksum options: the method is the first word.
    if not args or args[0].upper() not in LVS_METHODS:
        raise _Bad(f"expected {keyword} NAT, DR or TUN, got {' '.join(args)!r}")
    return LVS_METHODS[args[0].upper()]


def _bool(args: list[str], keyword: str) -> bool:
    if not args or args[0].lower() in TRUE_WORDS:
        return True
    if args[0].lower() in FALSE_WORDS:
        return False
    raise _Bad(f"expected {keyword} [on|off|true|false|yes|no], got {args[0]!r}")


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _Bad(f"expected an IP address, got {text!r}") from None


def _port(text: str) -> int:
    if not _is_uint(text, 65535):
        raise _Bad(f"expected a port 0-65535, got {text!r}")
    return int(text)


def _is_uint(text: str, limit: int) -> bool:
    return text.isdigit() and int(text) <= limit


def _family(address: str) -> str:
    return "inet6" if ":" in address else "inet"


def _netmask(text: str) -> str:
    """An IPv4 netmask as dotted quad, or an IPv6 prefix length as digits."""
    if text.isdigit() and int(text) <= 128:
        return text
    try:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{text}").netmask)
    except ValueError:
        raise _Bad(f"expected a netmask (255.255.255.0) or an IPv6 prefix length, got {text!r}") from None


def _address_range(text: str) -> list[str]:
    """10.0.0.1, 10.0.0.1-10 (last byte), 10.0.0.250-10.0.1.5, 10.0.0.8/29, 2001:db8::1-ff (last group, hex)."""
    try:
        if "/" in text:
            network = ipaddress.ip_network(text, strict=False)
            first, last = network.network_address, network.broadcast_address
        elif "-" in text:
            start, _, end = text.partition("-")
            first = ipaddress.ip_address(start)
            if first.version == 4 and end.isdigit():
                if int(end) > 255:
                    raise _Bad(f"expected the last byte (0-255) after '-' in {text!r}")
                last = ipaddress.ip_address(int(first) & ~0xFF | int(end))
            elif first.version == 6 and re.fullmatch(r"[0-9a-fA-F]{1,4}", end):
                last = ipaddress.ip_address(int(first) & ~0xFFFF | int(end, 16))
            else:
                last = ipaddress.ip_address(end)
        else:
            first = last = ipaddress.ip_address(text)
    except ValueError:
        raise _Bad(f"expected an address or an address range (10.0.0.1-10, 10.0.0.8/29), got {text!r}") from None
    if first.version != last.version or int(last) < int(first):
        raise _Bad(f"the address range {text!r} is empty or mixes IPv4 and IPv6")
    count = int(last) - int(first) + 1
    if count > MAX_RANGE:
        raise _Bad(f"the address range {text!r} has {count} addresses, more than {MAX_RANGE}")
    address_type = type(first)
    return [str(address_type(int(first) + offset)) for offset in range(count)]


def _split_origin(origin: str) -> tuple[str, int]:
    path, _, line = origin.rpartition(":")
    return path, int(line)
