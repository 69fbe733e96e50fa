"""`ipvsman --once` against real IPVS: refused in one line without CAP_NET_ADMIN, drift and --check-drift as root."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import pyroute2
import pytest

from ipvsman.output import EXIT_DRIFT, EXIT_NO_IPVS, EXIT_OK

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
VIP = "10.97.0.1"
REALS = ("10.97.1.1", "10.97.1.2")


def world_readable(path: str) -> bool:
    """Whether a user with no rights of its own can reach `path` (every directory above it searchable)."""
    parts = Path(path).resolve().parents
    return all(os.stat(part).st_mode & 0o001 for part in parts) and os.access(path, os.R_OK)


@pytest.fixture
def unprivileged_python():
    """(interpreter, PYTHONPATH) that user nobody can run ipvsman with.

    This interpreter may live under /root (pyenv), which nobody cannot enter: then the system's
    python3 runs instead, with copies of pyroute2 and of ipvsman in a directory everyone may
    read (the guest's /tmp is writable).
    """
    interpreter = sys.executable if world_readable(sys.executable) else "/usr/bin/python3"
    assert world_readable(interpreter), f"no python nobody may run (tried {sys.executable} and {interpreter})"
    packages = tempfile.mkdtemp(prefix="ipvsman-nobody-")
    try:
        shutil.copytree(Path(pyroute2.__file__).parent, Path(packages) / "pyroute2")
        # The checkout too: CI may clone it where nobody cannot enter (under /root).
        shutil.copytree(ROOT / "ipvsman", Path(packages) / "ipvsman", ignore=shutil.ignore_patterns("__pycache__"))
        for directory, _, files in os.walk(packages):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
        yield interpreter, packages
    finally:
        shutil.rmtree(packages, ignore_errors=True)


def add_web_service(netns) -> None:
    netns.run(
        f"ipvsadm -A -t {VIP}:80 -s wrr"
        + "".join(f" && ipvsadm -a -t {VIP}:80 -r {real}:8080 -m -w 3" for real in REALS)
    )


def test_once_without_cap_net_admin_fails_in_one_line(netns, unprivileged_python):
    add_web_service(netns)  # a director that serves something: an empty list would be a lie
    interpreter, path = unprivileged_python
    drop = f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups --inh-caps=-all"
    for flags in ("--once --json", "--once"):
        run = netns.run(
            f"{drop} env HOME=/ PYTHONPATH={shlex.quote(path)} {shlex.quote(interpreter)} -m ipvsman {flags}",
            check=False,
            timeout=600,
        )
        assert (run.returncode, run.stdout) == (EXIT_NO_IPVS, ""), run.stderr
        assert run.stderr == "ipvsman: needs CAP_NET_ADMIN: run as root\n"


def test_once_as_root_reports_drift_against_a_topology(netns, tmp_path):
    add_web_service(netns)
    web = ", ".join(f'"web{index}:{real}:8080 -m -w3"' for index, real in enumerate(REALS, 1))
    exact = tmp_path / "exact.topology"
    exact.write_text(f"Web:t:{VIP}:80 [{web}] (-swrr)\n", encoding="utf-8")
    run = netns.python("-m", "ipvsman", "--once", "--json", "--topology", str(exact), "--check-drift", check=False)
    assert (run.returncode, run.stderr) == (EXIT_OK, ""), run.stderr
    document = json.loads(run.stdout)
    assert document["drift"] == []
    assert [(s["address"], s["port"], len(s["dests"])) for s in document["services"]] == [(VIP, 80, len(REALS))]
    assert document["ipvs"]["version"] and document["timeouts"]["tcp"] is not None
    assert document["daemons"] == []  # read, and none runs here

    # The second real server configured with another weight, and a DNS service the kernel lacks.
    drifted = tmp_path / "drifted.topology"
    drifted.write_text(
        f"Web:t:{VIP}:80 [{web.replace(f'{REALS[1]}:8080 -m -w3', f'{REALS[1]}:8080 -m -w5')}] (-swrr)\n"
        '# not in the kernel yet\nDns:u:10.97.0.53:53 ["dns1:10.97.1.53 -m"] (-srr)\n',
        encoding="utf-8",
    )
    run = netns.python("-m", "ipvsman", "--once", "--json", "--topology", str(drifted), "--check-drift", check=False)
    assert (run.returncode, run.stderr) == (EXIT_DRIFT, ""), run.stderr
    drift = json.loads(run.stdout)["drift"]
    assert [(d["kind"], d["service"], d["dest"], d["configured"], d["actual"]) for d in drift] == [
        ("weight", f"tcp {VIP}:80", f"{REALS[1]}:8080", 5, 3),
        ("missing", "udp 10.97.0.53:53", None, "udp 10.97.0.53:53", None),
    ]
    assert drift[0]["origin"] == f"{drifted}:1"
