"""`ipvsman resync`: refusals with their reasons, dry runs, and what is sent (to a recording socket)."""

from __future__ import annotations

import io

import pytest

from ipvsman.model import Connection, Daemon, Dest, RawState, Service, ServiceKey
from ipvsman.sync import cli, protocol, resync
from ipvsman.sync.protocol import decode_message

WEB = ServiceKey("inet", "tcp", "10.0.0.1", 80)
DNS = ServiceKey("inet", "udp", "10.0.0.1", 53)
WEB6 = ServiceKey("inet6", "tcp", "fd00::1", 443)
SERVICES = (
    Service(WEB, "rr", dests=(Dest("10.0.1.1", 8080, "masq", 1), Dest("10.0.1.2", 8080, "route", 1))),
    Service(DNS, "rr", dests=(Dest("10.0.1.1", 53, "masq", 1),)),
    Service(WEB6, "rr", dests=(Dest("fd00::2", 443, "masq", 1, af="inet6"),)),
)
CONNECTIONS = (
    Connection("TCP", "198.51.100.1", 40001, "10.0.0.1", 80, "10.0.1.1", 8080, "ESTABLISHED", 890),
    Connection("TCP", "198.51.100.2", 40002, "10.0.0.1", 80, "10.0.1.2", 8080, "FIN_WAIT", 100),
    Connection("UDP", "198.51.100.3", 40003, "10.0.0.1", 53, "10.0.1.1", 53, "UDP", 290),
    Connection("TCP", "2001:db8::5", 40004, "fd00::1", 443, "fd00::2", 443, "ESTABLISHED", 800),
)
MASTER = Daemon("master", "lo", 10, maxlen=1472)


class RecordingSocket:
    """Stands in for SyncSocket: records what would have gone on the wire."""

    opened: list[RecordingSocket] = []
    fail_with: OSError | None = None

    def __init__(self, interface, group, port, ttl=1, netns=None, loop=False):
        self.args = (interface, group, port, ttl, netns, loop)
        self.sent: list[bytes] = []
        RecordingSocket.opened.append(self)

    def send(self, data: bytes) -> None:
        if RecordingSocket.fail_with is not None:
            raise RecordingSocket.fail_with
        self.sent.append(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass


@pytest.fixture(autouse=True)
def recording_socket(monkeypatch):
    RecordingSocket.opened = []
    RecordingSocket.fail_with = None
    monkeypatch.setattr(resync, "SyncSocket", RecordingSocket)
    return RecordingSocket


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(argv, state=None, stdin=None, daemons_known=True):
    state = state if state is not None else RawState(
        services=SERVICES, daemons=(MASTER,), connections=CONNECTIONS, sync_version=1
    )
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(
        argv, stdin=stdin or io.StringIO(), stdout=out, stderr=err, read=lambda stderr: (state, daemons_known)
    )
    return code, out.getvalue(), err.getvalue()


def sent_conns():
    return [c for sock in RecordingSocket.opened for data in sock.sent for c in decode_message(data).conns]


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--interface", "nosuch0", "--yes"], "ipvsman resync: interface nosuch0 does not exist\n"),
        (["--group", "10.1.1.1", "--yes"], "ipvsman resync: group 10.1.1.1 is not a multicast address (224.0.0.0/4 or ff00::/8)\n"),
        (["--group", "example", "--yes"], "ipvsman resync: multicast group 'example' is not an IP address\n"),
        (["--maxlen", "40", "--yes"], "ipvsman resync: maxlen must be 44-65535, got 40\n"),
        (["--maxlen", "65535", "--yes"], "ipvsman resync: maxlen must be at most 65507 for group 224.0.0.81, got 65535\n"),
        (["--maxlen", "20", "--sync-version", "0", "--yes"], "ipvsman resync: maxlen must be 28-65535, got 20\n"),
        (["--service", "10.9.9.9:80", "--yes"], "ipvsman resync: no virtual service 10.9.9.9:80 is configured\n"),
        (["--service", "10.0.0.1", "--yes"], "ipvsman resync: --service: expected ADDRESS:PORT, got '10.0.0.1'\n"),
        (["--real-server", "10.0.1.9:80", "--yes"], "ipvsman resync: no real server 10.0.1.9:80 is configured\n"),
        (["--backup-netns", "b"], "ipvsman resync: --backup-netns goes with --test\n"),
        (
            ["--service", "fd00::1:443", "--yes"],
            "ipvsman resync: --service fd00::1:443 is ambiguous: an IPv6 address with a port needs brackets, "
            "write [fd00::1]:443\n",
        ),
        (
            ["--real-server", "fd00::2:443", "--dry-run"],
            "ipvsman resync: --real-server fd00::2:443 is ambiguous: an IPv6 address with a port needs brackets, "
            "write [fd00::2]:443\n",
        ),
    ],
)
def test_refused_with_one_line_reason(argv, message, recording_socket):
    code, out, err = run(argv)
    assert (code, out, err) == (2, "", message)
    assert recording_socket.opened == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--syncid", "256"], "argument --syncid: syncid must be 0-255, got 256"),
        (["--syncid", "x"], "argument --syncid: syncid must be a whole number, got 'x'"),
        (["--port", "0"], "argument --port: port must be 1-65535, got 0"),
        (["--port", "65536"], "argument --port: port must be 1-65535, got 65536"),
        (["--ttl", "0"], "argument --ttl: ttl must be 1-255, got 0"),
        (["--sync-version", "2"], "argument --sync-version: sync version must be 0-1, got 2"),
        (["--rate", "0"], "argument --rate: rate must be more than 0, got 0"),
    ],
)
def test_bad_option_values_are_one_line(argv, message, capsys):
    code, out, err = run(argv)
    captured = capsys.readouterr().err
    assert code == 2
    assert captured == f"ipvsman resync: {message} (see ipvsman resync --help)\n"


def test_no_master_daemon_and_no_interface_says_what_to_pass():
    code, out, err = run(["--yes"], RawState(connections=CONNECTIONS))
    assert code == 2
    assert err == (
        "ipvsman resync: no master sync daemon is running: pass --interface IF (and --syncid N), "
        "or start one with ipvsadm --start-daemon master --mcast-interface IF --syncid N\n"
    )


def test_daemons_unreadable_and_no_interface_says_what_to_pass():
    code, out, err = run(["--yes"], RawState(connections=CONNECTIONS), daemons_known=False)
    assert code == 2
    assert err == "ipvsman resync: the sync daemons could not be read: pass --interface IF (and --syncid N)\n"


def test_never_prompts_when_stdin_is_not_a_terminal(recording_socket):
    code, out, err = run([], stdin=io.StringIO("y\n"))
    assert code == 2
    assert err == "ipvsman resync: not sending: standard input is not a terminal to confirm on; pass --yes\n"
    assert recording_socket.opened == []


def test_asks_on_a_terminal_and_honours_no(recording_socket):
    code, out, err = run([], stdin=Tty("n\n"))
    assert code == 1
    assert out.startswith("Resync 4 connections (all connections) in 1 messages to group 224.0.0.81 port 8848")
    assert out.endswith("Send? [y/N] nothing sent\n")
    assert recording_socket.opened == []


def test_asks_on_a_terminal_and_sends_on_yes():
    code, out, err = run([], stdin=Tty("y\n"))
    assert code == 0
    assert len(sent_conns()) == 4


# -- dry runs -----------------------------------------------------------------------------------------


def test_dry_run_prints_what_would_be_sent_decoded_and_sends_nothing(recording_socket):
    code, out, err = run(["--dry-run"])
    assert code == 0 and err == ""
    assert recording_socket.opened == []
    assert out.splitlines() == [
        "dry run: Resync 4 connections (all connections) in 1 messages to group 224.0.0.81 port 8848 "
        "on interface lo, syncid 10, sync protocol v1, at most 1000 connections/s",
        "message 1: 188 bytes, 4 connections, syncid 10, protocol v1",  # 8 + 3 * 36 + 72
        "  TCP 198.51.100.1:40001 -> 10.0.0.1:80 -> 10.0.1.1:8080 ESTABLISHED timeout 890s flags 0x0000 (masq)",
        "  TCP 198.51.100.2:40002 -> 10.0.0.1:80 -> 10.0.1.2:8080 FIN_WAIT timeout 100s flags 0x0183 (route)",
        "  UDP 198.51.100.3:40003 -> 10.0.0.1:53 -> 10.0.1.1:53 UDP timeout 290s flags 0x0100 (masq)",
        "  TCP [2001:db8::5]:40004 -> [fd00::1]:443 -> [fd00::2]:443 ESTABLISHED timeout 800s flags 0x0000 (masq)",
    ]


def test_a_bracketed_ipv6_service_is_taken():
    code, out, err = run(["--dry-run", "--service", "[fd00::1]:443"])
    assert (code, err) == (0, "")
    assert out.splitlines()[0].startswith("dry run: Resync 1 connections (service [fd00::1]:443)")


def test_dry_run_of_one_service_with_overrides():
    code, out, err = run(["--dry-run", "--service", "10.0.0.1:80", "--syncid", "7", "--maxlen", "79", "--rate", "50"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        "dry run: Resync 2 connections (service 10.0.0.1:80) in 2 messages to group 224.0.0.81 port 8848 "
        "on interface lo, syncid 7, sync protocol v1, at most 50 connections/s"
    )
    # 8 + 2 * 36 = 80 bytes would be one message: 79 makes two
    assert [line for line in lines if line.startswith("message")] == [
        "message 1: 44 bytes, 1 connections, syncid 7, protocol v1",
        "message 2: 44 bytes, 1 connections, syncid 7, protocol v1",
    ]


def test_dry_run_of_one_real_server():
    code, out, err = run(["--dry-run", "--real-server", "10.0.1.1:53"])
    assert "Resync 1 connections (real server 10.0.1.1:53)" in out
    assert "UDP 198.51.100.3:40003" in out


def test_version_comes_from_the_sysctl_and_v0_leaves_ipv6_out():
    state = RawState(services=SERVICES, daemons=(MASTER,), connections=CONNECTIONS, sync_version=0)
    code, out, err = run(["--dry-run"], state)
    assert code == 0
    first = out.splitlines()[0]
    assert "Resync 3 connections (all connections) in 1 messages" in first
    assert "sync protocol v0" in first
    assert first.endswith("; 1 left out: sync protocol version 0 carries IPv4 connections only (1)")
    assert "message 1: 76 bytes, 3 connections, syncid 10, protocol v0" in out


def test_sync_version_option_beats_the_sysctl():
    code, out, err = run(["--dry-run", "--sync-version", "0"])
    assert "sync protocol v0" in out.splitlines()[0]


# -- sending ----------------------------------------------------------------------------------------------


def test_sends_everything_with_the_master_daemons_settings():
    code, out, err = run(["--yes"])
    assert code == 0, err
    (sock,) = RecordingSocket.opened
    assert sock.args == ("lo", "224.0.0.81", 8848, 1, None, False)  # multicast loopback off
    assert sent_conns() == [
        protocol.from_connection(CONNECTIONS[0]),
        protocol.from_connection(CONNECTIONS[1], forward="route"),
        protocol.from_connection(CONNECTIONS[2]),
        protocol.from_connection(CONNECTIONS[3]),
    ]
    assert out.startswith(
        "sent 4 connections in 1 messages to 224.0.0.81:8848 on lo (syncid 10, sync protocol v1, "
        "from the master daemon) in "
    )


def test_command_line_settings_are_used_and_named():
    code, out, err = run(["--yes", "--syncid", "11", "--port", "8849", "--ttl", "3", "--group", "239.1.2.3"])
    assert code == 0
    (sock,) = RecordingSocket.opened
    assert sock.args == ("lo", "239.1.2.3", 8849, 3, None, False)
    assert {decode_message(d).syncid for d in sock.sent} == {11}
    assert "to 239.1.2.3:8849 on lo (syncid 11, sync protocol v1, from the master daemon and command line)" in out


def test_without_master_the_interface_and_syncid_come_from_the_command_line():
    code, out, err = run(["--yes", "--interface", "lo", "--syncid", "3"], RawState(connections=CONNECTIONS))
    assert code == 0
    assert "(syncid 3, sync protocol v1, from the command line)" in out


def test_send_error_exits_non_zero():
    RecordingSocket.fail_with = OSError(101, "Network is unreachable")
    code, out, err = run(["--yes"])
    assert code == 1
    assert "sent 0 connections in 0 messages" in out
    assert out.rstrip().endswith("send failed after 0 connections: Network is unreachable")


def test_empty_table_is_not_an_error(recording_socket):
    state = RawState(services=SERVICES, daemons=(MASTER,), connections=(), sync_version=1)
    code, out, err = run(["--yes"], state)
    assert (code, err) == (0, "")
    assert out == "nothing to send: no connections (all connections) to group 224.0.0.81 port 8848 on interface lo, syncid 10, sync protocol v1\n"
    assert recording_socket.opened == []


def test_nothing_encodable_is_an_error(recording_socket):
    state = RawState(daemons=(MASTER,), connections=(CONNECTIONS[3],), sync_version=0)
    code, out, err = run(["--yes"], state)
    assert code == 1
    assert err == "ipvsman resync: sent nothing: 1 left out: sync protocol version 0 carries IPv4 connections only (1)\n"


# -- the sync test --------------------------------------------------------------------------------------------


def test_sync_test_sends_one_marked_connection_without_a_backup_to_check():
    code, out, err = run(["--test"])
    assert code == 0, err
    (conn,) = sent_conns()
    assert conn.client.startswith("192.0.2.") and conn.timeout == 10
    assert (conn.virtual, conn.virtual_port, conn.state_name, conn.protocol_name) == ("10.0.0.1", 80, "ESTABLISHED", "TCP")
    assert (conn.dest, conn.dest_port) == ("10.0.1.1", 8080)
    assert out.endswith("sent; no backup daemon on this host to verify receipt\n")
    assert RecordingSocket.opened[0].args[-1] is False  # loopback stays off: no local backup


def test_sync_test_verifies_with_a_backup_in_this_namespace(monkeypatch):
    def backup_table(netns=None, origin=True):
        return [protocol.to_connection(c, origin="SYNC") for c in sent_conns()]

    monkeypatch.setattr(resync, "read_conn_table", backup_table)
    state = RawState(services=SERVICES, daemons=(MASTER, Daemon("backup", "lo", 10)), connections=(), sync_version=1)
    code, out, err = run(["--test"], state)
    assert code == 0, err
    assert "received by the backup daemon in this namespace after" in out
    assert RecordingSocket.opened[0].args[-1] is True  # loopback on, for this one message only


def test_sync_test_reports_a_backup_that_did_not_install_it(monkeypatch):
    monkeypatch.setattr(resync, "read_conn_table", lambda netns=None, origin=True: [])
    state = RawState(services=SERVICES, daemons=(MASTER, Daemon("backup", "lo", 12)), connections=(), sync_version=1)
    code, out, err = run(["--test", "--wait", "0.3"], state)
    assert code == 1
    assert out.rstrip().endswith(
        "NOT received by the backup daemon in this namespace within 0 s (its syncid is 12, the test used 10)"
    )


def test_sync_test_in_another_namespace_reads_that_namespace(monkeypatch):
    asked = []

    def backup_table(netns=None, origin=True):
        asked.append(netns)
        return [protocol.to_connection(c, origin="SYNC") for c in sent_conns()]

    monkeypatch.setattr(resync, "read_conn_table", backup_table)
    code, out, err = run(["--test", "--backup-netns", "other"])
    assert code == 0, err
    assert asked == ["other"]
    assert "received by the backup in namespace other after" in out
    assert RecordingSocket.opened[0].args[-1] is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rate", "fast"], "argument --rate: rate must be a number, got 'fast'"),
        (["--wait", "3601"], "argument --wait: wait must be 0-3600, got 3601"),
        (["--maxlen", "0x10000"], "argument --maxlen: maxlen must be 1-65535, got 0x10000"),
    ],
)
def test_every_number_option_names_itself_and_its_bounds(argv, message, capsys):
    code, out, err = run(argv)
    assert code == 2
    assert capsys.readouterr().err == f"ipvsman resync: {message} (see ipvsman resync --help)\n"
