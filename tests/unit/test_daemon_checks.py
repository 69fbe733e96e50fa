"""The shipped check plugins against servers of the test's own on loopback, and plugin loading by entry point."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import textwrap
import threading
import time

import pytest
from test_daemon_helpers import Dns, Web, closed_port

from ipvsman.daemon.checks import (
    DEFAULT_MAX_BODY,
    Check,
    CheckConfigError,
    HttpCheck,
    available_checks,
    dns_query,
    load_check,
    run_check,
)
from ipvsman.daemon.health import CheckResult


def check(name: str, port: int, timeout: float = 2.0, address: str = "127.0.0.1", **params) -> CheckResult:
    made = load_check(name, {key.replace("_", "-"): value for key, value in params.items()})
    return asyncio.run(run_check(made, address, port, timeout))


@pytest.fixture
def web():
    server = Web()
    yield server
    server.close()


# -- tcp ----------------------------------------------------------------------------------------


def test_tcp_connects_to_a_listener_and_reports_a_refusal(web):
    result = check("tcp", web.port)
    assert result.ok and result.reason == "" and result.latency_ms is not None and result.latency_ms >= 0
    refused = check("tcp", closed_port())
    assert not refused.ok and refused.reason == "connection refused" and refused.latency_ms is None


# -- http ---------------------------------------------------------------------------------------


def test_http_sends_method_path_and_host_and_checks_the_status(web):
    result = check("http", web.port, method="head", path="/health", host="www.example")
    assert result.ok, result
    assert web.requests[-1] == ("HEAD", "/health", "www.example")
    web.status = 503
    failed = check("http", web.port)
    assert not failed.ok and failed.reason == "HTTP 503" and failed.latency_ms is not None
    assert web.requests[-1] == ("GET", "/", "127.0.0.1")  # the default Host is the real server's address
    assert check("http", web.port, expect="500-599").ok
    assert check("http", web.port, expect="200+503").ok


def test_http_past_the_timeout_fails_without_latency(web):
    web.delay = 1.0
    started = time.monotonic()
    result = check("http", web.port, timeout=0.2)
    assert time.monotonic() - started < 0.9  # the check did not wait for the answer
    assert not result.ok and result.reason == "timed out after 0.2 s" and result.latency_ms is None


def test_http_body_match_and_a_body_past_the_bound(web):
    web.body = b"status: all good\n"
    assert check("http", web.port, match="all good").ok
    missing = check("http", web.port, match="degraded")
    assert not missing.ok and "no match for 'degraded'" in missing.reason
    web.body = b"x" * 5000 + b"MARKER"
    assert check("http", web.port, match="MARKER").ok
    bounded = check("http", web.port, match="MARKER", max_body="4096")
    assert not bounded.ok and "in the first 4096 bytes" in bounded.reason
    web.body = b"y" * (DEFAULT_MAX_BODY * 4)  # huge: read only up to the bound
    assert not check("http", web.port, match="MARKER").ok


def _serve_raw(payload: bytes) -> int:
    """A loopback TCP server answering every connection with `payload`, then closing it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(payload)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_http_refuses_bad_responses():
    garbage = check("http", _serve_raw(b"SSH-2.0-OpenSSH_9.2\r\n"))
    assert not garbage.ok and garbage.reason.startswith("not an HTTP response")
    closed = check("http", _serve_raw(b""))
    assert not closed.ok and closed.reason == "connection closed before an HTTP status line"
    huge = check("http", _serve_raw(b"HTTP/1.0 200 OK\r\n" + b"X: " + b"h" * 40000 + b"\r\n\r\n"))
    assert not huge.ok and "longer than" in huge.reason
    cut = check("http", _serve_raw(b"HTTP/1.0 200 OK\r\nServer: x\r\n"))
    assert not cut.ok and cut.reason == "connection closed inside the HTTP headers"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_https_checks_a_tls_server_without_verifying_its_name(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "1", "-subj", "/CN=not-this-address"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = Web(status=204)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    try:
        assert check("https", server.port).ok is False  # 204 is not the default 200
        result = check("https", server.port, expect="204")
        assert result.ok, result
        assert not check("http", server.port, timeout=1.0).ok  # plain HTTP to a TLS server
    finally:
        server.close()


# -- dns ----------------------------------------------------------------------------------------


def test_dns_asks_for_the_name_and_checks_the_answer():
    responder = Dns(answer="192.0.2.7")
    try:
        assert check("dns", responder.port, query="www.example.org").ok
        assert responder.queries[-1] == "www.example.org"
        assert check("dns", responder.port, query="www.example.org", answer="192.0.2.7").ok
        wrong = check("dns", responder.port, query="www.example.org", answer="192.0.2.8")
        assert not wrong.ok and wrong.reason == "DNS answered 192.0.2.7, expected 192.0.2.8"
        responder.rcode = 3
        nx = check("dns", responder.port, query="nothing.example.org")
        assert not nx.ok and nx.reason == "DNS NXDOMAIN"
        responder.reply = False
        silent = check("dns", responder.port, timeout=0.2, query="www.example.org")
        assert not silent.ok and silent.reason == "timed out after 0.2 s"
    finally:
        responder.close()


def test_dns_query_encoding():
    assert dns_query(0x1234, "a.bc", 1) == bytes.fromhex("123401000001000000000000") + b"\x01a\x02bc\x00\x00\x01\x00\x01"


# -- exec ---------------------------------------------------------------------------------------


def test_exec_passes_address_and_port_and_reads_the_exit_status(tmp_path):
    script = tmp_path / "probe"
    seen = tmp_path / "seen"
    script.write_text(f'#!/bin/sh\necho "$1 $2" > {seen}\nexit $(cat {tmp_path / "status"})\n')
    script.chmod(0o755)
    (tmp_path / "status").write_text("0")
    assert check("exec", 8080, command=str(script)).ok
    assert seen.read_text() == "127.0.0.1 8080\n"
    (tmp_path / "status").write_text("3")
    failed = check("exec", 8080, command=str(script))
    assert not failed.ok and failed.reason == "probe exited 3"


def test_exec_is_killed_at_the_timeout(tmp_path):
    script = tmp_path / "slow"
    pid_file = tmp_path / "pid"
    script.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 30\n")
    script.chmod(0o755)
    result = check("exec", 1, timeout=0.5, command=str(script))
    assert not result.ok and result.reason == "timed out after 0.5 s"
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left running


# -- configuration and plugins ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("nosuch", {}, "no check named 'nosuch' (installed: "),
        ("tcp", {"path": "/"}, "check tcp: unknown parameter --path (it takes: none)"),
        ("http", {"expect": "ok"}, "check http: --expect takes a status"),
        ("http", {"match": "("}, "check http: --match is not a regular expression"),
        ("http", {"path": "health"}, "check http: --path must start with /"),
        ("dns", {}, "check dns: needs --query"),
        ("dns", {"query": "a.example", "type": "MX"}, "check dns: --type must be A or AAAA"),
        ("exec", {"command": "probe"}, "check exec: --command must be an absolute path"),
    ],
)
def test_bad_check_parameters_are_one_line(name, params, message):
    with pytest.raises(CheckConfigError) as caught:
        load_check(name, params)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_third_party_check_registers_an_entry_point(tmp_path, monkeypatch):
    (tmp_path / "ipvsman_fake_check.py").write_text(
        textwrap.dedent(
            """
            from ipvsman.daemon.checks import Check
            from ipvsman.daemon.health import CheckResult

            class BannerCheck(Check):
                name = "banner"
                parameters = {"expect": "hello"}

                async def run(self, address, port):
                    return CheckResult(self.params["expect"] == "hello", "wrong banner")
            """
        )
    )
    dist = tmp_path / "ipvsman_fake_check-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ipvsman-fake-check\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ipvsman.checks]\nbanner = ipvsman_fake_check:BannerCheck\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "banner" in available_checks()
    made = load_check("banner", {})
    assert isinstance(made, Check) and type(made).__name__ == "BannerCheck"
    assert asyncio.run(run_check(made, "127.0.0.1", 1, 1.0)).ok
    assert asyncio.run(run_check(load_check("banner", {"expect": "x"}), "127.0.0.1", 1, 1.0)).reason == "wrong banner"


def test_a_crashing_plugin_is_that_servers_failure_not_the_daemons():
    class Broken(HttpCheck):
        async def run(self, address, port):
            raise KeyError("oops")

    result = asyncio.run(run_check(Broken({}), "127.0.0.1", 1, 1.0))
    assert not result.ok and result.reason == "check http failed: KeyError: 'oops'"
