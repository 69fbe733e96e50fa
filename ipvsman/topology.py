"""Configured services: the types keepalived.conf and topology files produce, and the topology file parser.

A topology file (the 2007 ipvsman syntax) defines one virtual service per line:

    MyService:t:193.123.45.12:80 ["Intel_web1-10:10.3.0.10+:8080","AMD_spare5+:10.4.6.24-28:80"] (-m -swrr)

- NAME:PROTO:VIP:PORT, PROTO being t (TCP), u (UDP), s (SCTP) or f (firewall mark: the VIP field
  is then the mark and the port may be left out, as in `Mail:f:12`). IPv6 VIPs go in brackets.
- A list of real servers, each "NAMES:ADDRESSES[:PORT][ OPTIONS]":
  NAMES is a name (`ldap4`), a range (`web1-10`: web1 .. web10, `web01-10` keeps the zero padding)
  or a start with + (`spare5+`: spare5, spare6, ... as many as there are addresses);
  ADDRESSES is an address, a range (`10.4.6.24-28`, `10.0.0.250-10.0.1.3`, `[2001:db8::a-f]`) or
  a start with + (`10.3.0.10+`: consecutive addresses, as many as there are names).
  The port defaults to the service's; options after a space apply to that real server only.
- Options in parentheses, as ipvsadm spells them: -m (masquerading), -g (direct routing, the
  default), -i (tunnel), -s SCHED (default wlc), -w WEIGHT (default 1), -p [TIMEOUT] (default 300),
  -M NETMASK, -6 (an IPv6 firewall-mark service).
- Health checks for ipvsmand, in the same parentheses (for every real server of the line) or in a
  real server's own options (for it alone, over the line's): --check NAME (tcp, http, https, dns,
  exec, or a plugin's name), --interval S (default 2), --timeout S (default 3), --rise N and
  --fall N (default 3), --on-failure quiesce|remove (default quiesce: weight 0, its connections
  drain), and the check's own parameters, each --NAME VALUE (--path /health, --expect 200, ...;
  see ipvsman.daemon.checks). Values are single words: no spaces, commas or parentheses. A line
  with none of them gets a TCP connect check of each real server when ipvsmand runs it:

      Web:t:10.0.0.1:80 ["web1-4:10.0.1.1+:8080"] (-s wrr --check http --path /health --fall 2)
      DNS:u:10.0.0.2:53 ["ns1:10.0.2.1", "ns2:10.0.2.2 --check tcp"] (--check dns --query a.example)

Blank lines and # comments are skipped. A bad line is reported with its file and line number and
the rest of the file still counts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ipvsman.model import SCHEDULER_NAMES, DestKey, ServiceKey

DEFAULT_SCHEDULER = "wlc"  # what ipvsadm and keepalived pick when none is given
IPVSADM_PERSISTENCE = 300  # ipvsadm -p without a timeout
MAX_RANGE = 65536  # an address or name range longer than this is a typo, not a cluster

PROTOCOL_LETTERS = {"t": "tcp", "u": "udp", "s": "sctp"}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in a configuration file: where it is and what was expected."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


FAILURE_ACTIONS = ("quiesce", "remove")


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """How ipvsmand checks a real server: the plugin, its timing and its own parameters."""

    check: str = "tcp"
    interval: float = 2.0
    timeout: float = 3.0
    rise: int = 3
    fall: int = 3
    on_failure: str = "quiesce"  # or "remove"
    params: tuple[tuple[str, str], ...] = ()  # the plugin's parameters, sorted by name

    def param(self, name: str, default: str | None = None) -> str | None:
        return dict(self.params).get(name, default)


@dataclass(frozen=True, slots=True)
class ConfiguredDest:
    """A real server as a configuration file defines it."""

    address: str
    port: int
    forward: str  # a key of model.FORWARD_LABELS
    weight: int = 1
    name: str | None = None
    health_checked: bool = False  # keepalived removes it (or sets weight 0) while its check fails
    inhibit_on_failure: bool = False  # keepalived sets weight 0 instead of removing it
    origin: str = ""  # "file:line" of its definition
    check: CheckSpec | None = None  # ipvsmand's health check: the line's, with its own options over it


@dataclass(frozen=True, slots=True)
class ConfiguredService:
    """A virtual service as a configuration file defines it."""

    key: ServiceKey
    scheduler: str
    dests: tuple[ConfiguredDest, ...] = ()
    name: str | None = None
    persistent: int | None = None  # persistence timeout in seconds, None when not persistent
    netmask: str = ""  # persistence granularity as written; "" means a single address
    origin: str = ""
    sorry_servers: tuple[ConfiguredDest, ...] = ()  # keepalived's sorry_server: there only while quorum is lost
    check: CheckSpec | None = None  # the health check options of the line itself (ipvsmand)

    def find_dest(self, address: str, port: int) -> ConfiguredDest | None:
        for dest in self.dests:
            if dest.address == address and dest.port == port:
                return dest
        return None

    def dest_key(self, dest: ConfiguredDest) -> DestKey:
        return DestKey(self.key, dest.address, dest.port)


@dataclass(frozen=True, slots=True)
class VirtualAddress:
    """An address a keepalived vrrp_instance moves between directors."""

    address: str
    prefixlen: int | None = None
    interface: str | None = None  # "dev IFNAME" when given
    label: str | None = None


@dataclass(frozen=True, slots=True)
class VrrpInstance:
    """A keepalived vrrp_instance: the interface it runs on and the addresses it holds as master."""

    name: str
    interface: str | None = None
    state: str | None = None  # MASTER or BACKUP as configured (the start state)
    addresses: tuple[VirtualAddress, ...] = ()
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Configuration:
    """What one configuration file (with its includes) says the director should run."""

    source: str  # "topology" or "keepalived"
    path: str
    services: tuple[ConfiguredService, ...] = ()
    vrrp_instances: tuple[VrrpInstance, ...] = ()
    errors: tuple[ConfigError, ...] = ()
    files: tuple[str, ...] = ()  # every file read, includes too

    def find_service(self, key: ServiceKey) -> ConfiguredService | None:
        for service in self.services:
            if service.key == key:
                return service
        return None

    def find_dest(self, key: DestKey) -> ConfiguredDest | None:
        service = self.find_service(key.service)
        return service.find_dest(key.address, key.port) if service else None

    def service_names(self) -> dict[ServiceKey, str]:
        return {service.key: service.name for service in self.services if service.name}

    def dest_names(self) -> dict[DestKey, str]:
        return {
            service.dest_key(dest): dest.name for service in self.services for dest in service.dests if dest.name
        }

    def host_names(self) -> dict[str, str]:
        """Address -> name of every named real server; the first definition of an address wins."""
        names: dict[str, str] = {}
        for service in self.services:
            for dest in service.dests:
                if dest.name:
                    names.setdefault(dest.address, dest.name)
        return names


# -- the topology file --------------------------------------------------------------------------


class TopologyError(ValueError):
    """A topology line that cannot be understood; the message says what was expected."""


def read_topology(path: str) -> Configuration:
    """Parse a topology file; an unreadable file is one error, not an exception."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError as exc:
        return Configuration("topology", path, errors=(ConfigError(path, 0, f"cannot read: {exc.strerror}"),))
    return parse_topology(text, path)


def parse_topology(text: str, path: str = "<topology>") -> Configuration:
    services: list[ConfiguredService] = []
    errors: list[ConfigError] = []
    seen: dict[ServiceKey, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        try:
            service = parse_service_line(line, origin=f"{path}:{number}")
        except TopologyError as exc:
            errors.append(ConfigError(path, number, str(exc)))
            continue
        if service.key in seen:
            errors.append(ConfigError(path, number, f"{service.key} is already defined on line {seen[service.key]}"))
            continue
        seen[service.key] = number
        services.append(service)
    return Configuration("topology", path, services=tuple(services), errors=tuple(errors), files=(path,))


def _strip_comment(line: str) -> str:
    """Drop a # comment, but not a # inside a quoted real server."""
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:index]
    return line


_LINE = re.compile(
    r"""^(?P<head>(?:[^\s\[(]|\[[0-9A-Fa-f:.]*\])+)  # NAME:PROTO:VIP:PORT, an IPv6 VIP in brackets
        \s*(?:\[(?P<dests>.*)\])?     # ["real server", ...]
        \s*(?:\((?P<options>[^)]*)\))?  # (-m -swrr)
        \s*$""",
    re.VERBOSE,
)


def parse_service_line(line: str, origin: str = "") -> ConfiguredService:
    """One topology line -> a configured service; raises TopologyError."""
    match = _LINE.match(line)
    if not match:
        raise TopologyError('expected NAME:PROTO:VIP:PORT ["NAMES:ADDRESSES:PORT", ...] (OPTIONS)')
    name, key = _parse_head(match["head"])
    options = _parse_options(_split_options(match["options"] or ""), "service options")
    if key.fwmark and options.ipv6:
        key = ServiceKey("inet6", None, "", 0, key.fwmark)
    dest_specs = _split_dest_list(match["dests"]) if match["dests"] is not None else []
    service_check = check_spec(options.check)
    dests: list[ConfiguredDest] = []
    for spec in dest_specs:
        dests.extend(_expand_dests(spec, key, options, origin, service_check))
    if key.fwmark and not options.ipv6 and dests and all(":" in dest.address for dest in dests):
        # A firewall mark has no address to tell the family by: the real servers do.
        key = ServiceKey("inet6", None, "", 0, key.fwmark)
    seen: set[tuple[str, int]] = set()
    for dest in dests:
        if (dest.address, dest.port) in seen:
            raise TopologyError(f"real server {dest.address}:{dest.port} is listed twice")
        seen.add((dest.address, dest.port))
        if not key.fwmark and _family(dest.address) != key.af and dest.forward != "tunnel":
            raise TopologyError(f"real server {dest.address} is not of the VIP's address family")
    persistent = options.persistent
    return ConfiguredService(
        key=key,
        scheduler=options.scheduler or DEFAULT_SCHEDULER,
        dests=tuple(dests),
        name=name or None,
        persistent=persistent,
        netmask=options.netmask or "",
        origin=origin,
        check=service_check,
    )


def _parse_head(head: str) -> tuple[str, ServiceKey]:
    name, sep, rest = head.partition(":")
    protocol, sep2, rest = rest.partition(":")
    if not sep or not sep2:
        raise TopologyError(f"expected NAME:PROTO:VIP:PORT, got {head!r}")
    protocol = protocol.lower()
    if protocol == "f":
        mark_text, _, port_text = rest.partition(":")
        if not mark_text.isdigit() or not 0 < int(mark_text) < 2**32:
            raise TopologyError(f"expected a firewall mark (1-4294967295) after 'f:', got {mark_text!r}")
        if port_text and not port_text.isdigit():
            raise TopologyError(f"expected a port after the firewall mark, got {port_text!r}")
        return name, ServiceKey("inet", None, "", 0, int(mark_text))
    if protocol not in PROTOCOL_LETTERS:
        raise TopologyError(f"expected protocol t, u, s or f, got {protocol!r}")
    address_text, port_text = _split_address_port(rest)
    address = _parse_address(address_text, "VIP")
    port = _parse_port(port_text, "VIP port")
    return name, ServiceKey(_family(address), PROTOCOL_LETTERS[protocol], address, port)


def _split_address_port(text: str) -> tuple[str, str]:
    """'10.0.0.1:80' or '[2001:db8::1]:80' -> (address, port text); the port may be empty."""
    if text.startswith("["):
        address, sep, rest = text[1:].partition("]")
        if not sep:
            raise TopologyError(f"expected ']' after the IPv6 address in {text!r}")
        if rest.startswith("+"):  # [2001:db8::10]+: a start, as many as there are names
            address, rest = address + "+", rest[1:]
        if rest and not rest.startswith(":"):
            raise TopologyError(f"expected ':PORT' after [{address}], got {rest!r}")
        return address, rest[1:]
    if text.count(":") > 1:
        raise TopologyError(f"expected an IPv6 address in brackets ([2001:db8::1]:PORT), got {text!r}")
    address, _, port = text.partition(":")
    return address, port


def _parse_address(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise TopologyError(f"expected an IP address for the {what}, got {text!r}") from None


def _parse_port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise TopologyError(f"expected a {what} (0-65535), got {text!r}")
    return int(text)


def _family(address: str) -> str:
    return "inet6" if ":" in address else "inet"


# -- options ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Options:
    forward: str | None = None
    scheduler: str | None = None
    weight: int | None = None
    persistent: int | None = None
    netmask: str | None = None
    ipv6: bool = False
    check: tuple[tuple[str, str], ...] = ()  # --NAME VALUE health check options, in order


_CHECK_OPTION = re.compile(r"^--[a-z][a-z0-9-]*$")

_FORWARD_FLAGS = {
    "-m": "masq",
    "--masquerading": "masq",
    "-g": "route",
    "--gatewaying": "route",
    "-i": "tunnel",
    "--ipip": "tunnel",
}


def _split_options(text: str) -> list[str]:
    return text.replace(",", " ").split()


def _parse_options(words: list[str], what: str) -> _Options:
    """ipvsadm-style options: -m -g -i -s SCHED -w N -p [N] -M MASK -6, joined or separate."""
    values: dict[str, object] = {}
    index = 0

    def argument(option: str, inline: str) -> str:
        nonlocal index
        if inline:
            return inline
        if index + 1 >= len(words):
            raise TopologyError(f"expected a value after {option} in {what}")
        index += 1
        return words[index]

    while index < len(words):
        word = words[index]
        flag, inline = _split_flag(word)
        if flag in _FORWARD_FLAGS and not inline:
            values["forward"] = _FORWARD_FLAGS[flag]
        elif flag in ("-s", "--scheduler"):
            scheduler = argument(flag, inline).lower()
            if scheduler not in SCHEDULER_NAMES:
                raise TopologyError(f"expected a scheduler ({', '.join(SCHEDULER_NAMES)}), got {scheduler!r}")
            values["scheduler"] = scheduler
        elif flag in ("-w", "--weight"):
            text = argument(flag, inline)
            if not text.isdigit() or int(text) > 65535:
                raise TopologyError(f"expected a weight (0-65535) after {flag}, got {text!r}")
            values["weight"] = int(text)
        elif flag in ("-p", "--persistent"):
            if inline:
                timeout_text = inline
            elif index + 1 < len(words) and words[index + 1].isdigit():
                index += 1
                timeout_text = words[index]
            else:
                timeout_text = str(IPVSADM_PERSISTENCE)
            if not timeout_text.isdigit() or int(timeout_text) == 0:
                raise TopologyError(f"expected a persistence timeout in seconds after {flag}, got {timeout_text!r}")
            values["persistent"] = int(timeout_text)
        elif flag in ("-M", "--netmask"):
            values["netmask"] = _parse_netmask(argument(flag, inline))
        elif flag == "-6" and not inline:
            values["ipv6"] = True
        elif _CHECK_OPTION.match(flag):
            check = values.setdefault("check", [])
            check.append((flag[2:], argument(flag, inline)))  # type: ignore[union-attr]
        else:
            raise TopologyError(
                f"unknown option {word!r} in {what} (expected -m, -g, -i, -s, -w, -p, -M, -6 or --CHECK-OPTION VALUE)"
            )
        index += 1
    if "check" in values:
        values["check"] = tuple(values["check"])  # type: ignore[arg-type]
    return _Options(**values)  # type: ignore[arg-type]


def check_spec(words: tuple[tuple[str, str], ...], base: CheckSpec | None = None) -> CheckSpec | None:
    """--NAME VALUE health check options over `base` -> a CheckSpec; None when there are none at all."""
    if not words:
        return base
    fields: dict[str, object] = {}
    params = dict(base.params) if base else {}
    if base is not None and any(name == "check" and value != base.check for name, value in words):
        params = {}  # another plugin: the line's parameters were for the line's check
    for name, value in words:
        key = name.replace("-", "_")
        if key == "check":
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", value):
                raise TopologyError(
                    f"expected a check name (tcp, http, https, dns, exec, ...) after --check, got {value!r}"
                )
            fields["check"] = value
        elif key in ("interval", "timeout"):
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not 0 < number <= 86400:
                raise TopologyError(f"expected seconds (more than 0) after --{name}, got {value!r}")
            fields[key] = number
        elif key in ("rise", "fall"):
            if not value.isdigit() or not 1 <= int(value) <= 1000:
                raise TopologyError(f"expected a count (1-1000) after --{name}, got {value!r}")
            fields[key] = int(value)
        elif key == "on_failure":
            if value not in FAILURE_ACTIONS:
                raise TopologyError(f"expected quiesce or remove after --on-failure, got {value!r}")
            fields[key] = value
        else:
            params[name] = value
    spec = base or CheckSpec()
    return CheckSpec(
        check=fields.get("check", spec.check),  # type: ignore[arg-type]
        interval=fields.get("interval", spec.interval),  # type: ignore[arg-type]
        timeout=fields.get("timeout", spec.timeout),  # type: ignore[arg-type]
        rise=fields.get("rise", spec.rise),  # type: ignore[arg-type]
        fall=fields.get("fall", spec.fall),  # type: ignore[arg-type]
        on_failure=fields.get("on_failure", spec.on_failure),  # type: ignore[arg-type]
        params=tuple(sorted(params.items())),
    )


def _split_flag(word: str) -> tuple[str, str]:
    """'-swrr' -> ('-s', 'wrr'); '--weight=3' -> ('--weight', '3'); '-m' -> ('-m', '')."""
    if word.startswith("--"):
        flag, _, value = word.partition("=")
        return flag, value
    if word.startswith("-") and len(word) > 2:
        return word[:2], word[2:]
    return word, ""


def _parse_netmask(text: str) -> str:
    try:
        if text.isdigit():
            return text  # an IPv6 prefix length, as ipvsadm takes it
        return str(ipaddress.IPv4Network(f"0.0.0.0/{text}").netmask)
    except ValueError:
        raise TopologyError(f"expected a netmask after -M, got {text!r}") from None


# -- real server lists --------------------------------------------------------------------------


def _split_dest_list(text: str) -> list[str]:
    """'"a:1.2.3.4:80", "b:..."' -> the quoted strings; anything else between them is an error."""
    specs: list[str] = []
    position = 0
    text = text.strip()
    while position < len(text):
        if text[position] in " \t,":
            position += 1
            continue
        if text[position] != '"':
            raise TopologyError(f'expected a quoted real server ("NAMES:ADDRESSES:PORT") at {text[position:]!r}')
        end = text.find('"', position + 1)
        if end < 0:
            raise TopologyError(f"expected a closing quote after {text[position:]!r}")
        specs.append(text[position + 1 : end])
        position = end + 1
    return specs


def _expand_dests(
    spec: str, service: ServiceKey, defaults: _Options, origin: str, service_check: CheckSpec | None = None
) -> list[ConfiguredDest]:
    """One "NAMES:ADDRESSES:PORT [OPTIONS]" -> its real servers, names and addresses paired in order."""
    body, _, option_text = spec.strip().partition(" ")
    own = _parse_options(_split_options(option_text), f"real server {body!r}")
    name_spec, sep, rest = body.partition(":")
    if not sep or not rest:
        raise TopologyError(f"expected NAMES:ADDRESSES[:PORT] for a real server, got {spec!r}")
    address_spec, port_text = _split_address_port(rest)
    port = _parse_port(port_text, "real server port") if port_text else service.port
    name_start, name_count = _parse_name_range(name_spec)
    first, last, address_open = _parse_address_range(address_spec)
    if name_count is None and address_open:
        raise TopologyError(f"{spec!r}: the name and the address both say 'as many as the other'")
    if address_open:
        count = name_count
    else:
        count = int(last) - int(first) + 1
        if name_count is not None and name_count != count:
            raise TopologyError(f"{spec!r}: {name_count} names for {count} addresses")
    assert count is not None
    if count > MAX_RANGE:
        raise TopologyError(f"{spec!r}: {count} real servers is more than {MAX_RANGE}")
    if int(first) + count - 1 > _max_address(first):
        raise TopologyError(f"{spec!r}: the address range runs past the end of the address space")
    forward = own.forward or defaults.forward or "route"
    weight = own.weight if own.weight is not None else defaults.weight if defaults.weight is not None else 1
    names = list(_names(name_start, count))
    check = check_spec(own.check, service_check)
    return [
        ConfiguredDest(
            address=str(first + offset),
            port=port,
            forward=forward,
            weight=weight,
            name=names[offset],
            origin=origin,
            check=check,
        )
        for offset in range(count)
    ]


_NAME_RANGE = re.compile(r"^(?P<prefix>.*?)(?P<start>\d+)(?:-(?P<end>\d+)|(?P<open>\+))$")


@dataclass(frozen=True, slots=True)
class _NameStart:
    prefix: str
    start: int | None  # None: one literal name
    width: int  # digits of the start, kept as zero padding


def _parse_name_range(text: str) -> tuple[_NameStart, int | None]:
    """'web1-10' -> (web, 1), 10; 'spare5+' -> (spare, 5), None (as many as addresses); 'ldap4' -> 1."""
    if not text:
        return _NameStart("", None, 0), None  # unnamed: as many as there are addresses
    if text.endswith("+") and not re.search(r"\d\+$", text):
        raise TopologyError(f"expected digits before the + in the name {text!r}")
    match = _NAME_RANGE.match(text)
    if match is None or (match["end"] is None and match["open"] is None):
        if "+" in text:
            raise TopologyError(f"expected NAME, NAME1-10 or NAME5+ for real server names, got {text!r}")
        return _NameStart(text, None, 0), 1
    start = int(match["start"])
    width = len(match["start"]) if match["start"].startswith("0") else 0
    if match["open"]:
        return _NameStart(match["prefix"], start, width), None
    end = int(match["end"])
    if end < start:
        raise TopologyError(f"the name range {text!r} runs backwards")
    return _NameStart(match["prefix"], start, width), end - start + 1


def _names(start: _NameStart, count: int) -> Iterator[str | None]:
    if start.start is None:
        for _ in range(count):
            yield start.prefix or None  # one literal name for one address (or no name at all)
        return
    for number in range(start.start, start.start + count):
        yield f"{start.prefix}{number:0{start.width}d}"


def _parse_address_range(text: str) -> tuple[IPAddress, IPAddress, bool]:
    """'10.0.0.1' / '10.0.0.1-9' / '10.0.0.250-10.0.1.3' / '10.0.0.1+' / '[2001:db8::a-f]'.

    Returns (first, last, open): open is true for 'A+' (as many as there are names).
    """
    open_range = text.endswith("+")
    if open_range:
        text = text[:-1]
    text = text.removeprefix("[").removesuffix("]")
    start_text, dash, end_text = text.partition("-")
    first = ipaddress.ip_address(_parse_address(start_text, "real server"))
    if open_range:
        if dash:
            raise TopologyError(f"expected a range (A-B) or a start (A+), not both, in {text!r}")
        return first, first, True
    if not dash:
        return first, first, False
    if end_text.isdigit() and first.version == 4:
        last_octet = int(end_text)
        if last_octet > 255:
            raise TopologyError(f"expected the last octet (0-255) after '-', got {end_text!r}")
        last = ipaddress.ip_address(int(first) & ~0xFF | last_octet)
    elif first.version == 6 and re.fullmatch(r"[0-9a-fA-F]{1,4}", end_text):
        last = ipaddress.ip_address(int(first) & ~0xFFFF | int(end_text, 16))
    else:
        last = ipaddress.ip_address(_parse_address(end_text, "end of the real server range"))
        if last.version != first.version:
            raise TopologyError(f"the range {text!r} mixes IPv4 and IPv6")
    if int(last) < int(first):
        raise TopologyError(f"the address range {text!r} runs backwards")
    return first, last, False


def _max_address(address: IPAddress) -> int:
    return 2**32 - 1 if address.version == 4 else 2**128 - 1

