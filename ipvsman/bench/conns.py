"""Benchmark 2, connections: read, parse and aggregate /proc/net/ip_vs_conn against `ipvsadm -Lnc`, and memory.

The table is filled the way a backup director's is: the director namespace runs
`ipvsadm --start-daemon backup` and a second namespace sends it sync messages over a veth pair
with ipvsman's own sync sender (ipvsman.sync.sender, messages from ipvsman.sync.protocol). The
messages are encoded ahead (on the host, before the guest boots: encoding 200,000 entries in
the emulated guest would take minutes) and sent in growing prefixes, so one table is measured at
1,000, 10,000, ... entries. The connections belong to the director's services and real servers,
so aggregation counts every one of them.

Memory is measured in a fresh process (ipvsman.bench.memory) that polls the namespace, keeps the
snapshot and builds every view of the dashboard around it, as the running dashboard would.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from pathlib import Path

from ipvsman import conntable, guest
from ipvsman.bench import Figure, Growth, Report, at_most, median_of
from ipvsman.bench.director import DEST_PORT, VIP_PORT, Director, Netns, rip, terminal_env, veth_pair, vip
from ipvsman.kernel import procfs
from ipvsman.model import Connection
from ipvsman.poller import aggregate_connections
from ipvsman.sync import protocol, sender

SYNC_ID = 10
EXPIRES = 7200  # seconds: the synced entries outlive the whole benchmark
SEND_RATE = 10_000.0  # connections a second: about what the emulated guest's backup keeps up with
SYNC_BUFFER = 32 << 20  # bytes of receive buffer for the backup (net.ipv4.vs.sync_sock_size), in the guest
MEMORY_TARGET_MB = 150.0
STATES = ("ESTABLISHED",) * 8 + ("FIN_WAIT", "TIME_WAIT")
FRAME = struct.Struct("!HH")  # length and connection count of each saved message


def client_address(number: int) -> str:
    """The client of synthetic connection `number`: every connection has its own."""
    return f"100.{64 + (number >> 16)}.{(number >> 8) & 255}.{number & 255}"


def synthetic_connections(count: int, services: int, dests: int) -> list[Connection]:
    """`count` TCP connections spread over the director's services and real servers."""
    table = []
    for number in range(count):
        service = number % services
        dest = service * dests + (number // services) % dests
        table.append(Connection("TCP", client_address(number), 1024 + number * 7919 % 60000, vip(service), VIP_PORT,
                                rip(dest), DEST_PORT, STATES[number % len(STATES)], EXPIRES))  # fmt: skip
    return table


def encode_messages(count: int, services: int, dests: int) -> list[protocol.EncodedMessage]:
    entries = [protocol.from_connection(conn, "masq") for conn in synthetic_connections(count, services, dests)]
    packed = protocol.pack(entries, SYNC_ID)
    if packed.skipped:
        raise RuntimeError(f"sync encoding skipped entries: {packed.skipped}")
    return list(packed.messages)


def save_messages(path: Path, messages: list[protocol.EncodedMessage]) -> None:
    with open(path, "wb") as out:
        for message in messages:
            out.write(FRAME.pack(len(message.data), message.count) + message.data)


def load_messages(path: Path) -> list[protocol.EncodedMessage]:
    data = path.read_bytes()
    messages, offset = [], 0
    while offset < len(data):
        length, count = FRAME.unpack_from(data, offset)
        offset += FRAME.size
        messages.append(protocol.EncodedMessage(data[offset : offset + length], count))
        offset += length
    return messages


def _clients() -> set[str]:
    table, _, _ = procfs.read_connections(procfs.net_dir())
    return {conn.client for conn in table}


def _table_size() -> int:
    """Connections bound to real servers (ActiveConn + InActConn of /proc/net/ip_vs): every synced one.

    Counting the lines of ip_vs_conn itself would cost as much as the benchmark: the kernel
    walks its connection hash from the start for every 4 KB read() of that file.
    """
    return procfs.counted_connections(procfs.read_text(f"{procfs.net_dir()}/ip_vs"))


def read_only() -> int:
    """Only the kernel's part of a poll's table reading: the text of the file the backend reads."""
    directory = procfs.net_dir()
    try:
        return len(procfs.read_text(f"{directory}/{procfs.CONN_SYNC_FILE}"))
    except FileNotFoundError:
        return len(procfs.read_text(f"{directory}/{procfs.CONN_FILE}"))


class SyncedTable:
    """The director as a backup, and a master namespace that sends it the saved messages."""

    def __init__(self, director: Director, messages: list[protocol.EncodedMessage]):
        self.director = director
        self.messages = messages
        self.sent = 0  # messages sent so far
        self.master = Netns("master")
        veth_pair(self.master, director.netns)
        if guest.in_guest():
            # A backup that falls behind drops what its socket cannot hold. Only in the guest
            # (a machine of our own) is the global limit raised to let it hold a burst.
            with open("/proc/sys/net/core/rmem_max", "w") as limit:
                limit.write(str(SYNC_BUFFER))
            director.netns.run(f"sysctl -qw net.ipv4.vs.sync_sock_size={SYNC_BUFFER // 2}")
        director.worker.call(
            director_run, ["ipvsadm", "--start-daemon", "backup", "--mcast-interface", "vb", "--syncid", str(SYNC_ID)]
        )
        self.socket = sender.SyncSocket("va", protocol.DEFAULT_GROUP, protocol.DEFAULT_PORT, netns=self.master.name)
        time.sleep(1.0)  # the backup's receiving thread joins the group

    def fill(self, entries: int, log=print) -> int:
        """Send messages until `entries` connections have been sent; returns the table size reached."""
        first = self.sent
        total = sum(message.count for message in self.messages[:first])
        while self.sent < len(self.messages) and total < entries:
            total += self.messages[self.sent].count
            self.sent += 1
        batch = self.messages[first : self.sent]
        size = 0
        for _ in range(5):
            sender.send_messages(self.socket, batch, rate=SEND_RATE)
            size = self._settled_size(total)
            if size >= total:
                break
            # A backup that fell behind dropped messages: send again those with missing entries.
            batch = self._missing_messages()
            log(f"conns: {size} of {total} entries arrived; sending {len(batch)} messages again")
        return size

    def _settled_size(self, expected: int) -> int:
        size, unchanged = -1, 0
        while unchanged < 2:
            time.sleep(2.0)
            now = self.director.worker.call(_table_size)
            if now >= expected:
                return now
            unchanged = unchanged + 1 if now == size else 0
            size = now
        return size

    def _missing_messages(self) -> list[protocol.EncodedMessage]:
        present = self.director.worker.call(_clients)
        missing, number = [], 0
        for message in self.messages[: self.sent]:
            if any(client_address(n) not in present for n in range(number, number + message.count)):
                missing.append(message)
            number += message.count
        return missing

    def close(self) -> None:
        self.socket.close()
        self.director.worker.call(director_run, ["ipvsadm", "--stop-daemon", "backup"], check=False)
        self.master.close()


def director_run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def read_and_aggregate(services) -> tuple[int, int]:
    """What a whole read of the table costs the dashboard: read, parse, count per service and server."""
    table, _, malformed = procfs.read_connections(procfs.net_dir())
    service_states, _ = aggregate_connections(services, table)
    return len(table), sum(counts.total for counts in service_states.values())


def affordable_prefix(expected: int, percent: float = conntable.DEFAULT_BUDGET, reads: int = 6) -> dict:
    """The prefix the budget settles on for a table of `expected` entries: the dashboard's own
    TableBudget, fed with the cost of each real read of this namespace's table, one after another."""
    budget = conntable.TableBudget(percent)
    directory = procfs.net_dir()
    limit, cost, complete, read = None, 0.0, False, 0
    for _ in range(reads):
        limit = budget.limit(expected)
        cpu = time.thread_time()
        table, complete, _ = procfs.read_connections(directory, False, limit)
        conntable.routing_counts(table)
        cost = time.thread_time() - cpu
        read = len(table)
        budget.record(read, cost, started=0.0)
        if complete:
            break
    return {"entries": read, "complete": complete, "cpu": cost, "every": budget.wait_for(cost)}


def prefix_figure(benchmark: str, director: Director, entries: int, log=print) -> Figure:
    """What the default budget reads of this director's table of `entries`, and at what cost."""
    prefix = director.worker.call(affordable_prefix, entries)
    log(f"{benchmark}: at {entries:,} entries the {conntable.DEFAULT_BUDGET:g}% budget reads {prefix}")
    extent = "the whole table" if prefix["complete"] else f"a prefix of {prefix['entries']:,} entries"
    return Figure(benchmark, f"table of {entries:,}: what the {conntable.DEFAULT_BUDGET:g}% budget reads: {extent}, "
                  f"every {prefix['every']:.0f} s", prefix["cpu"], "CPU s",
                  note="a read's cost (read + parse + count), settled over 6 reads")  # fmt: skip


def measure_memory(director: Director) -> dict:
    def probe():
        proc = subprocess.run([sys.executable, "-m", "ipvsman.bench.memory"], capture_output=True, text=True,
                              env=terminal_env(), timeout=1800)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"memory probe failed: {proc.stderr.strip()[-1500:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return director.worker.call(probe)


def run(director: Director, messages: list[protocol.EncodedMessage], sizes: list[int], runs: dict, memory_sizes,
        log=print) -> Report:  # fmt: skip
    report = Report()
    growth = Growth("conns", "read, parse and aggregate /proc/net/ip_vs_conn against ipvsadm -Lnc; 'kernel read' is "
                    "reading the file alone", "connections", "s", ["ipvsman", "ipvsadm", "kernel read"])  # fmt: skip
    memory_growth = Growth("conns", "memory of the dashboard process for the table (peak RSS over that before "
                           "the first poll)", "connections", "MB", ["ipvsman"])  # fmt: skip
    table = SyncedTable(director, messages)
    services = director.worker.call(_services)
    headline = None
    try:
        for size in sizes:
            reached = table.fill(size, log)
            repeat = runs.get(size, 3)
            ours, _ = median_of(lambda: director.worker.call(read_and_aggregate, services), repeat)
            parsed, counted = director.worker.call(read_and_aggregate, services)
            theirs, _ = median_of(lambda: director.ipvsadm("-Lnc"), repeat)
            kernel, _ = median_of(lambda: director.worker.call(read_only), repeat)
            log(f"conns: {reached} entries (parsed {parsed}, counted {counted}): ipvsman {ours:.3f} s, "
                f"ipvsadm {theirs:.3f} s, reading alone {kernel:.3f} s")  # fmt: skip
            growth.add(parsed, **{"ipvsman": ours, "ipvsadm": theirs, "kernel read": kernel})
            memory = None
            if size in memory_sizes:
                memory = measure_memory(director)
                log(f"conns: memory at {parsed} entries: {memory}")
                memory_growth.add(memory["connections"], ipvsman=memory["peak_mb"] - memory["before_mb"])
            headline = (parsed, counted, ours, theirs, repeat, memory, kernel)
            report.figures.append(prefix_figure("conns", director, parsed, log))
    finally:
        table.close()
    parsed, counted, ours, theirs, repeat, memory, kernel = headline
    report.figures.append(
        Figure("conns", f"read + parse + aggregate {parsed:,} entries", ours, "s", theirs, "ipvsadm -Lnc",
               "<= ipvsadm", at_most(ours, theirs), note=f"median of {repeat}")  # fmt: skip
    )
    report.figures.append(
        Figure("conns", f"of which the kernel's: reading the file, {parsed:,} entries", kernel, "s", theirs,
               "ipvsadm -Lnc", note=f"median of {repeat}")  # fmt: skip
    )
    if memory is not None:
        report.figures.append(
            Figure("conns", f"peak RSS of a dashboard holding {memory['connections']:,} connections, all views "
                   f"built", memory["peak_mb"], "MB", target=f"< {MEMORY_TARGET_MB:g} MB",
                   met=memory["peak_mb"] < MEMORY_TARGET_MB, note=f"{memory['before_mb']:.0f} MB before the first poll")
        )  # fmt: skip
    if counted != parsed:
        report.notes.append(f"conns: {parsed - counted} of {parsed} entries matched no service")
    report.growth.append(growth)
    if memory_growth.rows:
        report.growth.append(memory_growth)
    return report


def _services():
    from ipvsman.kernel.backend import KernelBackend
    from ipvsman.kernel.fastdecode import FastDecoder

    backend = KernelBackend(decoder=FastDecoder)
    backend.open()
    try:
        return backend.poll(connections=False).services
    finally:
        backend.close()
