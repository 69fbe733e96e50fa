"""Faults under a running poller: the watched namespace deleted, services churned, the sync link lost."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable

import ipvsadm_ref as ref
import pytest

from ipvsman import model
from ipvsman.kernel import netlink
from ipvsman.kernel import netns as kernel_netns
from ipvsman.kernel.backend import SKIP_LISTED_TWICE, KernelBackend
from ipvsman.kernel.fastdecode import FastDecoder
from ipvsman.model import DestKey, ServiceKey, Snapshot
from ipvsman.poller import CommandResult, Poller, SetWeight
from ipvsman.sync.resync import JobOutcome, SyncJob, SyncSettings, build_plan
from ipvsman.sync.sender import SendProgress, read_conn_table

pytestmark = pytest.mark.kernel

WAIT = 120.0  # seconds; the guest runs about 30x slower than the host


class Watch:
    """A Poller on a KernelBackend in its own thread, as the dashboard runs it; snapshots queue up here."""

    def __init__(self, netns_name: str, interval: float = 0.2, on_poll: Callable[[Snapshot], object] | None = None,
                 decoder=FastDecoder):
        self.snapshots: queue.Queue = queue.Queue()
        self.results: queue.Queue[CommandResult] = queue.Queue()
        self._on_poll = on_poll or (lambda snapshot: None)
        self.backend = KernelBackend(netns=netns_name, decoder=decoder)
        self.poller = Poller(self.backend, self._got, self.results.put, interval=interval)
        self.poller.start()

    def _got(self, snapshot: Snapshot) -> None:
        # Runs in the polling thread right after the poll, so on_poll sees that poll's side data.
        self.snapshots.put((snapshot, self._on_poll(snapshot)))

    def next(self, condition, what: str, timeout: float = WAIT):
        """The first queued (snapshot, extra) that satisfies `condition`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                item = self.snapshots.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}") from None
            if condition(item[0]):
                return item

    def polled_after(self, moment: float, what: str, timeout: float = WAIT) -> Snapshot:
        """The first snapshot of a poll that started after `moment` (time.time())."""
        return self.next(lambda s: s.taken_at - s.poll_seconds > moment, what, timeout)[0]

    def assert_still_polling(self) -> Snapshot:
        """The dashboard's polling goes on, without an error."""
        snapshot = self.polled_after(time.time(), "one more poll")
        assert self.poller.is_alive() and self.poller.open_error is None
        assert snapshot.error is None, snapshot.error
        return snapshot

    def thread_netns(self) -> int:
        """The inode of the polling thread's network namespace."""
        return os.stat(f"/proc/self/task/{self.poller.native_id}/ns/net").st_ino

    def stop(self) -> None:
        self.poller.stop(timeout=WAIT)
        assert not self.poller.is_alive(), "the poller did not stop"


@pytest.fixture
def took():
    """Seconds since the test started, for the figures it prints (CI's guest time is budgeted)."""
    started = time.monotonic()
    return lambda: f"{time.monotonic() - started:.0f} s in the guest"


@pytest.fixture
def watch():
    started: list[Watch] = []

    def start(*args, **kwargs) -> Watch:
        started.append(Watch(*args, **kwargs))
        return started[-1]

    yield start
    for watcher in started:
        watcher.stop()


def keys(snapshot: Snapshot) -> list[ServiceKey]:
    return [service.key for service in snapshot.state.services]


def tcp(address: str, port: int) -> ServiceKey:
    return ServiceKey("inet", "tcp", address, port)


# -- 1. the watched namespace is deleted and comes back ---------------------------------------------


def test_deleted_namespace_is_one_line_and_polls_resume_when_it_is_back(netns, watch, took):
    netns.run("ipvsadm -A -t 10.0.0.1:80 -s rr && ipvsadm -a -t 10.0.0.1:80 -r 10.0.1.1:80 -m")
    watcher = watch(netns.name)
    first, _ = watcher.next(lambda s: s.error is None and s.state.services, "the first poll")
    assert keys(first) == [tcp("10.0.0.1", 80)]

    subprocess.run(["ip", "netns", "del", netns.name], check=True)
    deleted = time.time()
    gone = watcher.polled_after(deleted, "a poll after the namespace was deleted")
    assert gone.error == f"network namespace {netns.name} is gone; waiting for it to come back"
    assert keys(gone) == keys(first)  # the last good state stays on screen
    # The thread went home: staying would keep the deleted namespace (and its IPVS) alive.
    assert watcher.thread_netns() == os.stat("/proc/self/ns/net").st_ino
    again = watcher.polled_after(time.time(), "another poll while the namespace is gone")
    assert again.error == gone.error and watcher.poller.is_alive()

    # The same name, a new namespace (netns.run goes by name; the fixture deletes this one).
    subprocess.run(["ip", "netns", "add", netns.name], check=True)
    # With lo down the namespace has no local routing table yet, and IPVS refuses real servers (EINVAL).
    netns.run("ip link set lo up")
    netns.run("ipvsadm -A -t 10.0.0.2:443 -s wlc && ipvsadm -a -t 10.0.0.2:443 -r 10.0.2.1:443 -m -w 3")
    returned = watcher.polled_after(time.time(), "a poll of the new namespace")
    assert returned.error is None, returned.error
    assert keys(returned) == [tcp("10.0.0.2", 443)]
    assert watcher.thread_netns() == kernel_netns.lookup(netns.name)[1]

    # Changes follow too: they reach the new namespace, not the deleted one.
    dest = DestKey(tcp("10.0.0.2", 443), "10.0.2.1", 443)
    watcher.poller.submit(SetWeight(dest, 3, 7))
    result = watcher.results.get(timeout=WAIT)
    assert result.ok, result.message
    listed = ref.parse_list(netns.run("ipvsadm -Ln").stdout)
    assert listed[dest.service].dests[("10.0.2.1", 443)].weight == 7
    watcher.assert_still_polling()
    print(f"\nnamespace deleted: {gone.error!r}; the new namespace's service shown ({took()})")


# -- 2. keepalived-style churn: every service replaced, over and over -------------------------------


class CountingDecoder(FastDecoder):
    """FastDecoder that counts the services it decodes, so a test can check what a poll dropped."""

    decoded = 0

    @classmethod
    def service(cls, msg, skipped):
        service = FastDecoder.service(msg, skipped)
        if service is not None:
            cls.decoded += 1
        return service


def restore_file(first_port: int, scheduler: str, weight: int) -> str:
    lines = []
    for port in range(first_port, first_port + 1000):
        lines.append(f"-A -t 10.10.0.1:{port} -s {scheduler}")
        lines.append(f"-a -t 10.10.0.1:{port} -r 10.10.1.1:{port} -m -w {weight}")
    return "\n".join(lines) + "\n"


CHURN = """
n=0
while [ ! -e {stop} ]; do
  if [ $((n % 2)) -eq 0 ]; then set={a}; else set={b}; fi
  ipvsadm -C && ipvsadm -R < $set || exit 1
  n=$((n + 1)); echo $n > {count}
done
"""


def test_churn_of_1000_services_leaves_no_phantom_and_counts_every_skip(netns, watch, tmp_path, took):
    # Two sets that overlap on half their ports, with other schedulers and weights: a service or
    # real server kept from the wrong set shows in the final comparison.
    sets = {"a": (1, "rr", 1), "b": (501, "wlc", 2)}
    for name, (first, scheduler, weight) in sets.items():
        (tmp_path / name).write_text(restore_file(first, scheduler, weight))
    expected = {}
    for first, scheduler, weight in sets.values():
        for port in range(first, first + 1000):
            expected.setdefault(tcp("10.10.0.1", port), set()).add((scheduler, weight))
    netns.run(f"ipvsadm -R < {tmp_path / 'a'}")

    per_poll = []

    def count_decoded(snapshot):
        decoded, CountingDecoder.decoded = CountingDecoder.decoded, 0
        return decoded

    watcher = watch(netns.name, interval=0.0, on_poll=count_decoded, decoder=CountingDecoder)
    watcher.next(lambda s: s.error is None and len(s.state.services) == 1000, "the first poll")
    stop, count = tmp_path / "stop", tmp_path / "count"
    churn = netns.popen(CHURN.format(stop=stop, a=tmp_path / "a", b=tmp_path / "b", count=count),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    setup = took()

    def rounds_done() -> int:
        return int(count.read_text() or 0) if count.exists() else 0

    while time.monotonic() < started + 15 or len(per_poll) < 4 or rounds_done() < 3:
        assert time.monotonic() < started + 90, f"{len(per_poll)} polls, {rounds_done()} rounds in 90 s ({took()})"
        per_poll.append(watcher.next(lambda s: True, "a poll during the churn"))
        assert churn.poll() is None, f"the churn script stopped: {churn.stderr.read()}"
    stop.touch()
    assert churn.wait(WAIT) == 0, churn.stderr.read()
    seconds = time.monotonic() - started
    rounds = rounds_done()

    vanished = twice = torn = empty = 0
    for snapshot, decoded in per_poll:
        assert snapshot.error is None, snapshot.error
        listed = keys(snapshot)
        assert len(listed) == len(set(listed)), "a service listed twice"
        for service in snapshot.state.services:
            assert service.key in expected, service.key
            assert {(d.address, d.port) for d in service.dests} <= {("10.10.1.1", service.key.port)}, service
            # A service and its real servers come from two requests, as in ipvsadm: when a flush
            # and restore fall between them, the scheduler is one incarnation's and the weight the
            # next one's. The next poll is whole again (checked below, once the churn stops).
            torn += not {(service.scheduler, d.weight) for d in service.dests} <= expected[service.key]
            # Linux 6.1 answers the real-server dump of a service deleted since the service dump
            # with an empty list, not ESRCH: such a service shows for one poll with no real server.
            empty += not service.dests
        skipped = dict(snapshot.state.skipped)
        gone = skipped.pop(netlink.SKIP_VANISHED, 0)
        extra = skipped.pop(SKIP_LISTED_TWICE, 0)
        assert skipped == {}, skipped
        # every service the kernel listed is shown, or counted as vanished or as a second copy
        assert decoded == len(listed) + gone + extra, (decoded, len(listed), gone, extra)
        vanished += gone
        twice += extra
    churned = took()

    final = watcher.polled_after(time.time(), "a poll after the churn")
    assert final.error is None and final.state.skipped == {}
    listing = ref.parse_list(netns.run("ipvsadm -Ln").stdout)
    assert len(listing) == 1000
    shown = {
        s.key: (s.scheduler, {(d.address, d.port): (model.FORWARD_LABELS[d.forward], d.weight) for d in s.dests})
        for s in final.state.services
    }
    assert len(shown) == len(final.state.services)
    assert shown == {
        key: (s.scheduler, {address: (d.forward, d.weight) for address, d in s.dests.items()})
        for key, s in listing.items()
    }
    watcher.assert_still_polling()
    print(f"\nchurn: {rounds} replacements of 1,000 services in {seconds:.1f} s ({rounds / seconds:.2f}/s) "
          f"under {len(per_poll)} polls; {vanished} services counted as vanished, {twice} as listed twice, "
          f"{torn} shown torn between two incarnations, {empty} with no real server; the final poll equals ipvsadm -Ln "
          f"(set up in {setup}, churned until {churned}, {took()} in all; polls took "
          f"{min(s.poll_seconds for s, _ in per_poll):.1f}-{max(s.poll_seconds for s, _ in per_poll):.1f} s)")


# -- 3. the sync interface goes down in the middle of a resync ----------------------------------------

COUNT, RATE = 5000, 1000.0


@pytest.mark.parametrize(
    "where, command, reason",
    [
        ("a", "ip link set va down", "interface va is down"),
        ("b", "ip link set vb down", "interface va has no link"),  # the far end: va stays up, no carrier
        ("a", "ip link del va", "interface va is gone"),
    ],
    ids=["down", "no-link", "deleted"],
)
def test_resync_stops_in_one_line_when_the_sync_interface_fails(netns_pair, watch, took, where, command, reason):
    a, b = netns_pair
    b.run("ipvsadm --start-daemon backup --mcast-interface vb --syncid 10")
    watcher = watch(a.name)
    watcher.next(lambda s: s.error is None, "the first poll of a")
    synthetic = [
        model.Connection("TCP", f"198.51.100.{i % 250 + 1}", 20000 + i, "10.99.0.1", 80, "10.98.2.2", 8080,
                         "ESTABLISHED", 600)
        for i in range(COUNT)
    ]
    plan = build_plan(synthetic, (), SyncSettings("va", syncid=10, rate=RATE), netns=a.name)
    progress: queue.Queue[SendProgress] = queue.Queue()
    done = threading.Event()
    outcomes: list[JobOutcome] = []
    job = SyncJob.resync(plan, on_progress=progress.put, on_done=lambda o: (outcomes.append(o), done.set()))
    job.start()
    while progress.get(timeout=WAIT).connections < COUNT // 5:
        pass
    {"a": a, "b": b}[where].run(command)
    failed = time.monotonic()
    assert done.wait(30), "the resync did not stop within 30 s of the interface failing"
    stopped_in = time.monotonic() - failed
    job.join(5)
    assert not job.is_alive()

    (outcome,) = outcomes
    report = outcome.report
    assert not outcome.ok and "\n" not in outcome.message
    assert COUNT // 5 <= report.connections < COUNT
    assert outcome.message.startswith(f"sent {report.connections} connections in {report.messages} messages")
    assert outcome.message.endswith(f"; stopped after {report.connections} of {COUNT} connections: {reason}")
    installed = lambda: sum(1 for c in read_conn_table(b.name) if c.origin == "SYNC")  # noqa: E731
    if where == "a" and command.endswith("down"):
        # What left before the interface went down reached the backup, and nothing after; the one
        # message still in the interface's queue when it went down may be dropped with the queue.
        last_message = report.connections - report.timeline[-2][1] if len(report.timeline) > 1 else report.connections
        deadline = time.monotonic() + WAIT
        while installed() < report.connections and time.monotonic() < deadline:
            time.sleep(0.5)
        assert report.connections - last_message <= installed() <= report.connections
    else:
        # A veth drops what it sends while its peer is down, and the kernel notices the lost link
        # up to a second late (linkwatch): the backup may have fewer than were sent.
        assert installed() <= report.connections
    watcher.assert_still_polling()
    print(f"\nsync link {command!r} in {where}: {outcome.message.split('; ')[-1]}; the resync ended "
          f"{stopped_in:.2f} s later ({took()})")



def test_a_service_deleted_between_its_listing_and_its_real_servers_is_counted_not_shown(netns, monkeypatch):
    # Linux answers the real-server dump of a deleted service with an empty list: the poll asks
    # for the service itself before it shows a service with no real servers.
    netns.run("ipvsadm -A -t 10.7.0.1:80 -s rr && ipvsadm -a -t 10.7.0.1:80 -r 10.7.1.1:80 -m"
              " && ipvsadm -A -t 10.7.0.2:80 -s rr && ipvsadm -a -t 10.7.0.2:80 -r 10.7.1.2:80 -m")  # fmt: skip
    real_dests = netlink.IpvsSocket._dests

    def deleting_first(self, key, skipped):
        if key.address == "10.7.0.2":
            netns.run("ipvsadm -D -t 10.7.0.2:80")
        return real_dests(self, key, skipped)

    monkeypatch.setattr(netlink.IpvsSocket, "_dests", deleting_first)
    backend = KernelBackend(netns=netns.name)
    backend.open()
    try:
        state = backend.poll(connections=False)
    finally:
        backend.close()
    assert [s.key.address for s in state.services] == ["10.7.0.1"]
    assert state.skipped.get(netlink.SKIP_VANISHED) == 1
