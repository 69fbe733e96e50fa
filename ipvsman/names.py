"""Names for numbers: ports from the services database, hosts from configuration, /etc/hosts and reverse DNS.

Nothing here blocks the caller: `NameResolver.host` answers from its tables at once and queues
what it does not know for background threads, which bump `version` (and call `on_update`) when
new names arrive. `Names` is what the views call; its `show` flag is the `n` toggle.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from ipvsman.model import DestKey, ServiceKey, join_host_port

log = logging.getLogger(__name__)

HOSTS_PATH = "/etc/hosts"

HostLookup = Callable[[str], "str | None"]  # address -> name, or None; may block, may raise OSError
PortLookup = Callable[[int, str], str]  # socket.getservbyport: raises OSError when there is no name


def reverse_dns(address: str) -> str | None:
    """The system resolver's name for an address (PTR, NSS); None when it has none. Blocks."""
    try:
        return socket.gethostbyaddr(address)[0] or None
    except (OSError, UnicodeError):
        return None


def read_hosts(path: str = HOSTS_PATH) -> dict[str, str]:
    """address -> canonical name (the first name on its first line) of an /etc/hosts-style file.

    A missing or unreadable file gives no names; lines that are not ADDRESS NAME... are skipped.
    """
    names: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return names
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        address = normal_address(fields[0])
        if address is not None:
            names.setdefault(address, fields[1])
    return names


def normal_address(text: str) -> str | None:
    """The compressed text of an address (as model keys hold it); None when it is not one."""
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0]))
    except ValueError:
        return None


class PortNames:
    """Port -> service name through the services database (389 -> ldap), cached."""

    def __init__(self, lookup: PortLookup = socket.getservbyport):
        self._lookup = lookup
        self._cache: dict[tuple[int, str], str | None] = {}

    def name(self, port: int, protocol: str | None = "tcp") -> str | None:
        protocol = (protocol or "tcp").lower()
        key = (port, protocol)
        if key in self._cache:
            return self._cache[key]
        name = None
        if 0 < port <= 65535:
            # SCTP has few entries of its own; ports registered for TCP usually mean the same service.
            for candidate in (protocol, "tcp") if protocol == "sctp" else (protocol,):
                try:
                    name = self._lookup(port, candidate)
                    break
                except (OSError, OverflowError):
                    continue
        self._cache[key] = name
        return name


class NameResolver:
    """Address -> host name, never blocking the caller.

    Names come, in this order of precedence, from names injected from the configuration
    (topology or keepalived), from the hosts file, and from `lookup` (reverse DNS by default),
    which runs in background threads with a timeout per lookup. `lookup=None` disables DNS.
    Results are cached (failures too, for `retry_after` seconds); the cache and the queue are
    bounded. `on_update` is called from a resolver thread when a new name arrives: hand it to
    the UI with MainLoop.call_from_thread, and compare `version` to know what changed.
    """

    def __init__(
        self,
        lookup: HostLookup | None = reverse_dns,
        hosts_path: str | None = HOSTS_PATH,
        hosts: Mapping[str, str] | None = None,
        timeout: float = 2.0,
        queue_size: int = 256,
        workers: int = 2,
        max_lookups: int = 8,
        cache_size: int = 4096,
        retry_after: float = 300.0,
        refresh_after: float = 3600.0,
        on_update: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.lookup = lookup
        self.timeout = timeout
        self.retry_after = retry_after
        self.refresh_after = refresh_after
        self.on_update = on_update
        self.clock = clock
        self._hosts: dict[str, str] = read_hosts(hosts_path) if hosts_path else {}
        for address, name in (hosts or {}).items():
            normal = normal_address(address)
            if normal:
                self._hosts[normal] = name
        self._injected: dict[str, str] = {}
        self._cache: collections.OrderedDict[str, tuple[str | None, float]] = collections.OrderedDict()
        self._cache_size = cache_size
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=queue_size)
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._slots = threading.BoundedSemaphore(max_lookups)  # lookups running, stuck ones included
        self._worker_count = workers
        self._workers: list[threading.Thread] = []
        self._closed = False
        self._version = 0
        self.timeouts = 0  # lookups that took longer than `timeout`
        self.dropped = 0  # addresses not queued because the queue was full (asked again later)

    # -- called from the UI thread ---------------------------------------------------------
    @property
    def version(self) -> int:
        """Grows whenever a name is added or injected: redraw when it differs from the last one seen."""
        return self._version

    @property
    def dns_enabled(self) -> bool:
        return self.lookup is not None and not self._closed

    def host(self, address: str) -> str | None:
        """The name known for `address` now, or None; an unknown address is queued for lookup."""
        normal = normal_address(address)
        if normal is None:
            return None
        name = self._injected.get(normal) or self._hosts.get(normal)
        if name:
            return name
        with self._lock:
            cached = self._cache.get(normal)
            if cached is not None:
                self._cache.move_to_end(normal)
                name, expires = cached
                if self.clock() < expires:
                    return name
            # Unknown or stale: a stale name is still shown while it is looked up again.
            if self.dns_enabled and normal not in self._pending:
                self._enqueue(normal)
        return cached[0] if cached else None

    def inject(self, names: Mapping[str, str]) -> None:
        """Names from the configuration (topology, keepalived): they win over /etc/hosts and DNS."""
        changed = False
        for address, name in names.items():
            normal = normal_address(address)
            if normal and name and self._injected.get(normal) != name:
                self._injected[normal] = name
                changed = True
        if changed:
            self._version += 1

    def pending(self) -> int:
        """Addresses queued or being looked up."""
        with self._lock:
            return len(self._pending)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or being looked up (for tests and --once); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def close(self) -> None:
        """Stop the workers; a lookup stuck in the system resolver is left to finish on its own."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            dropped = list(self._pending)
            self._pending.clear()
            self._idle.notify_all()
        for _ in self._workers:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        log.debug("name resolver closed with %d lookups pending", len(dropped))

    # -- internals ---------------------------------------------------------------------------
    def _enqueue(self, address: str) -> None:
        """Called with the lock held."""
        try:
            self._queue.put_nowait(address)
        except queue.Full:
            self.dropped += 1  # asked again the next time a view shows it
            return
        self._pending.add(address)
        if len(self._workers) < self._worker_count:
            worker = threading.Thread(target=self._work, name=f"ipvsman-dns-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _work(self) -> None:
        while True:
            address = self._queue.get()
            if address is None or self._closed:
                return
            self._slots.acquire()
            lookup_thread = threading.Thread(
                target=self._look_up, args=(address,), name="ipvsman-dns-lookup", daemon=True
            )
            try:
                lookup_thread.start()
            except RuntimeError:  # no more threads to be had: treat it as a failed lookup
                self._slots.release()
                self._store(address, None, final=True)
                continue
            lookup_thread.join(self.timeout)
            if lookup_thread.is_alive():
                # gethostbyaddr cannot be interrupted: stop waiting, let the thread keep its slot
                # until it returns (which bounds the threads) and store its answer if one comes.
                self.timeouts += 1
                self._store(address, None, final=False)

    def _look_up(self, address: str) -> None:
        try:
            assert self.lookup is not None
            name = self.lookup(address)
        except Exception:  # a lookup function must not kill the resolver
            log.debug("lookup of %s failed", address, exc_info=True)
            name = None
        finally:
            self._slots.release()
        self._store(address, name or None, final=True)

    def _store(self, address: str, name: str | None, final: bool) -> None:
        """Record a lookup's answer (final) or its timeout (not final), and tell the UI of a change."""
        with self._lock:
            current = self._cache.get(address)
            previous = current[0] if current else None
            if name:
                entry = (name, self.clock() + self.refresh_after)
            elif final:
                entry = (None, self.clock() + self.retry_after)
            else:
                entry = (previous, self.clock() + self.retry_after)  # a timeout keeps what we had
            self._cache[address] = entry
            self._cache.move_to_end(address)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            changed = entry[0] != previous
            if changed:
                self._version += 1
            self._pending.discard(address)
            self._idle.notify_all()
        if changed and self.on_update is not None and not self._closed:
            try:
                self.on_update()
            except Exception:  # e.g. the UI loop has stopped (call_from_thread raises RuntimeError)
                log.debug("name update callback failed", exc_info=True)


class Names:
    """What the views call to label addresses, ports, services and real servers.

    With `show` off (the `n` key, or --no-resolve at start) everything is numeric and nothing is
    looked up. Configured names (topology, keepalived) come first, then the resolver's.
    """

    def __init__(self, resolver: NameResolver | None = None, ports: PortNames | None = None, show: bool = True):
        self.resolver = resolver
        self.ports = ports or PortNames()
        self.show = show
        self._service_names: dict[ServiceKey, str] = {}
        self._dest_names: dict[DestKey, str] = {}
        self._version = 0

    @property
    def version(self) -> int:
        """Changes whenever a label may have changed: toggles, new configuration, resolved names."""
        return self._version + (self.resolver.version if self.resolver else 0)

    def toggle(self) -> bool:
        """Switch between names and numbers; returns the new `show`."""
        self.show = not self.show
        self._version += 1
        return self.show

    def add_configuration(self, configuration) -> None:
        """Take service, real server and host names from a topology.Configuration (first definition wins)."""
        for key, name in configuration.service_names().items():
            self._service_names.setdefault(key, name)
        for key, name in configuration.dest_names().items():
            self._dest_names.setdefault(key, name)
        if self.resolver is not None:
            self.resolver.inject(configuration.host_names())
        self._version += 1

    def host(self, address: str) -> str:
        """A host name when names are shown and one is known, else the address."""
        if self.show and self.resolver is not None:
            return self.resolver.host(address) or address
        return address

    def port(self, port: int, protocol: str | None = "tcp") -> str:
        if self.show:
            return self.ports.name(port, protocol) or str(port)
        return str(port)

    def endpoint(self, address: str, port: int, protocol: str | None = "tcp") -> str:
        """ldap4:ldap with names, 10.10.10.201:389 (or [2001:db8::1]:389) with numbers."""
        if not self.show:
            return join_host_port(address, port)
        host = self.host(address)
        port_text = self.port(port, protocol)
        if host == address and ":" in address:
            return f"[{address}]:{port_text}"
        return f"{host}:{port_text}"

    def service_name(self, key: ServiceKey) -> str | None:
        """The configured name of a service, when names are shown."""
        return self._service_names.get(key) if self.show else None

    def dest_name(self, key: DestKey) -> str | None:
        """The configured name of a real server, else its host name, when names are shown."""
        if not self.show:
            return None
        return self._dest_names.get(key) or (self.resolver.host(key.address) if self.resolver else None)

    def service(self, key: ServiceKey) -> str:
        """MyService, or tcp www:http, or tcp 10.0.0.1:80 with numbers; FWM 5 for a firewall mark."""
        name = self.service_name(key)
        if name:
            return name
        if key.fwmark:
            return str(key)
        return f"{key.protocol} {self.endpoint(key.address, key.port, key.protocol)}"

    def dest(self, key: DestKey) -> str:
        """web3:http (the configured name replaces the host), or 10.3.0.12:8080 with numbers."""
        protocol = key.service.protocol
        configured = self._dest_names.get(key) if self.show else None
        if configured:
            return f"{configured}:{self.port(key.port, protocol)}"
        return self.endpoint(key.address, key.port, protocol)

    def hosts(self, addresses: Iterable[str]) -> dict[str, str]:
        """Labels of many addresses at once (a connection list); queues the unknown ones."""
        return {address: self.host(address) for address in addresses}
