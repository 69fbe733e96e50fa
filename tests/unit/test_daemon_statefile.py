"""The state file: atomic writes, the round trip, staleness, and a reader that distrusts hostile content."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading

import pytest

from ipvsman.daemon import statefile
from ipvsman.daemon.statefile import DaemonState, RealServerState, StateFileError, read_state, write_state
from ipvsman.verdicts import read_verdicts


def sample(written_at=1000.0, reason="HTTP 503") -> DaemonState:
    server = RealServerState(
        service="tcp 10.0.0.1:80", address="10.0.1.1", port=80, state="down", since=990.0, good=0, rise=3,
        bad=3, fall=3, check="http", last_check_at=999.5, last_ok=False, reason=reason, latency_ms=None,
        configured_weight=50, applied_weight=0, action="quiesce",
    )  # fmt: skip
    return DaemonState(1, "0.1.0", 1234, "/etc/ipvsman/topology", 900.0, written_at, 5.0, (), (server,))


def test_round_trip_mode_and_no_temporary_left(tmp_path):
    path = tmp_path / "run" / "ipvsmand.json"
    write_state(str(path), sample())
    assert read_state(str(path)) == sample()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["ipvsmand.json"]
    data = json.loads(path.read_text())
    assert data["ipvsmand"] == 1 and data["real_servers"][0]["applied_weight"] == 0


def test_stale_after_three_heartbeats(tmp_path):
    state = sample(written_at=1000.0)
    assert not state.stale(now=1015.0) and state.stale(now=1015.1)


def test_a_reader_never_sees_a_half_written_file(tmp_path):
    path = str(tmp_path / "ipvsmand.json")
    one = sample()
    servers = tuple(dataclasses.replace(one.real_servers[0], port=port) for port in range(1, 501))
    big = dataclasses.replace(one, real_servers=servers)
    write_state(path, big)
    failures: list[str] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                assert len(read_state(path).real_servers) == 500
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                failures.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(10):
        write_state(path, big)
    stop.set()
    thread.join()
    assert failures == []


def write_raw(tmp_path, content: bytes | str) -> str:
    path = tmp_path / "state.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def valid() -> dict:
    return json.loads(statefile.to_json(sample()))


def first_server(**fields):
    return lambda document: document["real_servers"][0].update(fields)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(ipvsmand=2), "schema version 2, this ipvsman reads 1"),
        (lambda d: d.update(ipvsmand=True), "no schema version"),
        (lambda d: d.pop("written_at"), "written_at: missing"),
        (lambda d: d.update(pid="1234"), 'pid: must be a whole number 1-4194304, got "1234"'),
        (lambda d: d.update(pid=True), "pid: must be a whole number 1-4194304, got true"),
        (lambda d: d.update(pid=0), "pid: must be a whole number 1-"),
        (lambda d: d.update(pid=10**400), "pid: must be a whole number 1-"),
        (lambda d: d.update(heartbeat=0), "heartbeat: must be more than 0"),
        (lambda d: d.update(heartbeat=10**400), "heartbeat: must be a number"),
        (lambda d: d.update(real_servers={}), "real_servers: must be a list, got an object"),
        (lambda d: d.update(errors=[1]), "errors: must be a list of text"),
        (first_server(state="exploded"), "real_servers[0].state: must be one of up"),
        (first_server(port=70000), "real_servers[0].port: must be a whole number 0-65535, got 70000"),
        (first_server(action="reboot"), 'real_servers[0].action: must be one of quiesce, remove, got "reboot"'),
        (first_server(latency_ms="fast"), "real_servers[0].latency_ms: must be a number of at least 0 or null"),
        (lambda d: d["real_servers"][0].pop("last_ok"), "real_servers[0].last_ok: missing"),  # written, null or not
        (lambda d: d["real_servers"].append(["not", "an", "object"]), "real_servers[1]: must be an object"),
    ],
)
def test_malformed_content_is_one_line(tmp_path, mutate, message):
    data = valid()
    mutate(data)
    path = write_raw(tmp_path, json.dumps(data))
    with pytest.raises(StateFileError) as caught:
        read_state(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not JSON"),
        (b"\xff\xfe garbage", "not UTF-8 text"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"ipvsmand": 1, "heartbeat": 1e999}', "heartbeat: must be a number"),  # infinity, without a constant
        (b'{"ipvsmand": 1, "heartbeat": NaN}', "not JSON: NaN is not a number"),
        (b"[" * 100000 + b"]" * 100000, "not JSON"),
        (b'{"ipvsmand": 1,\n"pid": }', "not JSON"),
    ],
)
def test_hostile_bytes_are_one_line(tmp_path, content, message):
    path = write_raw(tmp_path, content)
    with pytest.raises(StateFileError) as caught:
        read_state(path)
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_huge_missing_and_unreadable_files(tmp_path, monkeypatch):
    monkeypatch.setattr(statefile, "MAX_BYTES", 1024)
    path = write_raw(tmp_path, "x" * 2048)
    with pytest.raises(StateFileError, match="more than the 1024 bytes read"):
        read_state(path)
    with pytest.raises(StateFileError, match="missing"):
        read_state(str(tmp_path / "absent.json"))
    with pytest.raises(StateFileError, match="not a regular file"):
        read_state(str(tmp_path))


def test_control_characters_and_long_text_are_data_here_and_one_printable_line_on_the_dashboard(tmp_path):
    data = valid()
    data["real_servers"][0]["reason"] = "HTTP 503\n\x1b[2J" + "y" * 5000
    data["errors"] = ["topology:3: bad\r\nline"]
    path = write_raw(tmp_path, json.dumps(data))
    state = read_state(path)  # for programs (history compares the topology's path): the text as written
    assert state.real_servers[0].reason == data["real_servers"][0]["reason"]
    verdicts = read_verdicts(path)  # for a terminal: cleaned where it is shown
    reason = verdicts.real_servers[0].reason
    assert reason.startswith("HTTP 503??[2J") and reason.isprintable() and len(reason) == statefile.TEXT_LIMIT + 1
    assert verdicts.errors == ("topology:3: bad??line",)
