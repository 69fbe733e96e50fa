"""The command line: contradictory options refused in one line, --once's exit codes, drift and configuration errors."""

from __future__ import annotations

import json
import re

import pytest

from ipvsman import cli, output
from ipvsman.demo import DemoBackend
from ipvsman.model import FORWARD_LABELS
from ipvsman.poller import snapshot_once

# The topology letters of forwarding methods ("local" is what the kernel shows for any method
# to one of the director's own addresses, and drift accepts it for any).
FORWARD_FLAGS = {"masq": "-m", "route": "-g", "tunnel": "-i", "local": "-g"}
PROTOCOL_LETTERS = {"tcp": "t", "udp": "u", "sctp": "s"}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """cli.main in this process: (exit code, stdout, stderr); argparse's SystemExit is an exit code."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--demo", "--once", "--no-connections", "--connections"], "--no-connections does not read it"),
        (["--demo", "--json"], "--json goes with --once"),
        (["--demo", "--connections"], "--connections goes with --once"),
        (["--demo", "--check-drift", "--topology", "x"], "--check-drift goes with --once"),
        (["--demo", "--once", "--check-drift"], "--check-drift needs a file to compare with"),
        (["--demo", "--netns", "blue", "--once"], "--demo watches a simulated director, --netns a real one"),
        (["--seed", "3", "--once"], "--seed goes with --demo"),
    ],
)
def test_contradictory_options_are_refused_in_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert (code, out) == (output.EXIT_BAD_INPUT, "")
    # argparse's usage, then the one line that says what is wrong.
    assert err.startswith("usage: ipvsman")
    last = err.splitlines()[-1]
    assert last.startswith("ipvsman: error: ") and message in last


def test_help_lists_the_exit_codes_and_they_are_distinct(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    listed = {int(number): text for number, text in re.findall(r"^  (\d)  (.+)$", out, re.MULTILINE)}
    codes = (output.EXIT_OK, output.EXIT_DRIFT, output.EXIT_BAD_INPUT, output.EXIT_NO_IPVS)
    assert len(set(codes)) == len(codes)
    assert sorted(listed) == sorted(codes)
    assert "drift" in listed[output.EXIT_DRIFT] and "cannot be read" in listed[output.EXIT_BAD_INPUT]
    assert "CAP_NET_ADMIN" in listed[output.EXIT_NO_IPVS]


def demo_topology() -> str:
    """A topology saying exactly what the demo director (seed 1) runs."""
    lines = []
    for number, service in enumerate(snapshot_once(DemoBackend(seed=1)).services):
        key = service.key
        if key.fwmark:
            head = f"S{number}:f:{key.fwmark}"
        else:
            address = f"[{key.address}]" if ":" in key.address else key.address
            head = f"S{number}:{PROTOCOL_LETTERS[key.protocol]}:{address}:{key.port}"
        dests = []
        for index, dest in enumerate(service.dests):
            address = f"[{dest.address}]" if ":" in dest.address else dest.address
            dests.append(f'"d{number}x{index}:{address}:{dest.port} {FORWARD_FLAGS[dest.forward]} -w{dest.weight}"')
        options = [f"-s{service.scheduler}"]
        if key.fwmark and key.af == "inet6":
            options.append("-6")
        if service.persistent is not None:
            options.append(f"-p{service.persistent}")
            if service.netmask:
                options.append(f"-M {service.netmask}")
        lines.append(f"{head} [{', '.join(dests)}] ({' '.join(options)})")
    return "\n".join(lines) + "\n"


def test_check_drift_exits_0_without_drift_and_1_with_it(capsys, tmp_path):
    exact = tmp_path / "exact.topology"
    exact.write_text(demo_topology(), encoding="utf-8")
    code, out, err = run(capsys, "--demo", "--once", "--json", "--topology", str(exact), "--check-drift")
    assert (code, err) == (output.EXIT_OK, "")
    assert json.loads(out)["drift"] == []

    # The same file with one weight changed by hand.
    text = exact.read_text(encoding="utf-8")
    weight = re.search(r"-w(\d+)\"", text)
    drifted = tmp_path / "drifted.topology"
    drifted.write_text(text[: weight.start(1)] + str(int(weight.group(1)) + 1) + text[weight.end(1) :], "utf-8")
    code, out, err = run(capsys, "--demo", "--once", "--topology", str(drifted), "--check-drift")
    assert (code, err) == (output.EXIT_DRIFT, "")
    lines = out.splitlines()
    assert f"Drift against {drifted}: 1 difference" in lines
    assert any(line.startswith("  ") and f"weight {weight.group(1)}, configured" in line for line in lines)
    # Without --check-drift the drift is reported all the same, and is no failure.
    code, out, _ = run(capsys, "--demo", "--once", "--topology", str(drifted))
    assert code == output.EXIT_OK and f"Drift against {drifted}: 1 difference" in out


@pytest.mark.parametrize("option", ["--topology", "--keepalived"])
def test_a_named_file_that_cannot_be_read_is_bad_input(capsys, tmp_path, option):
    missing = tmp_path / "missing"
    code, out, err = run(capsys, "--demo", "--once", option, str(missing))
    assert (code, out) == (output.EXIT_BAD_INPUT, "")
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ipvsman: ") and str(missing) in lines[0]
    assert "No such file or directory" in lines[0]


def test_bad_lines_are_reported_on_stderr_and_the_rest_still_counts(capsys, tmp_path):
    topology = tmp_path / "partial.topology"
    topology.write_text(demo_topology().splitlines()[0] + "\nBroken:t:10.0.0.1\n", encoding="utf-8")
    code, out, err = run(capsys, "--demo", "--once", "--topology", str(topology))
    assert code == output.EXIT_OK
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ipvsman: {topology}:2: ")
    # The good line counts: its service agrees, every other demo service is extra.
    services = snapshot_once(DemoBackend(seed=1)).services
    assert f"Drift against {topology}: {len(services) - 1} differences" in out.splitlines()


def test_check_drift_against_a_file_without_services_is_bad_input(capsys, tmp_path):
    empty = tmp_path / "empty.topology"
    empty.write_text("# nothing configured yet\n", encoding="utf-8")
    code, out, err = run(capsys, "--demo", "--once", "--topology", str(empty), "--check-drift")
    assert (code, out) == (output.EXIT_BAD_INPUT, "")
    assert err == f"ipvsman: --check-drift: {empty} configures no virtual service to compare with\n"


def test_the_demo_still_prints_real_values(capsys):
    code, out, err = run(capsys, "--demo", "--seed", "2", "--once")
    assert (code, err) == (output.EXIT_OK, "")
    assert "unknown" not in out and "Sync daemons: none" not in out
    assert any(label in out for label in FORWARD_LABELS.values())
