"""model: the connection table's lookups done in C (a client's rows by bytes.find, routing counts a
chunk at a time) and view 1's blocks in model.Arrangement, against the plain ways of working them out."""

from __future__ import annotations

import collections
import itertools
import random

from ipvsman import model
from ipvsman.model import Arrangement, Connection, ConnectionTable, Dest, Service, ServiceKey, group_by_vip


def connection(client: str, cport: int, virtual="192.0.2.10", vport=80, dest="10.1.0.11", dport=80,
               state="ESTABLISHED", expires=100) -> Connection:  # fmt: skip
    return Connection("TCP", client, cport, virtual, vport, dest, dport, state, expires)


def test_a_clients_rows_are_found_where_its_bytes_also_appear_elsewhere_in_records():
    import socket

    addresses = [f"192.0.2.{n}" for n in range(1, 12)]
    conns = [connection(f"198.51.100.{n}", 1000 + n, addresses[n % 11], 80, addresses[(n + 3) % 11], 80)
             for n in range(200)]  # fmt: skip
    # A client whose four bytes are those across a record's virtual address index, port and real
    # server index (offsets 5-8), which every record of that service has.
    records = bytes(ConnectionTable.from_connections(conns)._records)
    client = socket.inet_ntoa(records[5:9])
    conns += [connection(client, 4242), connection(client, 4243, "192.0.2.99", 443)]
    table = ConnectionTable.from_connections(conns)
    assert bytes(table._records).count(records[5:9]) > 2  # at other offsets too
    assert table.rows_of_clients([client]) == [200, 201]


def test_rows_of_clients_agrees_with_a_scan_for_few_and_many_clients():
    rng = random.Random(8)
    conns = [connection(f"10.{rng.randrange(3)}.{rng.randrange(3)}.{rng.randrange(4)}", port) for port in range(3000)]
    conns.append(connection("2001:db8::7", 99))  # a client in the side list
    table = ConnectionTable.from_connections(conns)
    clients = sorted({conn.client for conn in conns})
    for size in (1, 3, model._FEW_CLIENTS, model._FEW_CLIENTS + 1, len(clients)):
        chosen = set(rng.sample(clients, size))
        assert table.rows_of_clients(chosen) == [row for row, conn in enumerate(conns) if conn.client in chosen]


def test_routing_counts_a_chunk_at_a_time_add_up_to_the_whole(monkeypatch):
    rng = random.Random(2)
    states = ["ESTABLISHED", "FIN_WAIT", "TIME_WAIT", "SYN_RECV"]
    conns = [connection(f"198.51.{n // 256 % 256}.{n % 256}", n % 60000 + 1, f"192.0.2.{n % 3}", 80,
                        f"10.1.0.{rng.randrange(5)}", 80, rng.choice(states)) for n in range(5000)]  # fmt: skip
    table = ConnectionTable.from_connections(conns)
    expected = collections.Counter((c.protocol, c.virtual, c.virtual_port, c.dest, c.dest_port, c.state) for c in conns)
    monkeypatch.setattr(model, "_COUNT_CHUNK", 333)  # chunks that do not divide the table
    assert table.routing_counts() == expected
    monkeypatch.setattr(model, "_COUNT_CHUNK", 1 << 20)
    assert table.routing_counts() == expected


def test_view_1s_blocks_in_the_arrangement_follow_group_by_vip():
    services = tuple(
        Service(ServiceKey("inet", "tcp", f"192.0.2.{n % 7}", 80 + n), "wlc",
                dests=(Dest(f"10.1.0.{n}", 80, "masq", 1),))  # fmt: skip
        for n in range(30)
    ) + (Service(ServiceKey("inet", None, "", 0, fwmark=3), "sh"),)
    arrangement = Arrangement(services)
    groups = group_by_vip(services)
    assert [(address, [services[p] for p in positions]) for _, address, positions in arrangement.vip_payloads] == groups
    assert [gap for gap, _, _ in arrangement.vip_payloads] == [False] + [True] * (len(groups) - 1)
    assert arrangement.vip_rows == [len(group) + 1 + (index > 0) for index, (_, group) in enumerate(groups)]
    assert arrangement.vip_starts == list(itertools.accumulate(arrangement.vip_rows, initial=0))
    for block, (address, group) in enumerate(groups):
        assert arrangement.vip_index["vip", address] == block
        assert all(arrangement.vip_index[service.key] == block for service in group)
