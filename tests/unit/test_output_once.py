"""`ipvsman --once` as a process: compact JSON written straight from the services (exactly what
json.dumps makes of the dicts), no cyclic garbage collection while it runs, and an exit right
after its output is flushed, with the same exit codes and output as before."""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ipvsman import cli, model, output
from ipvsman.demo import DemoBackend
from ipvsman.model import DestKey, DestStates, RawState, Service, ServiceKey, Snapshot, StateCounts

ROOT = Path(__file__).resolve().parents[2]


def dest(address: str, port: int, forward: str = "masq", weight: int = 1, af: str = "inet", base: int = 0) -> model.Dest:
    return model.Dest(address, port, forward, weight, 100 + base, 10, 5 + base, 6, 7,
                      model.Stats(2**40 + base, 2, 3, 2**63 + base, 5), model.Rates(6, 7, 8, 9, 10 + base), af)  # fmt: skip


def odd_services() -> tuple[Service, ...]:
    """Services of every kind JSON spells differently: firewall marks (null protocol, address and
    port), IPv6, persistence with a netmask, a persistence engine, flags, schedulers whose names
    JSON must escape, and a service with no real servers."""
    return (
        Service(ServiceKey("inet", "tcp", "10.0.0.1", 80), "wlc", None, "", (), None,
                model.Stats(1, 2, 3, 4, 5), model.Rates(0, 0, 0, 0, 1),
                (dest("192.168.0.1", 8080), dest("192.168.0.2", 8080, "route", 0, base=3))),
        Service(ServiceKey("inet", "udp", "10.0.0.2", 53), "sh", 300, "255.255.255.0", ("persistent", "sh-port", "0x40"),
                "sip", model.Stats(), model.Rates(), (dest("192.168.0.3", 53, "tunnel"),)),
        Service(ServiceKey("inet6", "sctp", "fd00::1", 0), 'we"ird\\sched', 60, "64", ("persistent",), None,
                model.Stats(9, 9, 9, 9, 9), model.Rates(1, 1, 1, 1, 1), (dest("fd00::2", 0, "local", af="inet6"),)),
        Service(ServiceKey("inet", None, "", 0, 7), "rr\u00e9", None, "", (), None, model.Stats(), model.Rates(),
                (dest("192.168.0.4", 0),)),
        Service(ServiceKey("inet6", None, "", 0, 2**32 - 1), "mh", None, "", ("mh-fallback",), None,
                model.Stats(), model.Rates(), ()),
    )  # fmt: skip


def snapshot_of(services, service_states=None, dest_states=None) -> Snapshot:
    state = RawState(model.IpvsInfo("1.2.1", 4096), model.Timeouts(900, 120, 300), services, (), sync_version=1)
    return Snapshot(1, 1_700_000_000.123456, 0.5, "kernel", True, state, service_states or {},
                    dest_states if dest_states is not None else DestStates())  # fmt: skip


def expected_json(snapshot: Snapshot, connections: bool = False) -> str:
    return json.dumps(output.snapshot_to_dict(snapshot, connections), separators=(",", ":"))


def test_compact_json_of_services_of_every_kind_is_exactly_json_dumps():
    services = odd_services()
    assert output.compact_json(snapshot_of(services), False) == expected_json(snapshot_of(services))
    # With counts by state, per service and per real server (and none for some of them).
    first, second = services[0].key, services[1].key
    service_states = {first: StateCounts({"ESTABLISHED": 3, "FIN_WAIT": 1}), second: StateCounts({"UDP": 2}),
                      services[2].key: StateCounts()}  # fmt: skip
    dest_states = DestStates({first: {("192.168.0.1", 8080): {"ESTABLISHED": 3, "SYN_RECV": 0}},
                              second: {("192.168.0.3", 53): {"UDP": 2}}})  # fmt: skip
    assert len(dest_states) and dest_states[DestKey(first, "192.168.0.1", 8080)]["ESTABLISHED"] == 3
    counted = snapshot_of(services, service_states, dest_states)
    text = output.compact_json(counted, False)
    assert text == expected_json(counted)
    document = json.loads(text)
    assert document["services"][0]["conn_states"] == {"ESTABLISHED": 3, "FIN_WAIT": 1}
    assert document["services"][2]["scheduler"] == 'we"ird\\sched' and document["services"][3]["scheduler"] == "rr\u00e9"
    assert document["services"][3]["address"] is None and document["services"][4]["dests"] == []


def test_compact_json_of_no_services():
    assert output.compact_json(snapshot_of(()), False) == expected_json(snapshot_of(()))


def test_json_scalars_are_what_json_dumps_writes():
    for value in (None, 0, 80, 2**64, "inet", 'a"b', "\u00e9\n", True, False, 1.5, ("persistent", "ops"), ()):
        expected = json.dumps(list(value) if isinstance(value, tuple) else value, separators=(",", ":"))
        assert output._json_scalar(value) == expected
        assert output._json_scalar(value) == expected  # the second time from what was kept


# -- the process ------------------------------------------------------------------------------------


def test_once_runs_without_cyclic_collection_and_gives_the_collector_back(monkeypatch):
    seen = []
    real = output.print_once

    def print_once(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs, stream=io.StringIO())

    monkeypatch.setattr(output, "print_once", print_once)
    enabled = gc.isenabled()
    assert cli.main(["--demo", "--once", "--json"]) == output.EXIT_OK  # returns: not the ipvsman command
    assert seen == [False] and gc.isenabled() == enabled


def test_only_the_ipvsman_command_exits_at_once(monkeypatch):
    assert not cli._is_the_command()  # pytest's __main__
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(main=cli.main))  # python -m ipvsman, the script
    assert cli._is_the_command()


def test_exit_now_leaves_a_failed_flush_to_the_normal_exit(monkeypatch):
    class Closed(io.StringIO):
        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(sys, "stdout", Closed())
    cli.exit_now(0)
    assert exits == []  # returned: the interpreter reports the failure as it always has
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    cli.exit_now(3)
    assert exits == [3]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ipvsman", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)  # fmt: skip


def in_process(**kwargs) -> str:
    out = io.StringIO()
    assert output.print_once(DemoBackend(seed=1), connections=False, stream=out, conn_budget=5.0, **kwargs) == 0
    return out.getvalue()


@pytest.mark.parametrize("as_json", [True, False])
def test_the_command_prints_all_of_what_print_once_prints(as_json):
    """The process ends right after its output is flushed: every byte is there, as in-process."""
    done = run_cli("--demo", "--once", *(["--json"] if as_json else []))
    assert done.returncode == 0 and done.stderr == ""
    expected = in_process(as_json=as_json)
    if as_json:
        printed, wanted = json.loads(done.stdout), json.loads(expected)
        printed.pop("taken_at"), wanted.pop("taken_at")
        assert printed == wanted and done.stdout.endswith("}\n")
    else:
        assert done.stdout.splitlines()[2:] == expected.splitlines()[2:] and done.stdout.endswith("\n")


def test_the_commands_exit_codes_are_those_of_print_once(tmp_path):
    drifted = tmp_path / "drifted.topology"
    drifted.write_text('S0:t:192.0.2.99:80 ["d0:10.9.9.9:80 -m -w1"] (-srr)\n', encoding="utf-8")
    done = run_cli("--demo", "--once", "--json", "--topology", str(drifted), "--check-drift")
    assert done.returncode == output.EXIT_DRIFT and json.loads(done.stdout)["drift"]
    missing = run_cli("--demo", "--once", "--keepalived", str(tmp_path / "missing.conf"))
    assert missing.returncode == output.EXIT_BAD_INPUT and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and "missing.conf" in missing.stderr
