"""ipvsmand against real IPVS: it makes the services, quiesces a dead real server, restores it, reloads, and leaves others alone."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ipvsman.daemon.statefile import read_state
from waiting import wait_until

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
START = 300.0  # guest time: the daemon's first read imports pyroute2 (about 15 s there), Python is ~30x slower

DNS_RESPONDER = textwrap.dedent(
    """
    import socket, struct, sys
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((sys.argv[1], int(sys.argv[2])))
    while True:
        data, peer = sock.recvfrom(512)
        end = 12
        while data[end]:
            end += 1 + data[end]
        end += 5
        answer = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("192.0.2.7")
        sock.sendto(struct.pack("!HHHHHH", data[0] << 8 | data[1], 0x8180, 1, 1, 0, 0) + data[12:end] + answer, peer)
    """
)


def weights(director, vip: str, protocol: str = "-t") -> dict[str, int]:
    """address:port -> weight of one service, from ipvsadm (the reference, not ipvsman's own reading)."""
    proc = director.run(f"ipvsadm -Ln {protocol} {vip}", check=False)
    found = {}
    for row in proc.stdout.splitlines():
        words = row.split()
        if words and words[0] == "->" and words[1][0].isdigit():
            found[words[1]] = int(words[3])
    return found


def test_ipvsmand_holds_ipvs_to_the_topology(netns_pair, tmp_path):
    director, servers = netns_pair
    servers.run("ip addr add 10.99.0.3/24 dev vb && ip addr add 10.99.0.4/24 dev vb")
    web = {}
    for address in ("10.99.0.2", "10.99.0.3", "10.99.0.4"):
        web[address] = servers.popen(
            f"cd {shlex.quote(str(tmp_path))} && exec {sys.executable} -m http.server --bind {address} 8080",
            stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"),
        )  # fmt: skip
    (tmp_path / "dns.py").write_text(DNS_RESPONDER)
    servers.popen(f"exec {sys.executable} {tmp_path / 'dns.py'} 10.99.0.2 5353")

    # keepalived's service: made by ipvsadm, never named by the topology.
    director.run("ipvsadm -A -t 10.0.0.9:80 -s rr && ipvsadm -a -t 10.0.0.9:80 -r 10.99.0.2:8080 -m -w 7")
    foreign_before = director.run("ipvsadm -Ln -t 10.0.0.9:80").stdout

    topology = tmp_path / "topology"
    web_line = (
        'Web:t:10.0.0.1:80 ["web1:10.99.0.2:8080 -w 50", "web2:10.99.0.3:8080 -w 20"{more}] '
        "(-m -s wrr --check http --path / --interval 1 --timeout 2 --rise 2 --fall 2)\n"
    )
    dns_line = 'Dns:u:10.0.0.2:53 ["ns1:10.99.0.2:5353"] (-m --check dns --query www.example --answer 192.0.2.7 --interval 1)\n'
    topology.write_text(web_line.format(more="") + dns_line)
    state_path = tmp_path / "run" / "ipvsmand.json"
    log_path = tmp_path / "ipvsmand.log"
    daemon = director.popen(
        f"cd {shlex.quote(str(ROOT))} && exec {sys.executable} -m ipvsman.daemon.main --topology {topology} "
        f"--state-file {state_path} --history-dir {tmp_path / 'history'} --heartbeat 1 --reconcile 2 "
        f"2>{log_path}"
    )

    def log_tail() -> str:
        return log_path.read_text()[-3000:] if log_path.exists() else "(no log)"

    try:
        wait_until(lambda: weights(director, "10.0.0.1:80") == {"10.99.0.2:8080": 50, "10.99.0.3:8080": 20},
                 f"ipvsmand to create 10.0.0.1:80; log:\n{log_tail()}", timeout=START)  # fmt: skip
        assert "wrr" in director.run("ipvsadm -Ln -t 10.0.0.1:80").stdout
        assert weights(director, "10.0.0.2:53", "-u") == {"10.99.0.2:5353": 1}
        wait_until(lambda: _state_of(state_path, "10.99.0.2", 5353) == "up", "the DNS check to pass", timeout=120)

        # web1 stops: its weight goes to 0 within fall x interval (plus the guest's slowness).
        os.killpg(web["10.99.0.2"].pid, signal.SIGKILL)
        stopped = time.monotonic()
        wait_until(lambda: weights(director, "10.0.0.1:80").get("10.99.0.2:8080") == 0,
                 f"web1 quiesced; log:\n{log_tail()}", timeout=120)  # fmt: skip
        print(f"web1 stopped -> weight 0 after {time.monotonic() - stopped:.1f} s (fall 2 x interval 1 s, guest time)")
        assert weights(director, "10.0.0.1:80")["10.99.0.3:8080"] == 20
        server = read_state(str(state_path)).find("tcp 10.0.0.1:80", "10.99.0.2", 8080)
        assert server.state == "down" and server.applied_weight == 0 and server.reason, server

        # web1 is back: the configured weight after `rise` good checks.
        servers.popen(
            f"cd {shlex.quote(str(tmp_path))} && exec {sys.executable} -m http.server --bind 10.99.0.2 8080",
            stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"),
        )  # fmt: skip
        wait_until(lambda: weights(director, "10.0.0.1:80").get("10.99.0.2:8080") == 50,
                 f"web1 restored; log:\n{log_tail()}", timeout=180)  # fmt: skip

        # SIGHUP with a third real server added; then a broken line, which changes nothing.
        topology.write_text(web_line.format(more=', "web3:10.99.0.4:8080 -w 30"') + dns_line)
        os.kill(_daemon_pid(state_path), signal.SIGHUP)
        wait_until(lambda: weights(director, "10.0.0.1:80").get("10.99.0.4:8080") == 30,
                 f"web3 added on SIGHUP; log:\n{log_tail()}", timeout=120)  # fmt: skip
        topology.write_text(web_line.format(more="") + "Broken:t:10.0.0.3 [nonsense\n")
        os.kill(_daemon_pid(state_path), signal.SIGHUP)
        wait_until(lambda: read_state(str(state_path)).errors, "the broken line reported", timeout=120)
        errors = read_state(str(state_path)).errors
        assert len(errors) == 1 and errors[0].startswith(f"{topology}:2: "), errors
        assert weights(director, "10.0.0.1:80").get("10.99.0.4:8080") == 30  # the running configuration stays

        assert director.run("ipvsadm -Ln -t 10.0.0.9:80").stdout == foreign_before

        # SIGTERM: it stops and IPVS stays as it was.
        before = director.run("ipvsadm -Ln").stdout
        daemon_pid = _daemon_pid(state_path)
        os.kill(daemon_pid, signal.SIGTERM)
        wait_until(lambda: daemon.poll() is not None, "ipvsmand to stop on SIGTERM", timeout=120)
        assert daemon.returncode == 0, log_tail()
        assert director.run("ipvsadm -Ln").stdout == before
        assert "stopping; IPVS is left as it is" in log_path.read_text()
    finally:
        print(log_tail())


def _state_of(path: Path, address: str, port: int) -> str | None:
    try:
        state = read_state(str(path))
    except ValueError:
        return None
    server = next((s for s in state.real_servers if (s.address, s.port) == (address, port)), None)
    return server.state if server else None


def _daemon_pid(path: Path) -> int:
    return read_state(str(path)).pid
