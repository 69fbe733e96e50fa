"""The /proc/net/ip_vs_conn and ip_vs_conn_sync parsers, on text as the kernel prints it."""

from __future__ import annotations

import ipaddress
import socket
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipvsman.kernel import procfs
from ipvsman.model import Connection

# As ip_vs_conn_seq_show prints them: "%-3s %08X %04X %08X %04X %s %04X %-11s %7u%s\n".
CONN = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899
TCP 0A620102 9C42 0A620164 0050 0A620202 1F90 TIME_WAIT       118
TCP 0A620102 0000 0A620164 0050 0A620202 1F90 NONE            359
IP  C0A80709 0000 00000007 0000 0A000105 0000 NONE             59
UDP AC10000A 13C4 0A000002 13C4 0A000109 13C4 UDP             299 sip a84b4c76e66710@pc33.example.com
UDP AC10000A 0000 0A000002 13C4 0A000109 13C4 NONE             59 sip a84b4c76e66710@pc33.example.com
TCP 2001:0db8:0000:0000:0000:0000:0000:0003 D431 fd00:0000:0000:0000:0000:0000:0000:0001 01BB \
fd00:0000:0000:0000:0000:0000:0000:0002 01BB SYN_RECV         59
SCTP 0A000003 04D2 0A000001 0009 0A000101 0009 ESTABLISHED    3600
"""

# ip_vs_conn_sync_seq_show: "%-3s %08X %04X %08X %04X %s %04X %-11s %-6s %7u\n", no PE columns.
CONN_SYNC = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires
TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED LOCAL      899
TCP 0A630007 C738 0A620164 0050 0A620202 1F90 ESTABLISHED SYNC       179
UDP AC10000A 13C4 0A000002 13C4 0A000109 13C4 UDP         LOCAL      299
TCP 2001:0db8:0000:0000:0000:0000:0000:0003 D431 fd00:0000:0000:0000:0000:0000:0000:0001 01BB \
fd00:0000:0000:0000:0000:0000:0000:0002 01BB FIN_WAIT    SYNC        12
"""


def test_ipv4_rows_become_dotted_addresses_and_decimal_ports():
    connections, malformed = procfs.parse_conn(CONN)
    assert malformed == 0
    assert connections[0] == Connection(
        "TCP", "10.98.1.2", 40000, "10.98.1.100", 80, "10.98.2.2", 8080, "ESTABLISHED", 899
    )
    assert connections[1].state == "TIME_WAIT" and connections[1].expires == 118
    assert all(conn.origin is None for conn in connections)


def test_persistence_templates_are_recognised():
    connections, _ = procfs.parse_conn(CONN)
    templates = [conn for conn in connections if conn.is_template]
    # The TCP service's template (state NONE, client port 0), the fwmark template (protocol IP,
    # the mark in the virtual address) and the SIP template.
    assert [(t.protocol, t.client, t.client_port, t.virtual) for t in templates] == [
        ("TCP", "10.98.1.2", 0, "10.98.1.100"),
        ("IP", "192.168.7.9", 0, "0.0.0.7"),
        ("UDP", "172.16.0.10", 0, "10.0.0.2"),
    ]


def test_pe_name_and_data_are_kept():
    connections, _ = procfs.parse_conn(CONN)
    sip = [conn for conn in connections if conn.pe_name]
    assert len(sip) == 2
    assert {(conn.pe_name, conn.pe_data) for conn in sip} == {("sip", "a84b4c76e66710@pc33.example.com")}
    assert sip[0].state == "UDP" and sip[0].expires == 299


def test_pe_data_with_spaces_runs_to_the_end_of_the_line():
    line = "UDP AC10000A 13C4 0A000002 13C4 0A000109 13C4 UDP             299 sip call id  with spaces  \n"
    (conn,), malformed = procfs.parse_conn(line)
    assert malformed == 0
    assert (conn.pe_name, conn.pe_data) == ("sip", "call id  with spaces")


def test_ipv6_rows_are_compressed():
    connections, _ = procfs.parse_conn(CONN)
    (v6,) = [conn for conn in connections if ":" in conn.client]
    assert (v6.client, v6.client_port, v6.virtual, v6.virtual_port, v6.dest, v6.dest_port) == (
        "2001:db8::3",
        54321,
        "fd00::1",
        443,
        "fd00::2",
        443,
    )
    assert v6.state == "SYN_RECV"


def test_sctp_rows():
    connections, _ = procfs.parse_conn(CONN)
    assert connections[-1] == Connection("SCTP", "10.0.0.3", 1234, "10.0.0.1", 9, "10.0.1.1", 9, "ESTABLISHED", 3600)


def test_sync_file_gives_the_origin_of_each_entry():
    connections, malformed = procfs.parse_conn_sync(CONN_SYNC)
    assert malformed == 0
    assert [conn.origin for conn in connections] == ["LOCAL", "SYNC", "LOCAL", "SYNC"]
    assert connections[1] == Connection(
        "TCP", "10.99.0.7", 51000, "10.98.1.100", 80, "10.98.2.2", 8080, "ESTABLISHED", 179, "SYNC"
    )
    assert connections[3].client == "2001:db8::3" and connections[3].expires == 12


def test_pe_data_is_merged_onto_the_sync_entries():
    with_origin, _ = procfs.parse_conn_sync(CONN_SYNC)
    with_pe, _ = procfs.parse_conn(CONN)
    merged = procfs.merge_pe_data(with_origin, with_pe)
    assert [(conn.origin, conn.pe_name) for conn in merged] == [
        ("LOCAL", ""),
        ("SYNC", ""),
        ("LOCAL", "sip"),
        ("SYNC", ""),
    ]
    assert merged[2].pe_data == "a84b4c76e66710@pc33.example.com"


HOSTILE_LINES = [
    "TCP 0A62010G 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899",  # not hex
    "TCP 0A6201 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899",  # short address
    "TCP 0A620102 9C40 0A620164 50 0A620202 1F90 ESTABLISHED     899",  # short port
    "TCP 0A620102 0x40 0A620164 0050 0A620202 1F90 ESTABLISHED     899",  # int() would take it
    "TCP 0A620102 +9C4 0A620164 0050 0A620202 1F90 ESTABLISHED     899",
    "TCP 0A620102 9_C4 0A620164 0050 0A620202 1F90 ESTABLISHED     899",
    "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED      -1",
    "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     1e3",
    "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     \u0663\u0663",  # Arabic-Indic digits
    "TCP fd00::zz 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899",
    "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90",  # truncated
    "TCP",
    "\x00\x00\x00",
    "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData",  # header again
    "x" * 5000,
]


def test_hostile_lines_are_counted_and_the_rest_still_parsed():
    text = CONN + "\n".join(HOSTILE_LINES) + "\n\n"
    connections, malformed = procfs.parse_conn(text)
    good, _ = procfs.parse_conn(CONN)
    assert connections == good
    assert malformed == len(HOSTILE_LINES)


def test_hostile_sync_lines_are_counted():
    bad = [
        "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED REMOTE     899",  # unknown origin
        "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899",  # no origin column
        "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED LOCAL 899 extra",
        "TCP 0A620102 9C40 0A620164 0050 0A620202 1F9Z ESTABLISHED LOCAL      899",
    ]
    connections, malformed = procfs.parse_conn_sync(CONN_SYNC + "\n".join(bad))
    assert len(connections) == 4
    assert malformed == len(bad)


def test_a_table_without_header_or_entries():
    assert procfs.parse_conn("") == ([], 0)
    assert procfs.parse_conn(CONN.splitlines()[0]) == ([], 0)
    connections, malformed = procfs.parse_conn("\n".join(CONN.splitlines()[1:3]))
    assert len(connections) == 2 and malformed == 0


def test_hex_to_ipv4():
    assert procfs.hex_to_ipv4("0A620102") == "10.98.1.2"
    assert procfs.hex_to_ipv4("ffffffff") == "255.255.255.255"
    with pytest.raises(ValueError):
        procfs.hex_to_ipv4("0A6201")


def kernel_line(conn: Connection, sync: bool) -> str:
    """Format an entry the way ip_vs_conn.c does, to round-trip random entries."""

    def address(text):
        parsed = ipaddress.ip_address(text)
        return f"{int(parsed):08X}" if parsed.version == 4 else parsed.exploded

    head = (
        f"{conn.protocol:<3} {address(conn.client)} {conn.client_port:04X} {address(conn.virtual)} "
        f"{conn.virtual_port:04X} {address(conn.dest)} {conn.dest_port:04X} {conn.state:<11}"
    )
    if sync:
        return f"{head} {conn.origin:<6} {conn.expires:7d}"
    pe = f" {conn.pe_name} {conn.pe_data}" if conn.pe_name else ""
    return f"{head} {conn.expires:7d}{pe}"


addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
ports = st.integers(0, 65535)
tokens = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=14)
entries = st.builds(
    Connection,
    protocol=st.sampled_from(["TCP", "UDP", "SCTP", "IP"]),
    client=addresses,
    client_port=ports,
    virtual=addresses,
    virtual_port=ports,
    dest=addresses,
    dest_port=ports,
    state=st.sampled_from(["ESTABLISHED", "SYN_RECV", "TIME_WAIT", "CLOSE_WAIT", "NONE", "UDP", "COOKIE_ECHOED"]),
    expires=st.integers(0, 2**32 - 1),
    origin=st.sampled_from(["LOCAL", "SYNC"]),
    pe_name=st.one_of(st.just(""), st.just("sip")),
    pe_data=tokens,
)


def as_inet_ntop(text: str) -> str:
    """How ipvsadm (and the parser) spell an address: inet_ntop, so ::ffff:0.0.0.0, not ::ffff:0:0."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_ntop(family, socket.inet_pton(family, text))


@given(st.lists(entries, max_size=30))
def test_entries_round_trip_through_the_kernel_format(conns):
    expected = [
        conn._replace(
            client=as_inet_ntop(conn.client), virtual=as_inet_ntop(conn.virtual), dest=as_inet_ntop(conn.dest)
        )
        for conn in conns
    ]
    sync_text = "\n".join(kernel_line(conn, sync=True) for conn in conns)
    parsed, malformed = procfs.parse_conn_sync(sync_text)
    assert malformed == 0
    assert parsed == [conn._replace(pe_name="", pe_data="") for conn in expected]
    conn_text = "\n".join(kernel_line(conn, sync=False) for conn in conns)
    parsed, malformed = procfs.parse_conn(conn_text)
    assert malformed == 0
    assert parsed == [conn._replace(origin=None, pe_data=conn.pe_data if conn.pe_name else "") for conn in expected]


@given(st.lists(st.text(max_size=120), max_size=20))
def test_any_text_is_parsed_or_counted_never_raised(lines):
    text = "\n".join(lines)
    body = text.splitlines()
    if body and body[0].startswith(procfs.HEADER_PREFIX):
        body = body[1:]
    entries = [line for line in body if line.split()]
    for parse in (procfs.parse_conn, procfs.parse_conn_sync):
        connections, malformed = parse(text)
        assert len(connections) + malformed == len(entries)


def test_read_connections_prefers_the_sync_file(tmp_path):
    (tmp_path / "ip_vs_conn").write_text(CONN)
    (tmp_path / "ip_vs_conn_sync").write_text(CONN_SYNC + "garbage line\n")
    connections, complete, malformed = procfs.read_connections(str(tmp_path))
    assert complete
    assert [conn.origin for conn in connections] == ["LOCAL", "SYNC", "LOCAL", "SYNC"]
    assert not any(conn.pe_name for conn in connections)
    assert malformed == 1
    connections, _, _ = procfs.read_connections(str(tmp_path), want_pe_data=True)
    assert [conn.pe_name for conn in connections] == ["", "", "sip", ""]


def test_read_connections_without_the_sync_file(tmp_path):
    (tmp_path / "ip_vs_conn").write_text(CONN)
    connections, _, malformed = procfs.read_connections(str(tmp_path))
    assert len(connections) == 8 and malformed == 0
    assert connections[4].pe_name == "sip"


def test_a_limited_read_takes_the_first_entries_and_says_whether_the_table_goes_on(tmp_path):
    (tmp_path / procfs.CONN_FILE).write_text(CONN)
    whole, _, _ = procfs.read_connections(str(tmp_path))
    first, complete, _ = procfs.read_connections(str(tmp_path), limit=3)
    assert list(first) == list(whole)[:3] and not complete
    exactly, complete, _ = procfs.read_connections(str(tmp_path), limit=len(whole))
    assert list(exactly) == list(whole) and complete
    more, complete, _ = procfs.read_connections(str(tmp_path), limit=len(whole) + 5)
    assert list(more) == list(whole) and complete


def test_read_connections_without_ipvs(tmp_path):
    with pytest.raises(OSError):
        procfs.read_connections(str(tmp_path))


def test_sync_version(tmp_path):
    path = tmp_path / "sync_version"
    path.write_text("1\n")
    assert procfs.read_sync_version(str(path)) == 1
    path.write_text("x\n")
    assert procfs.read_sync_version(str(path)) is None
    assert procfs.read_sync_version(str(tmp_path / "absent")) is None


def test_files_are_parsed_as_they_are_read_with_the_same_result_as_their_text(tmp_path):
    (tmp_path / procfs.CONN_FILE).write_text(CONN)
    streamed, complete, malformed = procfs.read_connections(str(tmp_path))
    assert complete and (streamed, malformed) == procfs.parse_conn(CONN)
    (tmp_path / procfs.CONN_SYNC_FILE).write_text(CONN_SYNC)
    streamed, _, malformed = procfs.read_connections(str(tmp_path))
    assert (streamed, malformed) == procfs.parse_conn_sync(CONN_SYNC)
    assert procfs.parse_conn(CONN.splitlines()[1:]) == procfs.parse_conn(CONN)  # no header line


def test_shared_words_and_counts_never_cross_fields():
    # A hostile line whose state looks like a count must not make a later expiry a string.
    text = "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 4242            7\n" \
           "TCP 0A620102 9C41 0A620164 0050 0A620202 1F90 ESTABLISHED  4242\n"  # fmt: skip
    (first, second), malformed = procfs.parse_conn(text)
    assert malformed == 0 and first.state == "4242" and second.expires == 4242
    assert type(second.expires) is int


def test_repeated_words_are_one_object_each_and_entries_hold_no_object():
    rows = [f"TCP 0A62{n >> 8:02X}{n & 255:02X} 9C{n & 255:02X} 0A620164 0050 0A620202 1F90 ESTABLISHED     899"
            for n in range(2000)]  # fmt: skip
    text = "\n".join(rows)
    procfs.parse_conn(text)  # the shared caches of ports and expiry counts are filled now
    tracemalloc.start()
    try:
        connections, malformed = procfs.parse_conn(text)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert malformed == 0 and len(connections) == 2000
    # A record of 24 bytes per entry (and the bytearray's spare room), no tuple or string: as
    # Connection tuples these entries took some 250 bytes each.
    assert held / len(connections) < 40
    assert len({id(conn.state) for conn in connections}) == 1
    assert len({conn.client for conn in connections}) == 2000
    assert {type(conn.expires) for conn in connections} == {int}
