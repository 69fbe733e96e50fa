"""ipvsmand's state file as the dashboard reads it: the contract, hostile files, drift, the reader thread, reload."""

from __future__ import annotations

import json
import os
import signal
import threading

import psutil
import pytest

from ipvsman.model import Dest, DestKey, Service, ServiceKey
from ipvsman.verdicts import (
    MAX_BYTES,
    VerdictReader,
    Verdicts,
    VerdictsError,
    clean_text,
    demo_verdicts,
    is_ipvsmand,
    parse_service_key,
    parse_verdicts,
    read_verdicts,
    reload_refusal,
    send_reload,
    verdict_drift,
)

WEB = ServiceKey("inet", "tcp", "10.0.0.1", 80)
WEB1 = DestKey(WEB, "10.0.1.1", 80)
WEB2 = DestKey(WEB, "10.0.1.2", 80)
NOW = 1_733_333_340.0


def server(address="10.0.1.1", state="up", **fields):
    entry = {
        "service": "tcp 10.0.0.1:80", "address": address, "port": 80, "state": state, "since": NOW - 600,
        "good": 3, "rise": 3, "bad": 0, "fall": 3, "check": "http", "last_check_at": NOW - 0.5, "last_ok": True,
        "reason": "", "latency_ms": 2.3, "configured_weight": 50, "applied_weight": 50, "action": "quiesce",
    }  # fmt: skip
    entry.update(fields)
    return entry


def document(*servers, **fields):
    doc = {
        "ipvsmand": 1, "version": "0.9", "pid": 1234, "topology": "/etc/ipvsman/topology",
        "applied_at": NOW - 3600, "written_at": NOW, "heartbeat": 5.0, "errors": [],
        "real_servers": list(servers) if servers else [server()],
    }  # fmt: skip
    doc.update(fields)
    return doc


def parse(doc) -> Verdicts:
    return parse_verdicts(json.dumps(doc).encode(), "state.json")


def refusal(doc_or_bytes) -> str:
    data = doc_or_bytes if isinstance(doc_or_bytes, bytes) else json.dumps(doc_or_bytes).encode()
    with pytest.raises(VerdictsError) as caught:
        parse_verdicts(data, "state.json")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("ipvsmand state state.json: ")
    return message


# -- the contract ---------------------------------------------------------------------------------
def test_a_file_by_the_contract_becomes_verdicts_by_real_server():
    down = server("10.0.1.2", "down", good=0, bad=3, last_ok=False, reason="HTTP 503", latency_ms=None,
                  applied_weight=0, since=NOW - 60)  # fmt: skip
    verdicts = parse(document(server(), down))
    assert (verdicts.pid, verdicts.topology, verdicts.heartbeat) == (1234, "/etc/ipvsman/topology", 5.0)
    assert set(verdicts.by_dest) == {WEB1, WEB2}
    assert verdicts.by_dest[WEB1].word == "UP"
    verdict = verdicts.by_dest[WEB2]
    assert (verdict.state, verdict.reason, verdict.latency_ms, verdict.applied_weight) == ("down", "HTTP 503", None, 0)
    with pytest.raises(TypeError):
        verdicts.by_dest[WEB1] = verdict  # immutable: handed between threads


def test_words_say_rising_and_falling_with_their_counts(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    verdicts = parse(document(
        server(state="rising", good=2, bad=0, applied_weight=0),
        server("10.0.1.2", "falling", good=0, bad=1, reason="HTTP 503", since=1_733_328_131.0),
    ))  # fmt: skip
    assert verdicts.by_dest[WEB1].word == "rising 2/3"
    assert verdicts.by_dest[WEB2].word == "falling 1/3"
    assert verdicts.by_dest[WEB2].describe() == 'falling 1/3 since 16:02:11 "HTTP 503"'


@pytest.mark.parametrize(
    "text, key",
    [
        ("tcp 10.0.0.1:80", ServiceKey("inet", "tcp", "10.0.0.1", 80)),
        ("udp [fd00::1]:53", ServiceKey("inet6", "udp", "fd00::1", 53)),
        ("fwmark 12", ServiceKey("inet", None, "", 0, fwmark=12)),
        ("fwmark 12 (IPv6)", ServiceKey("inet6", None, "", 0, fwmark=12)),
    ],
)
def test_service_text_reads_back_as_the_kernel_key(text, key):
    assert parse_service_key(text) == key
    assert str(key) == text  # the contract: str(ServiceKey), both ways


@pytest.mark.parametrize("text", ["tcp 10.0.0.1", "icmp 10.0.0.1:80", "fwmark x", "fwmark 0", "tcp fd00::1:80", ""])
def test_service_text_off_the_contract_is_refused(text):
    with pytest.raises(ValueError):
        parse_service_key(text)


def test_ipv6_addresses_are_compressed_as_the_kernel_backend_gives_them():
    entry = server("fd00:0:0:0:0:0:0:1", service="tcp [fd00::10]:80")
    key = next(iter(parse(document(entry)).by_dest))
    assert key == DestKey(ServiceKey("inet6", "tcp", "fd00::10", 80), "fd00::1", 80)


def test_unknown_extra_fields_are_ignored_within_schema_1():
    assert parse(document(server(extra="x"), future={"a": 1})).by_dest[WEB1].state == "up"


# -- hostile and broken files ---------------------------------------------------------------------
def test_binary_garbage_is_refused_in_one_line():
    assert "not UTF-8" in refusal(bytes(range(256)) * 10)
    assert "not JSON" in refusal(b"\x00{\"ipvsmand\": 1")


@pytest.mark.parametrize("version", [2, 0, "1", True, None])
def test_another_schema_version_is_refused(version):
    doc = document()
    doc["ipvsmand"] = version
    message = refusal(doc)
    assert "schema" in message


def test_a_missing_schema_names_what_the_file_is_not():
    doc = document()
    del doc["ipvsmand"]
    assert "not ipvsmand's state file" in refusal(doc)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_refused(constant):
    text = json.dumps(document()).replace('"heartbeat": 5.0', '"heartbeat": ' + constant.decode())
    assert "not JSON" in refusal(text.encode())


def test_deep_nesting_and_huge_integers_are_refused_not_crashing():
    assert "not JSON" in refusal(b"[" * 100_000 + b"]" * 100_000)
    assert "not JSON" in refusal(b'{"ipvsmand": 1, "pid": ' + b"9" * 5000 + b"}")


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("pid", "1234", "pid: must be a whole number"),
        ("pid", 0, "pid: must be a whole number"),
        ("heartbeat", 0, "heartbeat: must be more than 0"),
        ("written_at", "now", "written_at: must be a number"),
        ("errors", "bad", "errors: must be a list"),
        ("real_servers", {}, "real_servers: must be a list"),
        ("topology", 5, "topology: must be text"),
    ],
)
def test_wrong_types_at_the_top_name_the_field(field, value, words):
    assert words in refusal(document(**{field: value}))


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("port", 70000, "real_servers[0].port: must be a whole number 0-65535"),
        ("port", True, "real_servers[0].port"),
        ("address", "10.0.1.300", "real_servers[0].address: must be an IP address"),
        ("address", 5, "real_servers[0].address"),
        ("state", "UP", "real_servers[0].state: must be one of"),
        ("action", "kill", "real_servers[0].action"),
        ("configured_weight", -1, "real_servers[0].configured_weight"),
        ("applied_weight", 70000, "real_servers[0].applied_weight"),
        ("rise", 0, "real_servers[0].rise"),
        ("latency_ms", -3, "real_servers[0].latency_ms"),
        ("last_ok", "yes", "real_servers[0].last_ok"),
        ("service", "tcp 10.0.0.1", "real_servers[0].service"),
    ],
)
def test_wrong_types_in_a_real_server_name_it(field, value, words):
    assert words in refusal(document(server(**{field: value})))


# ipvsmand writes every field, null where it may be: a missing one is not its file (last_ok, reason and the
# other nullable ones included).
@pytest.mark.parametrize("field", [
    "service", "address", "port", "state", "since", "rise", "fall", "action", "check", "last_check_at", "last_ok",
    "reason", "latency_ms", "applied_weight",
])  # fmt: skip
def test_a_missing_field_is_named(field):
    entry = server()
    del entry[field]
    assert f"real_servers[0].{field}: missing" in refusal(document(entry))


def test_a_missing_version_is_named():
    doc = document()
    del doc["version"]
    assert refusal(doc).endswith("version: missing")


@pytest.mark.parametrize(
    "where, field, words",
    [
        ("top", "heartbeat", "heartbeat: must be a number"),
        ("top", "written_at", "written_at: must be a number"),
        ("top", "pid", "pid: must be a whole number 1-4194304"),
        ("server", "since", "real_servers[0].since: must be a number"),
        ("server", "latency_ms", "real_servers[0].latency_ms: must be a number"),
        ("server", "good", "real_servers[0].good: must be a whole number"),
    ],
)
def test_numbers_of_hundreds_of_digits_are_refused_not_raised(where, field, words):
    huge = 10**400  # JSON reads it (under 4,300 digits); float() of it raises OverflowError
    doc = document(**{field: huge}) if where == "top" else document(server(**{field: huge}))
    assert words in refusal(doc)


def test_a_number_that_reads_as_infinity_is_refused():
    text = json.dumps(document()).replace('"heartbeat": 5.0', '"heartbeat": 1e999')  # no constant: json gives inf
    assert "heartbeat: must be a number" in refusal(text.encode())


def test_a_time_no_clock_can_show_is_shown_as_unknown_not_raised():
    verdict = parse(document(server(state="down", since=1e300))).by_dest[WEB1]
    assert verdict.describe() == "DOWN since ??:??:??"


def test_lone_surrogates_and_bidi_overrides_never_reach_the_terminal():
    verdict = parse(document(server(state="down", reason="a\ud800b\u202egnp.exe", check="http\u2028"))).by_dest[WEB1]
    assert (verdict.reason, verdict.check) == ("a?b?gnp.exe", "http?")
    verdict.describe().encode("utf-8")  # what the terminal is sent: no lone surrogate left to fail on


def test_a_service_text_longer_than_any_service_is_refused():
    assert "real_servers[0].service: expected a service" in refusal(document(server(service="tcp " + "1" * 100)))


def test_a_real_server_named_twice_is_refused():
    assert "named twice" in refusal(document(server(), server()))


def test_control_characters_never_reach_the_terminal():
    hostile = "\x1b[2J\x1b]0;owned\x07line\nbreak" + "x" * 5000
    verdicts = parse(document(server(reason=hostile, check="\x9bhttp"), topology="/etc/\x1bt", errors=[hostile]))
    verdict = verdicts.by_dest[WEB1]
    for text in (verdict.reason, verdict.check, verdicts.topology, verdicts.errors[0], verdict.describe()):
        assert not any(ord(char) < 32 or 127 <= ord(char) < 160 for char in text), repr(text)
    assert len(verdict.reason) <= 201
    assert clean_text("a\tb") == "a?b"


def test_huge_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "state.json"
    with open(path, "wb") as out:
        out.truncate(MAX_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(VerdictsError, match="more than the"):
        read_verdicts(str(path))
    small = tmp_path / "small.json"
    small.write_text(json.dumps(document()))
    with pytest.raises(VerdictsError, match="more than the 100 bytes"):
        read_verdicts(str(small), max_bytes=100)


def test_missing_unreadable_and_odd_files_are_refused_in_one_line(tmp_path):
    with pytest.raises(VerdictsError, match="missing"):
        read_verdicts(str(tmp_path / "nope.json"))
    with pytest.raises(VerdictsError, match="not a regular file"):
        read_verdicts(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # a FIFO with no writer would block a plain open() for ever
    with pytest.raises(VerdictsError, match="not a regular file"):
        read_verdicts(str(fifo))
    if os.geteuid() != 0:
        locked = tmp_path / "locked.json"
        locked.write_text("{}")
        locked.chmod(0)
        with pytest.raises(VerdictsError, match="not readable"):
            read_verdicts(str(locked))


def test_the_daemons_own_writer_is_read_back(tmp_path):
    statefile = pytest.importorskip("ipvsman.daemon.statefile")
    path = tmp_path / "ipvsmand.json"
    path.write_text(json.dumps(document(server(), server("10.0.1.2", "down", applied_weight=0, reason="HTTP 503"))))
    state = statefile.read_state(str(path))  # the daemon's own reading of the same contract
    statefile.write_state(str(path), state)
    verdicts = read_verdicts(str(path))
    assert verdicts.by_dest[WEB2].reason == "HTTP 503"
    assert verdicts.written_at == state.written_at


# -- staleness and drift ----------------------------------------------------------------------------
def test_stale_after_three_heartbeats():
    verdicts = parse(document())
    assert not verdicts.stale(NOW + 15.0)
    assert verdicts.stale(NOW + 15.1)
    assert verdicts.stale_line(NOW + 41) == "ipvsmand state 41 s old: the daemon stopped or froze"
    assert verdicts.stale_line(NOW + 1) is None


def kernel(weights):
    dests = tuple(Dest(address, 80, "masq", weight) for address, weight in weights.items())
    return (Service(WEB, "wlc", dests=dests),)


def test_drift_kernel_weight_zero_while_ipvsmand_keeps_it_up():
    verdicts = parse(document(server(), server("10.0.1.2")))
    drift = verdict_drift(verdicts, kernel({"10.0.1.1": 0, "10.0.1.2": 50}))
    assert set(drift) == {WEB1}
    assert drift[WEB1] == "kernel weight 0, ipvsmand says UP (weight 50)"


def test_drift_kernel_weight_while_ipvsmand_holds_it_out():
    verdicts = parse(document(server(state="down", applied_weight=0), server("10.0.1.2", "suspended", applied_weight=0,
                                                                              configured_weight=0)))  # fmt: skip
    assert verdict_drift(verdicts, kernel({"10.0.1.1": 0, "10.0.1.2": 0})) == {}
    drift = verdict_drift(verdicts, kernel({"10.0.1.1": 7, "10.0.1.2": 0}))
    assert drift == {WEB1: "kernel weight 7, ipvsmand says DOWN (weight 0)"}


def test_drift_an_unchecked_server_is_in_service_as_ipvsmand_keeps_it():
    verdicts = parse(document(server(state="unknown", good=0, last_check_at=None, last_ok=None, latency_ms=None)))
    drift = verdict_drift(verdicts, kernel({"10.0.1.1": 0}))
    assert drift == {WEB1: "kernel weight 0, ipvsmand says unknown (weight 50)"}


def test_drift_ipvsmand_names_a_server_the_kernel_lacks_unless_it_removed_it():
    verdicts = parse(document(server(), server("10.0.1.2", "down", applied_weight=None, action="remove")))
    drift = verdict_drift(verdicts, kernel({}))
    assert set(drift) == {WEB1}  # 10.0.1.2 was removed by ipvsmand itself: no disagreement
    assert drift[WEB1] == "ipvsmand has it at weight 50, the kernel does not"
    assert verdict_drift(None, kernel({})) == {}


def test_demo_verdicts_have_a_down_a_rising_and_one_drift():
    from ipvsman.demo import DemoBackend

    backend = DemoBackend(seed=1, tick=1.0)
    backend.open()
    services = backend.poll().services
    verdicts = demo_verdicts(services, NOW)
    states = {v.state for v in verdicts.by_dest.values()}
    assert {"up", "down", "rising", "falling"} <= states
    drift = verdict_drift(verdicts, services)
    assert len(drift) == 1 and "ipvsmand says DOWN" in next(iter(drift.values()))
    assert not verdicts.stale(NOW + 10)


def test_demo_verdicts_made_again_from_earlier_ones_keep_their_times():
    from ipvsman.demo import DemoBackend

    backend = DemoBackend(seed=1, tick=1.0)
    backend.open()
    services = backend.poll().services
    first = demo_verdicts(services, NOW)
    later = demo_verdicts(services, NOW + 30, first)
    assert later.real_servers is first.real_servers and later.by_dest == first.by_dest
    assert (later.written_at, later.applied_at) == (NOW + 30, first.applied_at)
    assert demo_verdicts(services, NOW + 30).by_dest != first.by_dest  # made anew: every "since" moved


# -- the reader thread ----------------------------------------------------------------------------
def test_reader_reads_again_only_when_the_file_changed(tmp_path):
    path = tmp_path / "ipvsmand.json"
    reader = VerdictReader(str(path), lambda result: None)
    first = reader.read_if_changed()
    assert isinstance(first, VerdictsError) and "missing" in str(first)
    assert reader.read_if_changed() is None  # still missing: said once
    path.write_text(json.dumps(document()))
    assert isinstance(reader.read_if_changed(), Verdicts)
    assert reader.read_if_changed() is None
    replacement = tmp_path / "new.json"
    replacement.write_text(json.dumps(document(written_at=NOW + 5)))
    os.replace(replacement, path)  # the daemon's atomic rename: a new inode
    assert reader.read_if_changed().written_at == NOW + 5


def test_reader_thread_hands_results_over_and_stops(tmp_path):
    path = tmp_path / "ipvsmand.json"
    path.write_text(json.dumps(document()))
    results, arrived = [], threading.Event()

    def on_result(result):
        results.append(result)
        arrived.set()

    reader = VerdictReader(str(path), on_result, every=0.05)
    reader.start()
    try:
        assert arrived.wait(5)
    finally:
        reader.stop()
    assert not reader.is_alive()
    assert isinstance(results[0], Verdicts) and results[0].pid == 1234


# -- reload ---------------------------------------------------------------------------------------
class FakeProcess:
    def __init__(self, cmdline=None, error=None):
        self._cmdline, self._error = cmdline, error

    def cmdline(self):
        if self._error is not None:
            raise self._error
        return self._cmdline


@pytest.mark.parametrize(
    "cmdline, expected",
    [
        (["/usr/bin/python3", "/usr/local/bin/ipvsmand", "--topology", "/etc/t"], True),
        (["ipvsmand", "--topology", "t"], True),
        (["python3", "-m", "ipvsman.daemon.main"], True),
        (["sshd: root"], False),
        (["/usr/bin/python3", "/tmp/not-ipvsmand.py"], False),
        ([], False),
    ],
)
def test_is_ipvsmand(cmdline, expected):
    assert is_ipvsmand(cmdline) is expected


def test_reload_refused_when_the_pid_is_gone_or_another_program():
    verdicts = parse(document())
    gone = reload_refusal(verdicts, lambda pid: FakeProcess(error=psutil.NoSuchProcess(pid)))
    assert gone.startswith("reload ipvsmand: pid 1234 is not running")
    other = reload_refusal(verdicts, lambda pid: FakeProcess(["/usr/sbin/sshd", "-D"]))
    assert other == "reload ipvsmand: pid 1234 is not ipvsmand (/usr/sbin/sshd -D): nothing sent"
    hidden = reload_refusal(verdicts, lambda pid: FakeProcess(error=psutil.AccessDenied(pid)))
    assert "cannot tell it is ipvsmand" in hidden
    assert reload_refusal(verdicts, lambda pid: FakeProcess(["ipvsmand", "--topology", "t"])) is None
    assert reload_refusal(None) is not None


def test_reload_refusal_looks_at_a_real_process():
    verdicts = parse(document(pid=os.getpid()))  # this test runner: running, but not ipvsmand
    assert "is not ipvsmand" in reload_refusal(verdicts)


def test_send_reload_sends_sighup_to_the_pid():
    sent = []
    message = send_reload(4321, lambda pid, sig: sent.append((pid, sig)))
    assert sent == [(4321, signal.SIGHUP)]
    assert "pid 4321" in message

