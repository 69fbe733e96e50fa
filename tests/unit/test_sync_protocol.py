"""The sync protocol encoder and decoder against byte layouts worked out by hand from ip_vs_sync.c."""

from __future__ import annotations

import struct

import pytest

from ipvsman.model import Connection
from ipvsman.sync import protocol as p
from ipvsman.sync.protocol import SeqData, SyncConn


def conn4(**changes) -> SyncConn:
    fields = dict(
        protocol=6,
        client="192.0.2.1",
        client_port=40000,
        virtual="10.0.0.1",
        virtual_port=80,
        dest="10.0.0.2",
        dest_port=8080,
        state=1,
        flags=0,
        timeout=900,
    )
    fields.update(changes)
    return SyncConn(**fields)


def conn6(**changes) -> SyncConn:
    fields = dict(
        protocol=17,
        client="2001:db8::1",
        client_port=5060,
        virtual="fd00::10",
        virtual_port=5060,
        dest="fd00::20",
        dest_port=5060,
        state=0,
        flags=p.F_INACTIVE | p.F_DROUTE | p.F_NOOUTPUT,
        timeout=300,
        fwmark=7,
    )
    fields.update(changes)
    return SyncConn(**fields)


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("\n", ""))


# -- exact layouts ---------------------------------------------------------------------------------


def test_v1_ipv4_message_bytes():
    # struct ip_vs_sync_mesg: reserved 0, syncid 10, size 44, nr_conns 1, version 1, spare 0
    # struct ip_vs_sync_v4: type 0, TCP 6, ver_size 36, flags 0, state 1 (ESTABLISHED),
    # cport 40000, vport 80, dport 8080, fwmark 0, timeout 900, caddr, vaddr, daddr
    expected = hexbytes(
        "00 0a 002c 01 01 0000"
        "00 06 0024 00000000 0001 9c40 0050 1f90 00000000 00000384 c0000201 0a000001 0a000002"
    )
    (message,) = p.pack([conn4()], syncid=10).messages
    assert message.data == expected
    assert message.count == 1


def test_v1_ipv6_entry_with_every_option_and_padding():
    entry = conn6(
        in_seq=SeqData(1, 2, 3),
        out_seq=SeqData(0xFFFFFFFF, 5, 6),
        pe_data=b"abcd",
        pe_name="sip",
    )
    # 72 bytes of fields + seq option (2 + 24) + PE data (2 + 4) + PE name (2 + 3) = 109
    expected_entry = hexbytes(
        "01 11 006d"  # type IPv6, UDP 17, ver_size 109
        "00000183"  # flags INACTIVE | DROUTE | NOOUTPUT
        "0000 13c4 13c4 13c4"  # state 0, cport, vport, dport 5060
        "00000007 0000012c"  # fwmark 7, timeout 300
        "20010db8000000000000000000000001"
        "fd000000000000000000000000000010"
        "fd000000000000000000000000000020"
        "01 18 00000001 00000002 00000003 ffffffff 00000005 00000006"
        "02 04 61626364"
        "03 03 736970"
    )
    assert p.encode_conn_v1(entry) == expected_entry
    # a second entry starts on the next 4-byte boundary: 3 bytes of padding, counted in size
    (message,) = p.pack([entry, conn4()], syncid=200).messages
    assert len(message.data) == 8 + 109 + 3 + 36
    assert message.data[:8] == hexbytes("00 c8 009c 02 01 0000")
    assert message.data[8 : 8 + 109] == expected_entry
    assert message.data[117:120] == bytes(3)
    assert message.data[120:] == p.encode_conn_v1(conn4())


def test_last_entry_is_not_padded():
    entry = conn4(pe_data=b"xy", pe_name="sip")  # 36 + 4 + 5 = 45 bytes
    (message,) = p.pack([entry], syncid=1).messages
    assert len(message.data) == 8 + 45
    assert struct.unpack_from("!H", message.data, 2)[0] == len(message.data)


def test_pe_name_is_sent_only_with_pe_data():
    assert p.encode_conn_v1(conn4(pe_name="sip")) == p.encode_conn_v1(conn4())


def test_v0_message_bytes_with_sequence_data():
    entry = conn4(flags=p.F_INACTIVE | p.F_IN_SEQ | p.F_OUT_SEQ, in_seq=SeqData(7, 8, 9), timeout=0)
    # struct ip_vs_sync_mesg_v0: nr_conns 1, syncid 5, size 4 + 24 + 24
    # struct ip_vs_sync_conn_v0: reserved 0, TCP, cport, vport, dport, caddr, vaddr, daddr,
    # flags 0x0700 (16 bits), state 1, then struct ip_vs_sync_conn_options (in_seq, out_seq)
    expected = hexbytes(
        "01 05 0034"
        "00 06 9c40 0050 1f90 c0000201 0a000001 0a000002 0700 0001"
        "00000007 00000008 00000009 00000000 00000000 00000000"
    )
    (message,) = p.pack([entry], syncid=5, version=0).messages
    assert message.data == expected


def test_v0_entry_without_sequence_data_is_24_bytes():
    assert p.encode_conn_v0(conn4()) == hexbytes("00 06 9c40 0050 1f90 c0000201 0a000001 0a000002 0000 0001")


def test_v0_refuses_ipv6_and_pack_counts_it():
    with pytest.raises(ValueError, match="IPv4 connections only"):
        p.encode_conn_v0(conn6())
    packed = p.pack([conn6(), conn4()], syncid=1, version=0)
    assert packed.connections == 1
    assert packed.skipped == {"sync protocol version 0 carries IPv4 connections only": 1}


def test_hashed_flag_is_never_sent():
    data = p.encode_conn_v1(conn4(flags=p.F_HASHED | p.F_INACTIVE))
    assert struct.unpack_from("!I", data, 4)[0] == p.F_INACTIVE


# -- packing limits --------------------------------------------------------------------------------


def test_messages_fill_maxlen_and_no_more():
    packed = p.pack([conn4(client_port=1000 + i) for i in range(100)], syncid=1, maxlen=1472)
    # (1472 - 8) // 36 = 40 entries a message
    assert [m.count for m in packed.messages] == [40, 40, 20]
    assert [len(m.data) for m in packed.messages] == [8 + 40 * 36, 8 + 40 * 36, 8 + 20 * 36]
    assert all(len(m.data) <= 1472 for m in packed.messages)


def test_v0_messages_fill_maxlen():
    packed = p.pack([conn4(client_port=i + 1) for i in range(130)], syncid=1, version=0, maxlen=1472)
    # (1472 - 4) // 24 = 61 entries a message
    assert [m.count for m in packed.messages] == [61, 61, 8]


def test_padding_counts_against_maxlen():
    odd = conn4(pe_data=b"xy", pe_name="sip")  # 45 bytes, so the next entry needs 3 bytes of padding
    exact = 8 + 45 + 45  # room for two unpadded entries but not the padding between them
    packed = p.pack([odd, odd], syncid=1, maxlen=exact)
    assert [m.count for m in packed.messages] == [1, 1]
    packed = p.pack([odd, odd], syncid=1, maxlen=exact + 3)
    assert [m.count for m in packed.messages] == [2]


def test_at_most_255_entries_a_message():
    packed = p.pack([conn4(client_port=i + 1) for i in range(600)], syncid=1, maxlen=65507)
    assert [m.count for m in packed.messages] == [255, 255, 90]
    assert all(m.data[4] == m.count for m in packed.messages)  # nr_conns byte


def test_every_entry_is_4_byte_aligned():
    entries = [conn4(pe_data=b"x" * (i % 7 + 1), pe_name="sip", client_port=i + 1) for i in range(30)]
    entries += [conn6(client_port=i + 1) for i in range(5)]
    for message in p.pack(entries, syncid=1, maxlen=600).messages:
        offset, starts, size = 8, [], 0
        for _ in range(message.count):
            starts.append(offset)
            size = struct.unpack_from("!H", message.data, offset + 2)[0] & 0x0FFF
            offset += (size + 3) & ~3
        assert all(start % 4 == 0 for start in starts)
        assert starts[-1] + size == len(message.data)  # no padding after the last entry


def test_entry_too_large_for_maxlen_is_skipped_with_reason():
    packed = p.pack([conn6(), conn4()], syncid=1, maxlen=60)
    assert packed.connections == 1
    assert packed.skipped == {"entry of 72 bytes does not fit maxlen 60": 1}


@pytest.mark.parametrize(
    "syncid, version, maxlen, message",
    [
        (256, 1, 1472, "syncid must be 0-255"),
        (-1, 1, 1472, "syncid must be 0-255"),
        (1, 2, 1472, "version must be 0 or 1"),
        (1, 1, 43, "maxlen must be 44-65535"),
        (1, 0, 27, "maxlen must be 28-65535"),
        (1, 1, 70000, "maxlen must be 44-65535"),
    ],
)
def test_pack_refuses_bad_arguments(syncid, version, maxlen, message):
    with pytest.raises(ValueError, match=message):
        p.pack([conn4()], syncid, version, maxlen)


# -- round trips -------------------------------------------------------------------------------------


def test_v1_round_trip_keeps_everything():
    entries = [
        conn4(),
        conn6(in_seq=SeqData(1, 2, 3), out_seq=SeqData(4, 5, 6), pe_data=b"call-id", pe_name="sip"),
        conn4(protocol=132, state=8, client_port=0, flags=p.F_NO_CPORT | p.F_INACTIVE),
        conn4(protocol=0, state=1, flags=p.F_TEMPLATE, client_port=0, fwmark=42),
    ]
    (message,) = p.pack(entries, syncid=77).messages
    decoded = p.decode_message(message.data)
    assert decoded.error is None and decoded.skipped == ()
    assert (decoded.version, decoded.syncid, decoded.nr_conns) == (1, 77, 4)
    assert decoded.conns == tuple(entries)


def test_v0_round_trip_keeps_what_v0_carries():
    entry = conn4(flags=p.F_INACTIVE | p.F_SEQ_MASK, in_seq=SeqData(1, 2, 3), out_seq=SeqData(4, 5, 6))
    (message,) = p.pack([entry, conn4(client_port=1)], syncid=3, version=0).messages
    decoded = p.decode_message(message.data)
    assert (decoded.version, decoded.syncid, decoded.error) == (0, 3, None)
    # version 0 has no timeout and no fwmark
    assert decoded.conns == (
        entry.__class__(**{**_fields(entry), "timeout": 0}),
        conn4(client_port=1, timeout=0),
    )


def _fields(conn: SyncConn) -> dict:
    return {name: getattr(conn, name) for name in conn.__slots__}


# -- from /proc to kernel numbers --------------------------------------------------------------------


def proc(protocol="TCP", state="ESTABLISHED", cport=40000, vport=80, expires=899, **kw) -> Connection:
    return Connection(protocol, "192.0.2.1", cport, "10.0.0.1", vport, "10.0.0.2", 8080, state, expires, **kw)


@pytest.mark.parametrize(
    "conn, forward, state, flags",
    [
        (proc(), "masq", 1, 0),
        (proc(state="SYN_RECV"), "masq", 3, p.F_INACTIVE),
        (proc(state="TIME_WAIT"), "route", 5, p.F_INACTIVE | p.F_DROUTE | p.F_NOOUTPUT),
        (proc("UDP", "UDP"), "masq", 0, p.F_INACTIVE),
        (proc("SCTP", "ESTABLISHED"), "tunnel", 8, p.F_TUNNEL | p.F_NOOUTPUT),
        (proc("SCTP", "S-ACK-SENT"), "masq", 11, p.F_INACTIVE),
        (proc(cport=0, state="SYN_SENT"), "local", 2, p.F_INACTIVE | p.F_NO_CPORT | p.F_LOCALNODE | p.F_NOOUTPUT),
        (proc("IP", "NONE", cport=0, vport=0), "masq", 0, p.F_TEMPLATE),
        (proc("TCP", "NONE", cport=0), "masq", 0, p.F_TEMPLATE),
        (proc("TCP", "ASSURED", cport=0), "route", 1, p.F_TEMPLATE | p.F_DROUTE | p.F_NOOUTPUT),
    ],
)
def test_from_connection_states_and_flags(conn, forward, state, flags):
    entry = p.from_connection(conn, forward=forward)
    assert (entry.state, entry.flags) == (state, flags)
    assert entry.protocol == p.protocol_number(conn.protocol)
    assert entry.state_name == conn.state


def test_from_connection_timeout_and_pe():
    assert p.from_connection(proc(expires=0)).timeout == 1  # 0 would mean "the state's default"
    assert p.from_connection(proc(), timeout=10).timeout == 10
    sip = p.from_connection(proc("UDP", "UDP", pe_name="sip", pe_data="abc@host"))
    assert (sip.pe_name, sip.pe_data) == ("sip", b"abc@host")
    assert p.to_connection(sip).pe_data == "abc@host"


@pytest.mark.parametrize(
    "conn, reason",
    [
        (proc(state="BOGUS"), "unknown TCP state 'BOGUS'"),
        (proc("GRE"), "unknown protocol 'GRE'"),
        (proc("IP", "ESTABLISHED"), "unknown template state 'ESTABLISHED'"),
    ],
)
def test_from_connection_refuses_with_reason(conn, reason):
    with pytest.raises(ValueError, match=reason):
        p.from_connection(conn)


def test_unknown_forward_method_is_refused():
    with pytest.raises(ValueError, match="forwarding method"):
        p.from_connection(proc(), forward="teleport")


def test_to_connection_names_states_like_proc():
    back = p.to_connection(p.from_connection(proc(state="FIN_WAIT")), origin="SYNC")
    assert back == proc(state="FIN_WAIT", origin="SYNC")


def test_mixed_families_are_refused():
    with pytest.raises(ValueError, match="different families"):
        p.encode_conn_v1(conn4(dest="fd00::1"))


# -- what a backup rejects ----------------------------------------------------------------------------


def message_v1(*entries: bytes, syncid: int = 1, nr_conns: int | None = None, size: int | None = None) -> bytes:
    body = b""
    for entry in entries:
        body += bytes((-len(body)) % 4) + entry
    total = 8 + len(body)
    return p.V1_HEADER.pack(0, syncid, size if size is not None else total, nr_conns or len(entries), 1, 0) + body


def test_decoder_rejects_short_and_missized_datagrams():
    assert p.decode_message(b"").error == "0 bytes: shorter than a message header"
    assert p.decode_message(b"\x00\x01").malformed
    good = message_v1(p.encode_conn_v1(conn4()))
    assert p.decode_message(good + b"\x00").error == f"size field {len(good)} != datagram length {len(good) + 1}"


def test_decoder_drops_rest_of_message_on_malformed_entry_but_keeps_earlier_ones():
    first = p.encode_conn_v1(conn4())
    bad = bytearray(p.encode_conn_v1(conn4(client_port=2)))
    bad[0] = 2  # neither IPv4 (0) nor IPv6 (bit 0)
    third = p.encode_conn_v1(conn4(client_port=3))
    decoded = p.decode_message(message_v1(first, bytes(bad), third))
    assert decoded.conns == (conn4(),)
    assert decoded.error == "entry 2 of 3: unknown entry type 2"
    assert decoded.rejected == 2


def test_decoder_entry_version_and_size_checks():
    entry = bytearray(p.encode_conn_v1(conn4()))
    entry[2] |= 0x10  # version 1 of the entry format: unknown
    assert "unknown entry version 1" in p.decode_message(message_v1(bytes(entry))).error
    entry = bytearray(p.encode_conn_v1(conn4()))
    struct.pack_into("!H", entry, 2, 200)  # runs past the end
    assert "runs past the end" in p.decode_message(message_v1(bytes(entry))).error
    ipv6 = bytearray(p.encode_conn_v1(conn6()))
    struct.pack_into("!H", ipv6, 2, 40)  # an IPv6 entry claiming fewer bytes than its fields
    assert "smaller than its 72 bytes" in p.decode_message(message_v1(bytes(ipv6))).error
    assert p.decode_message(message_v1(p.encode_conn_v1(conn4()), nr_conns=2)).error == "entry 2 of 2 truncated"


def with_option(entry: SyncConn, option: bytes) -> bytes:
    data = bytearray(p.encode_conn_v1(entry) + option)
    struct.pack_into("!H", data, 2, len(data))
    return bytes(data)


@pytest.mark.parametrize(
    "option, outcome",
    [
        (bytes((9, 2, 0, 0)), "skipped: unknown mandatory option 9"),
        (bytes((9 | p.OPT_F_PARAM, 2, 0, 0)), "accepted"),
        (bytes((1, 4, 0, 0, 0, 0)), "dropped: bad or repeated sequence option"),
        (bytes((2, 0)), "dropped: option 2 of bad length 0"),
        (bytes((2, 9, 0)), "dropped: option 2 of bad length 9"),
        (bytes((2,)), "dropped: option header truncated"),
        (bytes((2, 1, 0x41)), "skipped: PE data without a PE name"),
        (bytes((2, 1, 0x41, 3, 17)) + b"x" * 17, "dropped: bad or repeated PE name option"),
        (bytes((2, 1, 0x41, 2, 1, 0x42, 3, 3)) + b"sip", "dropped: repeated PE data option"),
    ],
)
def test_decoder_options(option, outcome):
    decoded = p.decode_message(message_v1(with_option(conn4(), option), p.encode_conn_v1(conn4(client_port=9))))
    if outcome == "accepted":
        assert decoded.conns == (conn4(), conn4(client_port=9)) and decoded.error is None
    elif outcome.startswith("skipped"):
        assert decoded.conns == (conn4(client_port=9),)
        assert decoded.skipped == (f"entry 1 of 2: {outcome.split(': ', 1)[1]}",)
        assert decoded.error is None
    else:
        assert decoded.conns == ()
        assert decoded.error == f"entry 1 of 2: {outcome.split(': ', 1)[1]}"


@pytest.mark.parametrize(
    "entry, reason",
    [
        (conn4(protocol=47), "unsupported protocol 47"),
        (conn4(state=11), "invalid TCP state 11"),
        (conn4(protocol=17, state=1), "invalid UDP state 1"),
        (conn4(protocol=132, state=14), "invalid SCTP state 14"),
    ],
)
def test_decoder_skips_entries_a_backup_would_skip(entry, reason):
    for version in (0, 1):
        (message,) = p.pack([entry, conn4(client_port=5)], syncid=1, version=version).messages
        decoded = p.decode_message(message.data)
        expected = f"entry 1: {reason}" if version == 0 else f"entry 1 of 2: {reason}"
        assert decoded.skipped == (expected,)
        assert len(decoded.conns) == 1 and decoded.error is None


def test_templates_of_any_protocol_and_state_are_accepted():
    template = conn4(protocol=0, state=5, flags=p.F_TEMPLATE)
    decoded = p.decode_message(p.pack([template], syncid=1).messages[0].data)
    assert decoded.conns == (template,)


def test_v0_truncated_sequence_data_is_malformed():
    (message,) = p.pack([conn4(flags=p.F_IN_SEQ)], syncid=1, version=0).messages
    cut = bytearray(message.data[:-4])
    struct.pack_into("!H", cut, 2, len(cut))
    assert p.decode_message(bytes(cut)).error == "entry 1 of 1: sequence data truncated"


def test_a_header_with_version_1_but_nonzero_spare_is_read_as_v0():
    data = bytearray(p.pack([conn4()], syncid=1).messages[0].data)
    data[7] = 1  # spare != 0: the kernel treats the message as version 0, whose nr_conns is 0 here
    decoded = p.decode_message(bytes(data))
    assert (decoded.version, decoded.nr_conns, decoded.conns) == (0, 0, ())


def test_describe_names_everything():
    text = conn6(pe_data=b"x", pe_name="sip").describe()
    assert text == (
        "UDP [2001:db8::1]:5060 -> [fd00::10]:5060 -> [fd00::20]:5060 UDP timeout 300s fwmark 7 pe sip "
        "flags 0x0183 (route)"
    )
