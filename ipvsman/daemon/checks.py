"""Health check plugins: the interface, the shipped tcp/http/https/dns/exec checks, and loading by entry point.

A check is a class registered in the entry-point group `ipvsman.checks` under the name the
topology's `--check NAME` uses. It is made once per real server with the topology's parameters
(`Check(params)`, a dict of str -> str, raising CheckConfigError with one line for a bad or
unknown one) and then called as `await check.run(address, port)` for each round; it returns a
CheckResult (ok and a one-line reason) or raises OSError. The caller bounds every call with the
topology's timeout (cancelling it) and measures the latency, so a check only has to do its I/O:

    class Pop3Check(Check):
        name = "pop3"
        parameters = {"banner": "+OK"}

        async def run(self, address, port):
            reader, writer = await asyncio.open_connection(address, port)
            ...

and in the plugin's setup.cfg: `[options.entry_points] ipvsman.checks = pop3 = mypkg:Pop3Check`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import ipaddress
import os
import re
import secrets
import socket
import ssl
import struct
import time
from collections.abc import Mapping

from ipvsman.daemon.health import CheckResult

ENTRY_POINT_GROUP = "ipvsman.checks"
MAX_HEADER_BYTES = 16384  # an HTTP status line and headers past this are a broken server
DEFAULT_MAX_BODY = 65536


class CheckConfigError(ValueError):
    """A check's parameters that cannot work; the message is one line naming the parameter."""


class Check:
    """The base of every check: parameters by name with their defaults (None: required)."""

    name = ""
    parameters: Mapping[str, str | None] = {}

    def __init__(self, params: Mapping[str, str]):
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            known = ", ".join(f"--{name}" for name in self.parameters) or "none"
            raise CheckConfigError(f"check {self.name}: unknown parameter --{unknown[0]} (it takes: {known})")
        self.params = {name: params.get(name, default) for name, default in self.parameters.items()}
        missing = [name for name, value in self.params.items() if value is None]
        if missing:
            raise CheckConfigError(f"check {self.name}: needs --{missing[0]}")

    async def run(self, address: str, port: int) -> CheckResult:
        raise NotImplementedError


def one_line(exc: BaseException) -> str:
    """An exception as a short line: the errno's text when there is one."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


async def run_check(check: Check, address: str, port: int, timeout: float) -> CheckResult:
    """One round of a check, bounded by `timeout`; never raises (but for cancellation)."""
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(check.run(address, port), timeout)
    except TimeoutError:
        return CheckResult(False, f"timed out after {timeout:g} s", None)
    except OSError as exc:
        return CheckResult(False, one_line(exc), None)
    except Exception as exc:  # a plugin's bug must not stop the daemon: it is that server's failure
        return CheckResult(False, f"check {check.name} failed: {type(exc).__name__}: {one_line(exc)}", None)
    return CheckResult(result.ok, result.reason, round((time.monotonic() - started) * 1000, 3))


# -- tcp ----------------------------------------------------------------------------------------


class TcpCheck(Check):
    """A TCP connect, closed with a reset: thousands a second leave no TIME_WAIT behind."""

    name = "tcp"
    parameters: Mapping[str, str | None] = {}

    async def run(self, address: str, port: int) -> CheckResult:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await asyncio.get_running_loop().sock_connect(sock, (address, port))
        finally:
            sock.close()
        return CheckResult(True)


# -- http, https --------------------------------------------------------------------------------


def _status_ranges(text: str) -> list[tuple[int, int]]:
    """'200' / '200-399' / '200+301' -> inclusive ranges."""
    ranges = []
    for part in text.split("+"):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise CheckConfigError(f"check http: --expect takes a status, a range or several joined by +, got {text!r}")
        ranges.append((int(low), int(high or low)))
    return ranges


class HttpCheck(Check):
    """An HTTP/1.0 request: the status must be expected and, with --match, the bounded body match."""

    name = "http"
    parameters: Mapping[str, str | None] = {
        "method": "GET",
        "path": "/",
        "host": "",  # the Host header; default the real server's address
        "expect": "200",
        "match": "",  # a regular expression searched in the first --max-body bytes of the body
        "max-body": str(DEFAULT_MAX_BODY),
    }
    use_tls = False

    def __init__(self, params: Mapping[str, str]):
        super().__init__(params)
        self.method = self.params["method"].upper()
        if not re.fullmatch(r"[A-Z]+", self.method):
            raise CheckConfigError(f"check {self.name}: --method must be a word like GET or HEAD, got {self.method!r}")
        self.path = self.params["path"]
        if not self.path.startswith("/") or any(c.isspace() or ord(c) < 32 for c in self.path):
            raise CheckConfigError(f"check {self.name}: --path must start with / and hold no spaces, got {self.path!r}")
        self.expect = _status_ranges(self.params["expect"])
        try:
            self.match = re.compile(self.params["match"].encode()) if self.params["match"] else None
        except re.error as exc:
            raise CheckConfigError(f"check {self.name}: --match is not a regular expression: {exc}") from None
        if not self.params["max-body"].isdigit():
            raise CheckConfigError(f"check {self.name}: --max-body must be a number of bytes")
        self.max_body = int(self.params["max-body"])
        self.tls = self._tls_context() if self.use_tls else None

    def _tls_context(self) -> ssl.SSLContext:
        # Real servers are reached by address, not by the name on their certificate: the check
        # is of the service answering, not of the certificate (which clients check on the VIP).
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def _request(self, address: str, port: int) -> bytes:
        host = self.params["host"] or (f"[{address}]" if ":" in address else address)
        return (
            f"{self.method} {self.path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ipvsmand\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")

    async def run(self, address: str, port: int) -> CheckResult:
        reader, writer = await asyncio.open_connection(address, port, ssl=self.tls, limit=MAX_HEADER_BYTES)
        try:
            writer.write(self._request(address, port))
            await writer.drain()
            return await self._read_response(reader)
        finally:
            writer.transport.abort()

    async def _read_response(self, reader: asyncio.StreamReader) -> CheckResult:
        try:
            status_line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return CheckResult(False, "connection closed before an HTTP status line")
        except asyncio.LimitOverrunError:
            return CheckResult(False, f"HTTP status line longer than {MAX_HEADER_BYTES} bytes")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return CheckResult(False, f"not an HTTP response: {status_line[:60]!r}")
        status = int(parts[1])
        header_bytes = len(status_line)
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return CheckResult(False, "connection closed inside the HTTP headers")
            except asyncio.LimitOverrunError:
                return CheckResult(False, f"HTTP headers longer than {MAX_HEADER_BYTES} bytes")
            header_bytes += len(line)
            if header_bytes > MAX_HEADER_BYTES:
                return CheckResult(False, f"HTTP headers longer than {MAX_HEADER_BYTES} bytes")
            if line in (b"\r\n", b"\n"):
                break
        if not any(low <= status <= high for low, high in self.expect):
            return CheckResult(False, f"HTTP {status}")
        if self.match is None:
            return CheckResult(True)
        body = b""
        while len(body) < self.max_body:
            chunk = await reader.read(self.max_body - len(body))
            if not chunk:
                break
            body += chunk
        if self.match.search(body):
            return CheckResult(True)
        return CheckResult(False, f"HTTP {status}: no match for {self.params['match']!r} in the first {len(body)} bytes")


class HttpsCheck(HttpCheck):
    """HTTP over TLS; the certificate is not verified (real servers are reached by address)."""

    name = "https"
    use_tls = True


# -- dns ----------------------------------------------------------------------------------------

DNS_TYPES = {"A": 1, "AAAA": 28}
DNS_RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def dns_query(query_id: int, name: str, qtype: int) -> bytes:
    """A DNS query (RFC 1035) for one name, recursion desired."""
    labels = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split(".") if label)
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return offset + 2
        offset += 1 + length
        if length == 0:
            return offset


def dns_answers(data: bytes, query_id: int, qtype: int) -> tuple[int, list[str]]:
    """(rcode, the addresses of the answers of `qtype`) of a reply; ValueError when it is not one."""
    try:
        reply_id, flags, qdcount, ancount, _, _ = struct.unpack_from("!HHHHHH", data)
        if reply_id != query_id or not flags & 0x8000:
            raise ValueError("not the reply to our query")
        offset = 12
        for _ in range(qdcount):
            offset = _skip_name(data, offset) + 4
        addresses = []
        for _ in range(ancount):
            offset = _skip_name(data, offset)
            rtype, _, _, length = struct.unpack_from("!HHIH", data, offset)
            offset += 10
            rdata = data[offset : offset + length]
            if len(rdata) != length:
                raise ValueError("answer runs past the end")
            offset += length
            if rtype == qtype and length in (4, 16):
                addresses.append(str(ipaddress.ip_address(rdata)))
        return flags & 0x000F, addresses
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed DNS reply ({exc})") from None


class _DatagramWaiter(asyncio.DatagramProtocol):
    def __init__(self):
        self.reply: asyncio.Future = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc):
        if not self.reply.done():
            self.reply.set_exception(exc)


class DnsCheck(Check):
    """A DNS query over UDP: the reply must be NOERROR and, with --answer, hold that address."""

    name = "dns"
    parameters: Mapping[str, str | None] = {"query": None, "type": "A", "answer": ""}

    def __init__(self, params: Mapping[str, str]):
        super().__init__(params)
        qtype = self.params["type"].upper()
        if qtype not in DNS_TYPES:
            raise CheckConfigError(f"check dns: --type must be A or AAAA, got {self.params['type']!r}")
        self.qtype = DNS_TYPES[qtype]
        name = self.params["query"]
        if not all(0 < len(label) < 64 and label.isascii() for label in name.rstrip(".").split(".")):
            raise CheckConfigError(f"check dns: --query must be a domain name, got {name!r}")
        self.answer = ""
        if self.params["answer"]:
            try:
                self.answer = str(ipaddress.ip_address(self.params["answer"]))
            except ValueError:
                raise CheckConfigError(f"check dns: --answer must be an address, got {self.params['answer']!r}") from None

    async def run(self, address: str, port: int) -> CheckResult:
        query_id = secrets.randbelow(65536)
        loop = asyncio.get_running_loop()
        transport, waiter = await loop.create_datagram_endpoint(_DatagramWaiter, remote_addr=(address, port))
        try:
            transport.sendto(dns_query(query_id, self.params["query"], self.qtype))
            while True:
                data = await waiter.reply
                try:
                    rcode, addresses = dns_answers(data, query_id, self.qtype)
                    break
                except ValueError as exc:
                    if "not the reply" not in str(exc):
                        return CheckResult(False, str(exc))
                    waiter.reply = loop.create_future()  # a stray datagram: keep waiting
        finally:
            transport.close()
        if rcode:
            return CheckResult(False, f"DNS {DNS_RCODES.get(rcode, rcode)}")
        if self.answer and self.answer not in addresses:
            found = ", ".join(addresses) or "no address"
            return CheckResult(False, f"DNS answered {found}, expected {self.answer}")
        return CheckResult(True)


# -- exec ---------------------------------------------------------------------------------------


class ExecCheck(Check):
    """A command run as `COMMAND ADDRESS PORT`: exit status 0 is up. It is killed at the timeout."""

    name = "exec"
    parameters: Mapping[str, str | None] = {"command": None}

    def __init__(self, params: Mapping[str, str]):
        super().__init__(params)
        if not os.path.isabs(self.params["command"]):
            raise CheckConfigError(f"check exec: --command must be an absolute path, got {self.params['command']!r}")

    async def run(self, address: str, port: int) -> CheckResult:
        proc = await asyncio.create_subprocess_exec(
            self.params["command"], address, str(port),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            status = await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled by the timeout: the command must not outlive it
                proc.kill()
                await proc.wait()
        if status == 0:
            return CheckResult(True)
        if status < 0:
            return CheckResult(False, f"{os.path.basename(self.params['command'])} killed by signal {-status}")
        return CheckResult(False, f"{os.path.basename(self.params['command'])} exited {status}")


# -- loading ------------------------------------------------------------------------------------

BUILTIN_CHECKS: dict[str, type[Check]] = {
    check.name: check for check in (TcpCheck, HttpCheck, HttpsCheck, DnsCheck, ExecCheck)
}


def available_checks() -> dict[str, importlib.metadata.EntryPoint | type[Check]]:
    """Every check by name: the entry points of `ipvsman.checks`, and the shipped ones when this
    package runs from a checkout that was not installed (no entry points of its own)."""
    found: dict[str, importlib.metadata.EntryPoint | type[Check]] = dict(BUILTIN_CHECKS)
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[entry_point.name] = entry_point
    return found


def load_check(name: str, params: Mapping[str, str], checks=None) -> Check:
    """The check `name` made with `params`; CheckConfigError (one line) when it cannot be."""
    checks = available_checks() if checks is None else checks
    found = checks.get(name)
    if found is None:
        raise CheckConfigError(f"no check named {name!r} (installed: {', '.join(sorted(checks))})")
    if isinstance(found, importlib.metadata.EntryPoint):
        try:
            found = found.load()
        except Exception as exc:
            raise CheckConfigError(f"check {name}: cannot load {found.value}: {one_line(exc)}") from None
    if not (isinstance(found, type) and issubclass(found, Check)):
        raise CheckConfigError(f"check {name}: {found!r} is not an ipvsman.daemon.checks.Check")
    return found(dict(params))

