"""Benchmark 1, poll: one full poll of a large director by ipvsman against one `ipvsadm -Ln --stats --exact`.

A full poll is KernelBackend.poll(): info, timeouts, services, one real-server dump per
service with 64-bit stats and rates, daemons, the connection table (empty here) and the sync
version. It is timed inside Poller.poll_once(), which the dashboard runs every refresh and
which adds the rate history and connection counts (reported apart), with the fast decoder and
with pyroute2's own decoding (NlaDecoder), interleaved with ipvsadm runs in the same
namespace, at growing numbers of services.
"""

from __future__ import annotations

import collections
import functools
import socket
import statistics
import struct
import time

from ipvsman import collector
from ipvsman.bench import Figure, Growth, Report, at_most
from ipvsman.bench.director import Director
from ipvsman.kernel import netlink
from ipvsman.kernel.backend import KernelBackend
from ipvsman.kernel.fastdecode import NLMSG_HEADER, BatchMarshal, FastDecoder, RawMessage, dest_dump_request
from ipvsman.poller import Poller

IPVSADM_ARGS = ("-Ln", "--stats", "--exact")
TARGET_RATIO = 2.0
PYROUTE2_BUDGET = 300.0  # seconds of pyroute2-decoded polls per size; in the guest one takes minutes


class OpenPoller:
    """A KernelBackend opened in the director's namespace thread, and a Poller to poll it with."""

    def __init__(self, director: Director, decoder):
        self.director = director
        self.backend = KernelBackend(decoder=decoder)  # the worker thread is already in the namespace
        director.worker.call(self.backend.open)
        self.poller = Poller(self.backend, on_snapshot=lambda snapshot: None)
        self.backend_seconds = 0.0
        self.backend_cpu = 0.0  # CPU seconds (user + system) of the polling thread in the last poll
        backend_poll = self.backend.poll

        def timed_poll(*args, **kwargs):
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return backend_poll(*args, **kwargs)
            finally:
                self.backend_seconds = time.perf_counter() - started
                self.backend_cpu = time.thread_time() - cpu

        self.backend.poll = timed_poll

    def poll(self) -> tuple[float, float, object]:
        """Seconds of the backend's poll, seconds of the whole poller round, and the snapshot."""

        def once():
            started = time.perf_counter()
            snapshot = self.poller.poll_once()
            return time.perf_counter() - started, snapshot

        seconds, snapshot = self.director.worker.call(once)
        if snapshot.error:
            raise RuntimeError(f"poll failed: {snapshot.error}")
        return self.backend_seconds, seconds, snapshot

    def close(self) -> None:
        self.director.worker.call(self.backend.close)


# -- where the time goes: pyroute2's transport alone, and the same dumps without pyroute2 ----------

NETLINK_GENERIC = 16


def pyroute2_transport_only(open_poller: OpenPoller, keys) -> float:
    """Seconds for the service dump and every real-server dump through pyroute2's request machinery
    (NetlinkRequest, its asyncio queue), without decoding anything: what reads cost before they
    waited for their replies on pyroute2's socket themselves (netlink.IpvsSocket)."""
    sock = open_poller.backend._socket

    async def dumps(asock):
        await asock.request(netlink.CMD_GET_SERVICE, flags=netlink.DUMP)
        for key in keys:
            await asock.request(netlink.CMD_GET_DEST, flags=netlink.DUMP, message=dest_dump_request(key))

    started = time.perf_counter()
    sock._run(dumps, sock.asyncore)
    return time.perf_counter() - started


def plain_socket_dumps(family: int, keys) -> tuple[float, int]:
    """Seconds for the same dumps through a plain blocking netlink socket, decoded as the poll
    decodes them (FastDecoder, real servers a datagram at a time).

    Not what ipvsman does (the issue keeps pyroute2 as the transport: its socket and marshal):
    what pyroute2's socket costs is the difference. Returns the seconds and the real servers decoded.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((0, 0))
    skipped: collections.Counter = collections.Counter()
    marshal = BatchMarshal()  # for what a layout does not read: DONE, errors, a new shape
    marshal.msg_map[family] = RawMessage
    decoded = 0

    def dump(payload: bytes, sequence: int, replies_of) -> list:
        sock.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(payload), family, netlink.DUMP, sequence, 0) + payload)
        found = []
        while True:
            more, complete = replies_of(sock.recv(1 << 16), sequence)
            found += more
            if complete:
                return found

    started = time.perf_counter()
    try:
        with collector.paused():
            service_request = struct.pack("=BBH", netlink.CMD_GET_SERVICE, netlink.GENL_VERSION, 0)
            for msg in dump(service_request, 1, marshal.replies):
                FastDecoder.service(msg, skipped)
            for sequence, key in enumerate(keys, 2):
                reader = functools.partial(FastDecoder.dest_replies, marshal, key.af, skipped)
                dests = [dest for dest in dump(dest_dump_request(key).payload, sequence, reader) if dest is not None]
                dests.sort(key=netlink.dest_order)
                decoded += len(dests)
    finally:
        sock.close()
    return time.perf_counter() - started, decoded


def check_snapshot(snapshot, services: int, dests: int) -> None:
    found = len(snapshot.services)
    found_dests = sum(len(service.dests) for service in snapshot.services)
    if (found, found_dests) != (services, services * dests):
        raise RuntimeError(f"the poll saw {found} services and {found_dests} real servers, "
                           f"expected {services} and {services * dests}")  # fmt: skip


def measure(director: Director, runs: int, pyroute2_runs: int) -> dict:
    """Median seconds of the fast poll, pyroute2-decoded poll and ipvsadm at the director's current size."""
    fast = OpenPoller(director, FastDecoder)
    slow = OpenPoller(director, netlink.NlaDecoder)
    try:
        fast_snapshot = fast.poll()[2]  # warm-up: first use of code paths and caches
        check_snapshot(fast_snapshot, director.services, director.dests)
        director.ipvsadm(*IPVSADM_ARGS)
        fast_times, round_times, ipvsadm_times, fast_cpu, ipvsadm_cpu = [], [], [], [], []
        for _ in range(runs):  # interleaved, so that a slow patch of the machine hits both alike
            seconds, round_seconds, _ = fast.poll()
            fast_times.append(seconds)
            fast_cpu.append(fast.backend_cpu)
            round_times.append(round_seconds)
            seconds, cpu = director.ipvsadm_with_cpu(*IPVSADM_ARGS)
            ipvsadm_times.append(seconds)
            ipvsadm_cpu.append(cpu)
        # The same runs back to back: under emulation a program pays for translating its code
        # again after another ran (QEMU's TCG), so interleaving may flatter either side.
        fast_in_a_row = []
        for _ in range(runs):
            seconds, _, _ = fast.poll()
            fast_in_a_row.append((seconds, fast.backend_cpu))
        ipvsadm_in_a_row = [director.ipvsadm_with_cpu(*IPVSADM_ARGS) for _ in range(runs)]
        slow_times = []
        slow_snapshot = None
        for _ in range(pyroute2_runs):
            seconds, _, slow_snapshot = slow.poll()
            slow_times.append(seconds)
            if sum(slow_times) > PYROUTE2_BUDGET:
                break
        agree = None
        if slow_snapshot is not None:  # no traffic: counters and rates stay put between the polls
            agree = slow_snapshot.services == fast.poll()[2].services
        keys = [service.key for service in fast_snapshot.services]
        transport = statistics.median(director.worker.call(pyroute2_transport_only, fast, keys) for _ in range(runs))
        family = fast.backend._socket.prid
        plain = [director.worker.call(plain_socket_dumps, family, keys) for _ in range(runs)]
        if {decoded for _, decoded in plain} != {director.services * director.dests}:
            raise RuntimeError(f"the plain socket decoded {plain[0][1]} real servers")
    finally:
        fast.close()
        slow.close()
    return {
        "fast": statistics.median(fast_times),
        "round": statistics.median(round_times),
        "pyroute2": statistics.median(slow_times) if slow_times else None,
        "ipvsadm": statistics.median(ipvsadm_times),
        "fast_cpu": statistics.median(fast_cpu),
        "ipvsadm_cpu": statistics.median(ipvsadm_cpu),
        "fast_in_a_row": statistics.median(seconds for seconds, _ in fast_in_a_row),
        "fast_cpu_in_a_row": statistics.median(cpu for _, cpu in fast_in_a_row),
        "ipvsadm_in_a_row": statistics.median(seconds for seconds, _ in ipvsadm_in_a_row),
        "ipvsadm_cpu_in_a_row": statistics.median(cpu for _, cpu in ipvsadm_in_a_row),
        "runs": runs,
        "pyroute2_runs": len(slow_times),
        "agree": agree,
        "transport": transport,
        "plain": statistics.median(seconds for seconds, _ in plain),
    }


def run(director: Director, sizes: list[int], runs: int, pyroute2_runs: int, log=print,
        pyroute2_max_services: int | None = None) -> Report:  # fmt: skip
    report = Report()
    growth = Growth("poll", f"one full poll against ipvsadm {' '.join(IPVSADM_ARGS)}, "
                    f"{director.dests} real servers per service", "services", "s",
                    ["ipvsman", "pyroute2 decoding", "ipvsadm"])  # fmt: skip
    result = slow_result = None
    for size in sizes:
        seconds = director.grow(size)
        listed = director.count_listed()
        log(f"poll: {size} services made in {seconds:.1f} s (ipvsadm lists {listed[0]} services, {listed[1]} real servers)")
        with_pyroute2 = pyroute2_max_services is None or size <= pyroute2_max_services
        result = measure(director, runs, pyroute2_runs if with_pyroute2 else 0)
        log(f"poll: {size} services: fast {result['fast']:.3f} s, pyroute2 {result['pyroute2']} s, "
            f"ipvsadm {result['ipvsadm']:.3f} s")  # fmt: skip
        if with_pyroute2:
            slow_result = (size, result)
        growth.add(size, **{"ipvsman": result["fast"], "pyroute2 decoding": result["pyroute2"],
                            "ipvsadm": result["ipvsadm"]})  # fmt: skip
    largest = sizes[-1]
    scale = f"{largest:,} services x {director.dests} real servers"
    ratio = result["fast"] / result["ipvsadm"]
    report.figures.append(
        Figure("poll", f"full poll, {scale}, fast decoder", result["fast"], "s", result["ipvsadm"],
               "ipvsadm " + " ".join(IPVSADM_ARGS), f"<= {TARGET_RATIO:g}x ipvsadm", at_most(ratio, TARGET_RATIO),
               note=f"median of {result['runs']}")  # fmt: skip
    )
    report.figures.append(
        Figure("poll", "CPU of that poll: ipvsman's polling thread against the ipvsadm process (user + system)",
               result["fast_cpu"], "CPU s", result["ipvsadm_cpu"], "ipvsadm " + " ".join(IPVSADM_ARGS),
               note=f"median of {result['runs']}")  # fmt: skip
    )
    report.figures.append(
        Figure("poll", f"the same poll {result['runs']} times in a row, then ipvsadm {result['runs']} times in a row",
               result["fast_in_a_row"], "s", result["ipvsadm_in_a_row"], "ipvsadm " + " ".join(IPVSADM_ARGS),
               note="median")  # fmt: skip
    )
    report.figures.append(
        Figure("poll", "CPU of those, in a row", result["fast_cpu_in_a_row"], "CPU s", result["ipvsadm_cpu_in_a_row"],
               "ipvsadm " + " ".join(IPVSADM_ARGS), note="median")  # fmt: skip
    )
    report.figures.append(
        Figure("poll", "the same dumps through pyroute2's request machinery, no decoding (not used for reads)",
               result["transport"],
               "s", result["ipvsadm"], "ipvsadm " + " ".join(IPVSADM_ARGS), note=f"median of {result['runs']}")  # fmt: skip
    )
    report.figures.append(
        Figure("poll", "the same dumps on a socket of Python's own + fast decoder, no pyroute2 (for comparison)",
               result["plain"], "s", result["ipvsadm"], "ipvsadm " + " ".join(IPVSADM_ARGS),
               note=f"median of {result['runs']}")  # fmt: skip
    )
    report.figures.append(
        Figure("poll", f"poller round, {scale}: the poll + rate history + connection counts", result["round"], "s",
               result["ipvsadm"], "ipvsadm " + " ".join(IPVSADM_ARGS), note=f"median of {result['runs']}")  # fmt: skip
    )
    if slow_result is not None:
        size, slow = slow_result
        slow_scale = f"{size:,} services x {director.dests} real servers"
        report.figures.append(
            Figure("poll", f"full poll, {slow_scale}, pyroute2's decoding (NlaDecoder)", slow["pyroute2"], "s",
                   slow["ipvsadm"], "ipvsadm " + " ".join(IPVSADM_ARGS),
                   note=f"median of {slow['pyroute2_runs']}")  # fmt: skip
        )
        report.notes.append(
            f"poll: at {slow_scale} the fast decoder makes a full poll {slow['pyroute2'] / slow['fast']:.1f}x "
            f"faster than pyroute2's decoding; both decoders gave equal services and real servers: "
            f"{'yes' if slow['agree'] else 'NO'}"
        )
    report.growth.append(growth)
    return report
