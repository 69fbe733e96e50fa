"""Hostile bytes: the sync decoder never raises, and what it rejects is counted (hypothesis)."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipvsman.sync import protocol as p
from ipvsman.sync.monitor import SyncMonitor
from ipvsman.sync.protocol import SeqData, SyncConn

FUZZ = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STRUCTURED = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ports = st.integers(0, 65535)
u32 = st.integers(0, 0xFFFFFFFF)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
seq = st.none() | st.builds(SeqData, u32, u32, u32)


@st.composite
def sync_conns(draw, family=None) -> SyncConn:
    """Entries a backup accepts: a known protocol and state, or a template."""
    addresses = draw(ipv6 if family == 6 else ipv4 if family == 4 else st.sampled_from([ipv4, ipv6]).flatmap(lambda s: s))
    is_v6 = ":" in addresses
    address = ipv6 if is_v6 else ipv4
    template = draw(st.booleans())
    protocol = draw(st.sampled_from([6, 17, 132, 0] if template else [6, 17, 132]))
    state = draw(st.integers(0, 1)) if template else draw(st.integers(0, p.KERNEL_PROTOCOL_STATES[protocol] - 1))
    flags = draw(st.integers(0, 0xFFFF)) & ~p.F_HASHED & ~p.F_TEMPLATE | (p.F_TEMPLATE if template else 0)
    pe_data = draw(st.binary(max_size=40))
    return SyncConn(
        protocol=protocol,
        client=addresses,
        client_port=draw(ports),
        virtual=draw(address),
        virtual_port=draw(ports),
        dest=draw(address),
        dest_port=draw(ports),
        state=state,
        flags=flags,
        timeout=draw(u32),
        fwmark=draw(u32),
        in_seq=draw(seq),
        out_seq=draw(seq),
        pe_data=pe_data,
        pe_name=draw(st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=16)) if pe_data else "",
    )


def _normal_v1(conn: SyncConn) -> SyncConn:
    """What a v1 round trip gives back: one seq option carries both directions."""
    if conn.in_seq is None and conn.out_seq is None:
        return conn
    return SyncConn(**{**_fields(conn), "in_seq": conn.in_seq or p.NO_SEQ, "out_seq": conn.out_seq or p.NO_SEQ})


def _fields(conn: SyncConn) -> dict:
    return {name: getattr(conn, name) for name in conn.__slots__}


@FUZZ
@given(st.binary(max_size=2000))
def test_decoder_never_raises_on_arbitrary_bytes(data):
    decoded = p.decode_message(data)
    assert len(decoded.conns) <= decoded.nr_conns
    assert decoded.rejected == decoded.nr_conns - len(decoded.conns)
    if len(data) < 4 or int.from_bytes(data[2:4], "big") != len(data):
        assert decoded.malformed and decoded.conns == ()


@st.composite
def mutated_messages(draw) -> bytes:
    """Valid messages with bytes flipped, cut or added, and the size field mostly kept right."""
    conns = draw(st.lists(sync_conns(), min_size=1, max_size=6))
    version = draw(st.sampled_from([0, 1]))
    if version == 0:
        conns = [c for c in conns if not c.is_ipv6] or [SyncConn(6, "1.2.3.4", 1, "5.6.7.8", 2, "9.9.9.9", 3, 1)]
    data = bytearray(p.pack(conns, syncid=draw(st.integers(0, 255)), version=version, maxlen=4096).messages[0].data)
    for _ in range(draw(st.integers(1, 8))):
        action = draw(st.sampled_from(["flip", "cut", "grow"]))
        if action == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif action == "cut" and len(data) > 4:
            del data[draw(st.integers(4, len(data) - 1)) :]
        else:
            data += draw(st.binary(min_size=1, max_size=16))
    if len(data) >= 4 and draw(st.booleans()):
        data[2:4] = len(data).to_bytes(2, "big")  # let it past the size check into the entries
    return bytes(data)


@STRUCTURED
@given(mutated_messages())
def test_decoder_never_raises_on_damaged_messages(data):
    decoded = p.decode_message(data)
    for conn in decoded.conns:
        # whatever it accepted can be sent again: it is a well-formed entry
        assert p.encode_conn_v1(conn)


@ROUND_TRIP
@given(st.lists(sync_conns(), min_size=1, max_size=120), st.integers(0, 255), st.integers(80, 9000))
def test_v1_round_trip(conns, syncid, maxlen):
    packed = p.pack(conns, syncid=syncid, version=1, maxlen=maxlen)
    decoded = [p.decode_message(m.data) for m in packed.messages]
    assert all(d.error is None and d.skipped == () and d.syncid == syncid for d in decoded)
    assert all(len(m.data) <= maxlen and m.count <= 255 for m in packed.messages)
    too_big = [c for c in conns if len(p.encode_conn_v1(c)) + 8 > maxlen]
    assert sum(packed.skipped.values()) == len(too_big)
    assert [c for d in decoded for c in d.conns] == [_normal_v1(c) for c in conns if c not in too_big]


@ROUND_TRIP
@given(st.lists(sync_conns(family=4), min_size=1, max_size=120), st.integers(0, 255))
def test_v0_round_trip(conns, syncid):
    packed = p.pack(conns, syncid=syncid, version=0)
    decoded = [c for m in packed.messages for c in p.decode_message(m.data).conns]
    expected = []
    for conn in conns:
        has_seq = conn.flags & p.F_SEQ_MASK
        expected.append(
            SyncConn(
                **{
                    **_fields(conn),
                    "timeout": 0,
                    "fwmark": 0,
                    "pe_data": b"",
                    "pe_name": "",
                    "in_seq": (conn.in_seq or p.NO_SEQ) if has_seq else None,
                    "out_seq": (conn.out_seq or p.NO_SEQ) if has_seq else None,
                }
            )
        )
    assert decoded == expected


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=40))
def test_monitor_counts_what_it_rejects(datagrams):
    monitor = SyncMonitor("lo")  # fed directly: no socket is opened
    malformed = rejected = accepted = 0
    for data in datagrams:
        decoded = p.decode_message(data)
        malformed += decoded.malformed
        rejected += decoded.rejected
        accepted += len(decoded.conns)
        monitor.feed(data, "198.51.100.1")
    stats = monitor.stats()
    assert (stats.messages, stats.malformed, stats.rejected, stats.connections) == (
        len(datagrams),
        malformed,
        rejected,
        accepted,
    )
    if malformed:
        assert stats.last_error is not None


def test_reject_figures_on_random_bytes():
    """Not an assertion on numbers: prints how much of random input a backup would refuse."""
    import random

    rng = random.Random(4)
    monitor = SyncMonitor("lo")
    for _ in range(5000):
        size = rng.choice([rng.randrange(0, 16), rng.randrange(16, 1500)])
        data = bytearray(rng.randbytes(size))
        if size >= 4 and rng.random() < 0.5:
            data[2:4] = size.to_bytes(2, "big")
        monitor.feed(bytes(data))
    stats = monitor.stats()
    print(
        f"\nrandom datagrams: {stats.messages}, malformed {stats.malformed}, "
        f"entries rejected {stats.rejected}, entries a backup would install {stats.connections}"
    )
    assert stats.messages == 5000 and stats.malformed > 0
