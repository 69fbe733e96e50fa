"""ConnectionTable: the connection table in packed records, as the /proc parsers build it and the views read it."""

from __future__ import annotations

import collections
import operator
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipvsman.kernel import procfs
from ipvsman.model import Connection, ConnectionTable, Dest, DestKey, RawState, Service, ServiceKey, Snapshot
from ipvsman.poller import aggregate_connections
from ipvsman.model import address_sort_key
from ipvsman.ui.views import ViewContext
from ipvsman.ui.views.connections import SORT_COLUMNS, ConnectionsView, identity

# As ip_vs_conn_seq_show prints them ("%-3s %08X %04X %08X %04X %s %04X %-11s %7u%s"): IPv4, an IPv6
# client through an IPv6 service to an IPv4 real server and the reverse (the real server's family
# may differ), the three kinds of persistence template, SIP persistence with spaces in its data.
CONN = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899
TCP 2001:0db8:0000:0000:0000:0000:0000:0003 D431 fd00:0000:0000:0000:0000:0000:0000:0001 01BB 0A620203 01BB SYN_RECV         59
TCP 0A620105 C350 fd00:0000:0000:0000:0000:0000:0000:0001 01BB fd00:0000:0000:0000:0000:0000:0000:0002 01BB FIN_WAIT        12
IP  C0A80709 0000 00000007 0000 0A000105 0000 NONE             59
TCP 0A620102 0000 0A620164 0050 0A620202 1F90 ASSURED         300
TCP 0A620103 0000 0A620164 0050 0A620202 1F90 NONE            360
UDP AC10000A 13C4 0A000002 13C4 0A000109 13C4 UDP             299 sip call id  with spaces
UDP AC10000A 0000 0A000002 13C4 0A000109 13C4 NONE             59 sip
"""

EXPECTED = [
    Connection("TCP", "10.98.1.2", 40000, "10.98.1.100", 80, "10.98.2.2", 8080, "ESTABLISHED", 899),
    Connection("TCP", "2001:db8::3", 54321, "fd00::1", 443, "10.98.2.3", 443, "SYN_RECV", 59),
    Connection("TCP", "10.98.1.5", 50000, "fd00::1", 443, "fd00::2", 443, "FIN_WAIT", 12),
    Connection("IP", "192.168.7.9", 0, "0.0.0.7", 0, "10.0.1.5", 0, "NONE", 59),
    Connection("TCP", "10.98.1.2", 0, "10.98.1.100", 80, "10.98.2.2", 8080, "ASSURED", 300),
    Connection("TCP", "10.98.1.3", 0, "10.98.1.100", 80, "10.98.2.2", 8080, "NONE", 360),
    Connection("UDP", "172.16.0.10", 5060, "10.0.0.2", 5060, "10.0.1.9", 5060, "UDP", 299, None, "sip",
               "call id  with spaces"),
    Connection("UDP", "172.16.0.10", 0, "10.0.0.2", 5060, "10.0.1.9", 5060, "NONE", 59, None, "sip", ""),
]  # fmt: skip

CONN_SYNC = """\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires
TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED LOCAL      899
TCP 2001:0db8:0000:0000:0000:0000:0000:0003 D431 fd00:0000:0000:0000:0000:0000:0000:0001 01BB 0A620203 01BB SYN_RECV    SYNC        59
UDP AC10000A 13C4 0A000002 13C4 0A000109 13C4 UDP         SYNC       299
TCP 0A620103 0000 0A620164 0050 0A620202 1F90 NONE        LOCAL      360
"""

ROUTING = operator.itemgetter(0, 3, 4, 5, 6, 7)  # protocol, virtual, virtual_port, dest, dest_port, state


def parsed(text: str = CONN) -> ConnectionTable:
    table, malformed = procfs.parse_conn(text)
    assert malformed == 0
    return table


def test_entries_read_back_field_for_field_as_the_parser_spells_them():
    table = parsed()
    assert isinstance(table, ConnectionTable) and len(table) == len(EXPECTED)
    assert list(table) == EXPECTED
    assert [table[row] for row in range(len(table))] == EXPECTED
    for conn, expected in zip(table, EXPECTED):
        assert type(conn) is Connection
        assert [type(value) for value in conn] == [type(value) for value in expected]
    assert [conn.is_template for conn in table] == [False, False, False, True, True, True, False, True]


def test_the_origin_column_of_the_sync_file():
    table, malformed = procfs.parse_conn_sync(CONN_SYNC)
    assert malformed == 0
    assert [conn.origin for conn in table] == ["LOCAL", "SYNC", "SYNC", "LOCAL"]
    assert table[1] == Connection("TCP", "2001:db8::3", 54321, "fd00::1", 443, "10.98.2.3", 443, "SYN_RECV", 59, "SYNC")
    assert all(conn.origin is None for conn in parsed())
    assert not any(conn.pe_name or conn.pe_data for conn in table)


def test_words_are_shared_across_tables():
    first, second = parsed(), parsed()
    assert first[0].state is second[0].state and first[0].protocol is second[0].protocol
    assert first[0].virtual == second[0].virtual


def test_indexing_negative_indexes_and_slices():
    table = parsed()
    assert table[-1] == EXPECTED[-1] and table[-len(EXPECTED)] == EXPECTED[0]
    for bad in (len(EXPECTED), -len(EXPECTED) - 1):
        with pytest.raises(IndexError):
            table[bad]
    with pytest.raises(TypeError):
        table["1"]
    for part in (slice(None, 2), slice(3, None), slice(None, None, -1), slice(1, -1, 2), slice(64), slice(5, 2)):
        assert table[part] == tuple(EXPECTED[part])
    assert list(reversed(table)) == EXPECTED[::-1]
    assert EXPECTED[6] in table and EXPECTED[6]._replace(expires=1) not in table
    assert table.index(EXPECTED[2]) == 2 and table.count(EXPECTED[0]) == 1


def test_equality_with_tables_and_any_sequence_of_connections():
    table = parsed()
    assert table == EXPECTED and EXPECTED == table
    assert table == tuple(EXPECTED) and tuple(EXPECTED) == table
    assert table == parsed() and table == ConnectionTable.from_connections(EXPECTED)
    assert table != EXPECTED[:-1] and table != [*EXPECTED[:-1], EXPECTED[-1]._replace(expires=58)]
    assert table != parsed(CONN.replace("ESTABLISHED", "TIME_WAIT   "))
    assert table != 5 and table != "TCP" and table != None  # noqa: E711
    assert ConnectionTable() == [] and ConnectionTable() == () and procfs.parse_conn("") == ([], 0)
    with pytest.raises(TypeError):
        hash(table)


def test_repr_is_short_whatever_the_size():
    table = parsed()
    assert repr(table) == "<ConnectionTable of 8 connections>"
    assert "10.98" not in repr(table)


def test_records_of_24_bytes_and_no_object_per_entry():
    rows = [f"TCP 64{n >> 16:02X}{(n >> 8) & 255:02X}{n & 255:02X} {n & 0xFFFF:04X} 0A620164 0050 0A620202 1F90 "
            f"ESTABLISHED     {n % 900}" for n in range(5000)]  # fmt: skip
    table = parsed("\n".join(rows))
    assert len(table) == 5000 and len({conn.client for conn in table}) == 5000
    assert len(table._records) == 24 * 5000
    assert len(table._addresses) == 3 and not table.other_clients and table._pe is None


def test_routing_counts_are_the_counter_over_tuples():
    table = parsed(CONN + "\n".join(CONN.splitlines()[1:4]))  # repeated entries count twice
    expected = collections.Counter(map(ROUTING, table))
    counts = table.routing_counts()
    assert counts == expected
    assert counts[("TCP", "fd00::1", 443, "10.98.2.3", 443, "SYN_RECV")] == 2
    assert list(counts) == list(expected)  # in the same order: first seen first
    assert all(type(key[2]) is int and type(key[1]) is str for key in counts)
    assert ConnectionTable().routing_counts() == collections.Counter()


def services() -> list[Service]:
    return [
        Service(ServiceKey("inet", "tcp", "10.98.1.100", 80), "rr", dests=(Dest("10.98.2.2", 8080, "masq", 1),)),
        Service(ServiceKey("inet6", "tcp", "fd00::1", 443), "rr",
                dests=(Dest("10.98.2.3", 443, "masq", 1, af="inet"), Dest("fd00::2", 443, "masq", 1, af="inet6"))),
        Service(ServiceKey("inet", "udp", "10.0.0.2", 5060), "rr", dests=(Dest("10.0.1.9", 5060, "masq", 1),)),
        Service(ServiceKey("inet", None, "", 0, fwmark=7), "rr", dests=(Dest("10.0.1.5", 0, "route", 1),)),
    ]  # fmt: skip


def test_aggregation_is_the_same_for_a_table_and_its_tuples():
    text = CONN_SYNC + "TCP 0A620109 9C41 00000007 0019 0A000105 0019 SYN_RECV    LOCAL       30\n"  # fwmark
    table, _ = procfs.parse_conn_sync(text)
    for candidate in (table, parsed()):
        by_service, by_dest = aggregate_connections(services(), candidate)
        assert (by_service, by_dest) == aggregate_connections(services(), list(candidate))
        assert list(by_dest) == list(aggregate_connections(services(), list(candidate))[1])
    by_service, by_dest = aggregate_connections(services(), table)
    assert dict(by_service[ServiceKey("inet6", "tcp", "fd00::1", 443)]) == {"SYN_RECV": 1}
    assert dict(by_dest[DestKey(ServiceKey("inet", None, "", 0, fwmark=7), "10.0.1.5", 0)]) == {"SYN_RECV": 1}


def test_pe_data_is_merged_onto_the_sync_table():
    with_origin, _ = procfs.parse_conn_sync(CONN_SYNC)
    merged = procfs.merge_pe_data(with_origin, parsed())
    assert isinstance(merged, ConnectionTable)
    assert [(conn.origin, conn.pe_name, conn.pe_data) for conn in merged] == [
        ("LOCAL", "", ""),
        ("SYNC", "", ""),
        ("SYNC", "sip", "call id  with spaces"),
        ("LOCAL", "", ""),
    ]
    assert [conn[:10] for conn in merged] == [conn[:10] for conn in with_origin]
    assert not any(conn.pe_name for conn in with_origin)  # the table merged into is unchanged
    assert procfs.merge_pe_data(with_origin, procfs.parse_conn_sync(CONN_SYNC)[0]) is with_origin


def test_pe_data_of_an_ipv6_client_and_a_client_whose_bytes_match_an_index():
    # The IPv6 client is index 0 of the side list: its record holds the bytes of 0.0.0.0.
    sync = ("TCP 00000000 D431 0A620164 0050 0A620202 1F90 ESTABLISHED LOCAL      899\n"
            "UDP 2001:0db8:0000:0000:0000:0000:0000:0003 D431 0A620164 0050 0A620202 1F90 UDP         LOCAL      99\n")  # fmt: skip
    conn = "UDP 2001:0db8:0000:0000:0000:0000:0000:0003 D431 0A620164 0050 0A620202 1F90 UDP     99 sip abc\n"
    with_origin, _ = procfs.parse_conn_sync(sync)
    assert with_origin.rows_of_clients(["0.0.0.0"]) == [0] and with_origin.rows_of_clients(["2001:db8::3"]) == [1]
    merged = procfs.merge_pe_data(with_origin, parsed(conn))
    assert [(c.client, c.pe_name, c.pe_data) for c in merged] == [("0.0.0.0", "", ""), ("2001:db8::3", "sip", "abc")]


HOSTILE = [
    "TCP 0A62010G 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899",  # not hex
    "TCP 0A620102 9C4G 0A620164 0050 0A620202 1F90 ESTABLISHED     899",
    "TCP 0A620102 9C40 0A62016Z 0050 0A620202 1F90 ESTABLISHED     899",
    "TCP 0A620102 9C40 0A620164 0050 0A620202 1F9\u00e9 ESTABLISHED     899",
    "TCP 0A62 0102 9C40 0A620164 0050 0A620202 ESTABLISHED     899",  # a space inside an address
    "TCP 0A6201020 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899",  # too long
    "TCP 0A620102 9C400 0A620164 0050 0A620202 1F90 ESTABLISHED     899",
    "TCP 0A620102 9C 0A620164 0050 0A620202 1F90 ESTABLISHED     899",
    "TCP 0A620102 9C40 0A620164 0050 0A620202 01F90 ESTABLISHED     899",
    "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED 4294967296",  # over 32 bits
    "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED " + "9" * 40,
    "TCP 2001:0db8:0000:0000:0000:0000:0000:0003:0000 D431 0A620164 0050 0A620202 1F90 ESTABLISHED 9",
    "TCP 2001:0db8::3 D4310 0A620164 0050 0A620202 1F90 ESTABLISHED 9",  # IPv6 client, long port
    "TCP " + "A" * 5000 + " 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899",
    "TCP 0A62\x000102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899",  # NUL bytes
    "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     89\x00",
    "\x00" * 80,
    "\x00 \x00 \x00 \x00 \x00 \x00 \x00 \x00 \x00",
    "TCP \ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899",
]


@pytest.mark.parametrize("sync", [False, True])
def test_hostile_lines_are_counted_as_malformed(sync):
    good, lines = (CONN_SYNC, HOSTILE) if sync else (CONN, HOSTILE)
    if sync:
        lines = [line.replace("ESTABLISHED ", "ESTABLISHED LOCAL ") for line in HOSTILE]
    parse = procfs.parse_conn_sync if sync else procfs.parse_conn
    table, malformed = parse(good + "\n".join(lines) + "\n")
    assert malformed == len(HOSTILE)
    assert table == parse(good)[0]
    # The largest expiry count that fits still parses.
    edge = "TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED " + ("LOCAL " if sync else "") + "4294967295"
    (conn,), malformed = parse(edge)
    assert malformed == 0 and conn.expires == 2**32 - 1


def test_hostile_bytes_in_the_file_are_counted(tmp_path):
    body = b"TCP 0A620102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899\n"
    data = CONN.encode() + b"TCP 0A62\xff\xfe0102 9C40 0A620164 0050 0A620202 1F90 ESTABLISHED     899\n" + \
        b"\x00" * 100 + b"\n" + b"TCP 0A620102 9C40\x00 0A620164 0050 0A620202 1F90 ESTABLISHED     899\n" + body  # fmt: skip
    (tmp_path / procfs.CONN_FILE).write_bytes(data)
    table, _, malformed = procfs.read_connections(str(tmp_path))
    assert malformed == 3
    assert list(table) == [*EXPECTED, EXPECTED[0]]


def test_kinds_that_are_not_the_kernel_words_still_parse():
    line = "SCTP 0A000003 04D2 0A000001 0009 0A000101 0009 COOKIE_ECHOED 3600"
    (conn,), malformed = procfs.parse_conn(line)
    assert malformed == 0 and (conn.protocol, conn.state) == ("SCTP", "COOKIE_ECHOED")
    _, malformed = procfs.parse_conn_sync(line.replace("3600", "REMOTE 3600"))
    assert malformed == 1  # but only two origins exist


@pytest.mark.parametrize("field", Connection._fields)
def test_a_column_is_the_field_of_every_entry(field):
    sync, _ = procfs.parse_conn_sync(CONN_SYNC)
    for table in (parsed(), sync, procfs.merge_pe_data(sync, parsed()), ConnectionTable()):
        assert list(table.column(field)) == [getattr(conn, field) for conn in table]
        assert list(table.column(field, repr)) == [repr(getattr(conn, field)) for conn in table]


def test_a_column_key_is_called_once_per_distinct_word_or_address():
    calls = collections.Counter()

    def key(value):
        calls[value] += 1
        return str(value).lower()

    table = parsed(CONN + CONN.split("\n", 1)[1] * 2)
    assert len(table) == 3 * len(EXPECTED)
    assert list(table.column("state", key)) == [conn.state.lower() for conn in table]
    assert list(table.column("virtual", key)) == [conn.virtual.lower() for conn in table]
    assert max(calls.values()) == 1


def test_client_order_sorts_as_the_address_sort_key():
    text = CONN + "TCP ::1 0001 0A620164 0050 0A620202 1F90 ESTABLISHED     899\n" + \
        "TCP 0A620102 0001 0A620164 0050 0A620202 1F90 ESTABLISHED     899\n" + \
        "TCP 2001:0db8:0000:0000:0000:0000:0000:0003 0001 0A620164 0050 0A620202 1F90 ESTABLISHED 1\n" + \
        "TCP FFFFFFFF FFFF 0A620164 0050 0A620202 1F90 ESTABLISHED     899\n"  # fmt: skip
    for table in (parsed(), parsed(text), ConnectionTable.from_connections(
        [EXPECTED[0]._replace(client=client) for client in ("not an address", "10.0.0.1", "::2", "::1", "10.0.0.0")]
    )):  # fmt: skip
        keys = table.client_order(address_sort_key)
        def by_address(row):
            return address_sort_key(table[row].client), table[row].client_port

        rows = range(len(table))
        assert sorted(rows, key=keys.__getitem__) == sorted(rows, key=by_address)
        assert sorted(rows, key=keys.__getitem__, reverse=True) == sorted(rows, key=by_address, reverse=True)


addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str), st.text(max_size=12))
entries = st.builds(
    Connection,
    protocol=st.sampled_from(["TCP", "UDP", "SCTP", "IP"]),
    client=addresses,
    client_port=st.integers(0, 65535),
    virtual=addresses,
    virtual_port=st.integers(0, 65535),
    dest=addresses,
    dest_port=st.integers(0, 65535),
    state=st.sampled_from(["ESTABLISHED", "SYN_RECV", "NONE", "UDP"]),
    expires=st.integers(0, 2**32 - 1),
    origin=st.sampled_from([None, "LOCAL", "SYNC"]),
    pe_name=st.sampled_from(["", "sip"]),
    pe_data=st.text(max_size=8),
)


@given(st.lists(entries, max_size=25))
def test_any_connections_round_trip_through_a_table(conns):
    table = ConnectionTable.from_connections(conns)
    assert list(table) == conns and table == conns and len(table) == len(conns)
    assert [table[row] for row in range(-len(conns), 0)] == conns
    assert table.routing_counts() == collections.Counter(map(ROUTING, conns))
    assert aggregate_connections(services(), table) == aggregate_connections(services(), conns)
    for field in Connection._fields:
        assert list(table.column(field)) == [getattr(conn, field) for conn in conns]


def test_ports_and_expiry_counts_must_fit():
    with pytest.raises(ValueError):
        ConnectionTable.from_connections([EXPECTED[0]._replace(client_port=65536)])
    with pytest.raises(ValueError):
        ConnectionTable.from_connections([EXPECTED[0]._replace(expires=2**32)])
    with pytest.raises(ValueError):
        ConnectionTable(b"\x00" * 25)


# -- the connection view on a table: the same rows as on its tuples --------------------------------------


def many(count: int = 600) -> ConnectionTable:
    states = ["ESTABLISHED", "FIN_WAIT", "TIME_WAIT", "SYN_RECV", "NONE"]
    lines = []
    for n in range(count):
        client = f"2001:0db8:0000:0000:0000:0000:0000:{n:04x}" if n % 7 == 0 else f"0A63{n >> 8:02X}{n & 255:02X}"
        if n % 29 == 0:  # IPv4-mapped: inet_ntop and ipaddress spell it differently
            client = f"0000:0000:0000:0000:0000:ffff:0a63:{n:04x}"
        virtual, dest = f"0A62010{n % 3}", f"0A6202{n % 5:02X}" if n % 11 else "fd00:0000:0000:0000:0000:0000:0000:0002"
        protocol = "IP" if n % 17 == 0 else "UDP" if n % 13 == 0 else "TCP"
        lines.append(f"{protocol} {client} {(n * 7919) % 65536:04X} {virtual} {80 + n % 2:04X} {dest} 1F90 "
                     f"{states[n % 5]:<11} {'SYNC' if n % 4 == 0 else 'LOCAL'} {(n * 31) % 900:7d}")  # fmt: skip
    table, malformed = procfs.parse_conn_sync("\n".join(lines))
    assert malformed == 0
    return table


def snapshot_of(connections, seq: int = 1) -> Snapshot:
    return Snapshot(seq, 1000.0, 0.1, "kernel", False, RawState(connections=connections))


FILTERS = ["", "c=10.99.1.2", "c=2001:db8::7", "c=10.99.0.1 c=10.99.0.9", "c=10.99.0.5:39595", "c=:0",
           "v=10.98.1.1:80", "v=10.98.1.0", "r=[fd00::2]:8080", "r=10.98.2.3 state=syn-recv", "state=established",
           "state=Time-Wait proto=udp", "origin=sync", "proto=ip", "fin 10.99.1", "2001:db8", "r=:8080 sync",
           "v=10.98.1.2 v=10.98.1.0:81", "c=::ffff:10.99.0.29", "c=::ffff:a63:3a c=10.99.0.1"]  # fmt: skip


@pytest.mark.parametrize("text", FILTERS)
def test_the_view_filters_and_sorts_a_table_as_its_tuples(text):
    table = many()
    views = {}
    for name, connections in (("table", table), ("tuples", tuple(table))):
        view = ConnectionsView()
        view.update(snapshot_of(connections), ViewContext())
        view.set_filter(text)
        orders = [list(view.walker.order)]
        for _ in SORT_COLUMNS:
            view.step_sort(1)
            orders.append(list(view.walker.order))
            view.reverse_sort()
            orders.append(list(view.walker.order))
            view.reverse_sort()
        views[name] = orders
    assert views["table"] == views["tuples"]
    assert 0 < len(views["table"][0]) <= 600 and (len(views["table"][0]) < 600 or not text)


def test_the_focus_follows_its_connection_into_the_next_table():
    first = many()
    rows = CONN_SYNC.splitlines()[1:]
    for kind in ("table", "tuples"):
        view = ConnectionsView()
        view.update(snapshot_of(first if kind == "table" else tuple(first)), ViewContext())
        view.step_sort(1)  # by protocol
        view.walker.set_focus(250)
        wanted = view.selection()
        # The next poll: two new entries in front of it all, and the table in another order.
        later = procfs.parse_conn_sync("\n".join(rows[:2]) + "\n" + "\n".join(
            line for line in reversed(list(_lines_of(first)))))[0]  # fmt: skip
        view.update(snapshot_of(later if kind == "table" else tuple(later), seq=2), ViewContext())
        assert view.selection() == wanted
        assert identity(view.walker.connection_at(view.walker.focus)) == wanted
        # A connection that went away leaves the focus where it was.
        view.walker.set_focus(10)
        gone = view.selection()
        rest = [conn for conn in later if identity(conn) != gone]
        view.update(snapshot_of(ConnectionTable.from_connections(rest) if kind == "table" else tuple(rest), seq=3),
                    ViewContext())  # fmt: skip
        assert view.walker.focus == 10


def _lines_of(table: ConnectionTable):
    """The entries of a table as ip_vs_conn_sync prints them."""

    def address(text):
        try:
            return socket.inet_pton(socket.AF_INET, text).hex().upper()
        except OSError:
            return socket.inet_pton(socket.AF_INET6, text).hex(":", 2)

    for conn in table:
        yield (f"{conn.protocol:<3} {address(conn.client)} {conn.client_port:04X} {address(conn.virtual)} "
               f"{conn.virtual_port:04X} {address(conn.dest)} {conn.dest_port:04X} {conn.state:<11} "
               f"{conn.origin:<6} {conn.expires:7d}")  # fmt: skip


# -- the other readers of a snapshot's connections ------------------------------------------------------


def test_once_output_is_the_same_for_a_table_and_its_tuples():
    from ipvsman.output import snapshot_to_dict, snapshot_to_text

    table = procfs.merge_pe_data(procfs.parse_conn_sync(CONN_SYNC)[0], parsed())
    on_table, on_tuples = snapshot_of(table), snapshot_of(tuple(table))
    assert snapshot_to_text(on_table, True) == snapshot_to_text(on_tuples, True)
    document = snapshot_to_dict(on_table, True)
    assert document == snapshot_to_dict(on_tuples, True)
    assert [c["client"] for c in document["connections"]] == ["10.98.1.2", "2001:db8::3", "172.16.0.10", "10.98.1.3"]
    assert document["connections"][2]["pe_data"] == "call id  with spaces"


def test_a_resync_plan_is_the_same_for_a_table_and_its_tuples():
    from ipvsman.sync.resync import SyncSettings, build_plan

    table = many(300)
    settings = SyncSettings("lo", syncid=7)
    plans = [build_plan(table, (), settings, check_interface=False),
             build_plan(list(table), (), settings, check_interface=False)]  # fmt: skip
    assert plans[0].connections == plans[1].connections > 0
    assert [m.data for m in plans[0].packed.messages] == [m.data for m in plans[1].packed.messages]
    assert plans[0].skipped == plans[1].skipped
