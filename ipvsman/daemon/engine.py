"""ipvsmand's asyncio core: one task per real server checks it, a reconciler holds IPVS to the plan, a writer keeps the state file.

Kernel I/O goes through a `kernel` object with two coroutines, `read_services()` and
`apply(action)` (ThreadedKernel runs ipvsman.kernel.apply in one thread of its own, so netlink
never blocks the checks); tests pass an in-memory one. Nothing here reads signals or arguments:
main.py does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ipvsman import __version__
from ipvsman.daemon import desired, health, statefile
from ipvsman.daemon.checks import Check, CheckConfigError, load_check, run_check
from ipvsman.daemon.history import History
from ipvsman.model import DestKey, join_host_port
from ipvsman.topology import CheckSpec, Configuration, ConfiguredDest, read_topology

log = logging.getLogger("ipvsmand")

MIN_WRITE_GAP = 0.2  # seconds between state file writes when states change in bursts


class ThreadedKernel:
    """ipvsman.kernel.apply's IpvsApplier in one thread of its own (pyroute2 sockets are per thread)."""

    def __init__(self):
        from ipvsman.kernel.apply import IpvsApplier

        self._applier = IpvsApplier()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipvsmand-kernel")

    async def read_services(self):
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._applier.read_services)

    async def apply(self, action: desired.Action) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._applier.apply, action)

    def close(self) -> None:
        self._pool.submit(self._applier.close)
        self._pool.shutdown(wait=True)


@dataclass
class Monitor:
    """One real server being checked: mutable, owned by the event loop."""

    key: DestKey
    dest: ConfiguredDest
    spec: CheckSpec
    check: Check
    health: health.Health
    applied_weight: int | None = None
    task: asyncio.Task | None = None

    def __str__(self) -> str:
        return f"{self.key.service} -> {join_host_port(self.key.address, self.key.port)}"


def dest_spec(dest: ConfiguredDest) -> CheckSpec:
    """A real server's check: the topology's, or a TCP connect of its address and port."""
    return dest.check if dest.check is not None else CheckSpec()


class Daemon:
    def __init__(
        self,
        topology_path: str,
        kernel,
        state_path: str | None = statefile.DEFAULT_PATH,
        history: History | None = None,
        heartbeat: float = 5.0,
        concurrency: int = 512,
        reconcile_every: float = 10.0,
        checks=None,
    ):
        self.topology_path = os.path.abspath(topology_path)
        self.kernel = kernel
        self.state_path = state_path
        self.history = history
        self.heartbeat = heartbeat
        self.reconcile_every = reconcile_every
        self.checks = checks  # None: every installed check plugin
        self.limit = asyncio.Semaphore(concurrency)
        self.configuration: Configuration | None = None
        self.monitors: dict[DestKey, Monitor] = {}
        self.errors: tuple[str, ...] = ()
        self.applied_at = 0.0
        self._reconcile_wanted = asyncio.Event()
        self._state_changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reconcile_lock = asyncio.Lock()
        self._background: list[asyncio.Task] = []
        self.checks_done = 0

    # -- topology ------------------------------------------------------------------------------

    def _monitors_for(self, configuration: Configuration, now: float) -> tuple[dict[DestKey, Monitor], list[str]]:
        """The monitors a configuration asks for; unchanged real servers keep their history."""
        monitors: dict[DestKey, Monitor] = {}
        errors: list[str] = []
        made: dict[CheckSpec, Check] = {}
        for service in configuration.services:
            for dest in service.dests:
                key = service.dest_key(dest)
                spec = dest_spec(dest)
                old = self.monitors.get(key)
                if old is not None and old.spec == spec:
                    check = old.check
                else:
                    check = made.get(spec)
                    if check is None:
                        try:
                            check = made[spec] = load_check(spec.check, dict(spec.params), self.checks)
                        except CheckConfigError as exc:
                            errors.append(f"{dest.origin}: {exc}")
                            continue
                suspended = dest.weight == 0
                if old is not None and old.spec == spec:
                    state = health.suspend(old.health, suspended, now)
                    monitors[key] = Monitor(key, dest, spec, check, state, old.applied_weight, old.task)
                else:
                    monitors[key] = Monitor(key, dest, spec, check, health.initial(spec.rise, spec.fall, now, suspended))
        return monitors, errors

    async def load(self) -> bool:
        """Read the topology and, if every line of it is good, make it the running one."""
        async with self._reload_lock:
            configuration = read_topology(self.topology_path)
            errors = [str(error) for error in configuration.errors]
            monitors, check_errors = self._monitors_for(configuration, time.time())
            errors += check_errors
            if errors:
                self.errors = tuple(errors)
                kept = "the running configuration stays" if self.configuration else "nothing applied"
                for error in errors:
                    log.error("topology refused: %s (%s)", error, kept)
                self._state_changed.set()
                return False
            try:
                with open(self.topology_path, encoding="utf-8", errors="replace") as handle:
                    text = handle.read()
            except OSError:
                text = ""
            for key, monitor in self.monitors.items():
                if key not in monitors or monitors[key].task is not monitor.task:
                    if monitor.task is not None:
                        monitor.task.cancel()
            self.configuration, self.monitors, self.errors = configuration, monitors, ()
            self.applied_at = time.time()
            log.info(
                "topology %s applied: %d services, %d real servers",
                self.topology_path, len(configuration.services), len(monitors),
            )  # fmt: skip
            actions = await self.reconcile()
            if self.history is not None:
                try:
                    version = self.history.record(self.topology_path, text, [str(action) for action in actions])
                except OSError as exc:
                    log.error("history: cannot record the topology: %s", os.strerror(exc.errno or 0))
                else:
                    if version is not None:
                        log.info("history: version %d kept in %s", version.number, self.history.directory)
            if not self._stopping.is_set() and self._background:
                self._start_monitors()
            self._state_changed.set()
            return True

    # -- checking ------------------------------------------------------------------------------

    def _start_monitors(self) -> None:
        for monitor in self.monitors.values():
            if monitor.task is None or monitor.task.done():
                monitor.task = asyncio.create_task(self._watch(monitor.key), name=f"check {monitor}")

    async def _watch(self, key: DestKey) -> None:
        """Check one real server every interval, at a fixed rate from a random phase (spreading load)."""
        monitor = self.monitors.get(key)
        if monitor is None:
            return
        await asyncio.sleep(random.uniform(0, min(monitor.spec.interval, 1.0)))
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._stopping.is_set():
            monitor = self.monitors.get(key)
            if monitor is None or (monitor.task is not None and monitor.task is not asyncio.current_task()):
                return  # removed, or replaced by a reload (even if its cancellation was lost)
            async with self.limit:
                result = await run_check(monitor.check, key.address, key.port, monitor.spec.timeout)
            self.checks_done += 1
            monitor = self.monitors.get(key)
            if monitor is None:
                return
            self._observe(monitor, result, time.time())
            next_at += monitor.spec.interval
            now = loop.time()
            if next_at < now:  # fell behind (a slow check): skip the missed rounds, not bunch them
                next_at = now
            await asyncio.sleep(next_at - now)

    def _observe(self, monitor: Monitor, result: health.CheckResult, now: float) -> None:
        before = monitor.health
        after = health.observe(before, result, now)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s %s %s ms", monitor, "ok" if result.ok else "failed", result.reason, result.latency_ms)
        monitor.health = after
        if after.state != before.state:
            why = f" ({result.reason})" if result.reason else ""
            log.info("%s: %s -> %s%s", monitor, before.state, after.state, why)
            self._state_changed.set()
        elif before.last is None or before.last.ok != result.ok or after.state in (health.RISING, health.FALLING):
            self._state_changed.set()  # "rising 2/3" is worth showing; "up, 7,000 good checks" is not
        if after.in_service != before.in_service:
            self._reconcile_wanted.set()

    # -- holding IPVS to the plan --------------------------------------------------------------

    def in_service(self, key: DestKey) -> bool:
        monitor = self.monitors.get(key)
        return monitor is None or monitor.health.in_service

    async def reconcile(self) -> list[desired.Action]:
        """Read IPVS, apply the plan; returns the actions that were carried out."""
        if self.configuration is None:
            return []
        async with self._reconcile_lock:
            try:
                kernel_services = await self.kernel.read_services()
            except Exception as exc:
                log.error("cannot read IPVS: %s", exc)
                return []
            actions = desired.plan(self.configuration.services, kernel_services, self.in_service)
            done: list[desired.Action] = []
            failed: set[DestKey] = set()
            for action in actions:
                try:
                    await self.kernel.apply(action)
                except Exception as exc:
                    log.error("refused: %s", exc)
                    if not isinstance(action, (desired.CreateService, desired.EditService)):
                        failed.add(DestKey(action.service, action.address, action.port))
                    continue
                log.info("applied: %s", action)
                done.append(action)
            for service in self.configuration.services:
                for dest in service.dests:
                    key = service.dest_key(dest)
                    monitor = self.monitors.get(key)
                    if monitor is not None and key not in failed:
                        weight = desired.desired_weight(dest, monitor.health.in_service)
                        if weight != monitor.applied_weight:
                            monitor.applied_weight = weight
                            self._state_changed.set()
            return done

    async def _reconciler(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._reconcile_wanted.wait(), self.reconcile_every)
            except TimeoutError:
                pass
            self._reconcile_wanted.clear()
            await self.reconcile()

    # -- the state file ------------------------------------------------------------------------

    def state(self, now: float | None = None) -> statefile.DaemonState:
        servers = []
        for monitor in self.monitors.values():
            state, last = monitor.health, monitor.health.last
            servers.append(
                statefile.RealServerState(
                    service=str(monitor.key.service),
                    address=monitor.key.address,
                    port=monitor.key.port,
                    state=state.state,
                    since=state.since,
                    good=state.good,
                    rise=state.rise,
                    bad=state.bad,
                    fall=state.fall,
                    check=monitor.spec.check,
                    last_check_at=state.last_check_at,
                    last_ok=None if last is None else last.ok,
                    reason="" if last is None else last.reason,
                    latency_ms=None if last is None else last.latency_ms,
                    configured_weight=monitor.dest.weight,
                    applied_weight=monitor.applied_weight,
                    action=desired.failure_action(monitor.dest),
                )
            )
        return statefile.DaemonState(
            ipvsmand=statefile.SCHEMA,
            version=__version__,
            pid=os.getpid(),
            topology=self.topology_path,
            applied_at=self.applied_at,
            written_at=time.time() if now is None else now,
            heartbeat=self.heartbeat,
            errors=self.errors,
            real_servers=tuple(servers),
        )

    def write_state(self) -> None:
        self._write(self.state())

    def _write(self, state: statefile.DaemonState) -> None:
        if self.state_path is None:
            return
        try:
            statefile.write_state(self.state_path, state)
        except OSError as exc:
            log.error("cannot write the state file %s: %s", self.state_path, os.strerror(exc.errno or 0))

    async def _writer(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._state_changed.wait(), self.heartbeat)
            except TimeoutError:
                pass
            self._state_changed.clear()
            # fsync can take a second on a busy disk: never in the loop that runs the checks.
            state = self.state()
            await asyncio.get_running_loop().run_in_executor(None, self._write, state)
            await asyncio.sleep(MIN_WRITE_GAP)

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> int:
        """Apply the topology and check until stop(); 1 when the first topology is refused."""
        if not await self.load():
            self.write_state()
            return 1
        self._background = [
            asyncio.create_task(self._reconciler(), name="reconciler"),
            asyncio.create_task(self._writer(), name="state writer"),
        ]
        self._start_monitors()
        self.write_state()
        await self._stopping.wait()
        pending = set(self._background + [m.task for m in self.monitors.values() if m.task is not None])
        while pending:
            # Python 3.11's wait_for can lose a cancellation that arrives as the check ends: cancel again.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        return 0

    def stop(self) -> None:
        """Stop checking; IPVS is left exactly as it is."""
        self._stopping.set()

    def request_reload(self) -> None:
        asyncio.get_running_loop().create_task(self.load(), name="reload")
