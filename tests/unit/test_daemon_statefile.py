"""The state file: atomic writes, the round trip, staleness, and a reader that distrusts hostile content."""

from __future__ import annotations

import json
import os
import stat
import threading

import pytest

from ipvsman.daemon import statefile
from ipvsman.daemon.statefile import DaemonState, RealServerState, StateFileError, read_state, write_state


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
    big = DaemonState(*[getattr(one, name) for name in one.__slots__[:-1]], one.real_servers * 500)
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


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(ipvsmand=2), "state file schema 2, this ipvsman reads schema 1"),
        (lambda d: d.update(ipvsmand=True), "state file schema True"),
        (lambda d: d.pop("written_at"), "written_at is missing"),
        (lambda d: d.update(pid="1234"), "pid: expected int, got str"),
        (lambda d: d.update(pid=True), "pid: expected int, got bool"),
        (lambda d: d.update(pid=0), "pid: expected 1-"),
        (lambda d: d.update(heartbeat=0), "heartbeat must be more than 0"),
        (lambda d: d.update(real_servers={}), "real_servers: expected list, got dict"),
        (lambda d: d.update(errors=[1]), "errors: expected strings"),
        (lambda d: d["real_servers"][0].update(state="exploded"), "real_servers[0]: state: expected one of up"),
        (lambda d: d["real_servers"][0].update(port=70000), "real_servers[0]: port: expected 0-65535, got 70000"),
        (lambda d: d["real_servers"][0].update(action="reboot"), "real_servers[0]: action: expected quiesce or remove"),
        (lambda d: d["real_servers"][0].update(latency_ms="fast"), "real_servers[0]: latency_ms: expected number or null"),
        (lambda d: d["real_servers"].append(["not", "an", "object"]), "real_servers[1]: expected an object"),
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
        (b"\xff\xfe garbage", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
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
    with pytest.raises(StateFileError, match="larger than"):
        read_state(path)
    with pytest.raises(StateFileError, match="cannot read: No such file"):
        read_state(str(tmp_path / "absent.json"))
    with pytest.raises(StateFileError, match="cannot read: Is a directory"):
        read_state(str(tmp_path))


def test_control_characters_and_long_text_are_made_one_printable_line(tmp_path):
    data = valid()
    data["real_servers"][0]["reason"] = "HTTP 503\n\x1b[2J" + "y" * 5000
    data["errors"] = ["topology:3: bad\r\nline"]
    state = read_state(write_raw(tmp_path, json.dumps(data)))
    reason = state.real_servers[0].reason
    assert reason.startswith("HTTP 503  [2J") and reason.isprintable() and len(reason) == statefile.MAX_TEXT
    assert state.errors == ("topology:3: bad  line",)
