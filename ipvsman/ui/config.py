"""The configuration files the dashboard reads at start (topology, keepalived.conf) and the names it shows.

A file that cannot be read or has bad lines still runs the dashboard: its errors are one-line
`file:line: message` strings, kept for the status bar and view 5.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ipvsman import keepalived, topology
from ipvsman import names as names_module
from ipvsman.topology import ConfigError, Configuration, VrrpInstance
from ipvsman.ui.views import ConfigSummary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Configurations:
    """The topology (names, and the real servers `a` adds) and keepalived.conf (names, drift,
    VRRP instances); drift is measured against keepalived.conf when there is one, else the topology."""

    topology: Configuration | None = None
    keepalived: Configuration | None = None

    @property
    def drift_source(self) -> Configuration | None:
        """keepalived.conf, else the topology; one that configures no service at all (unreadable, or
        keepalived without virtual servers) would call every kernel service extra, so it is skipped."""
        for config in (self.keepalived, self.topology):
            if config is not None and config.services:
                return config
        return None

    @property
    def vrrp_instances(self) -> tuple[VrrpInstance, ...]:
        return self.keepalived.vrrp_instances if self.keepalived is not None else ()

    def loaded(self) -> list[Configuration]:
        return [config for config in (self.topology, self.keepalived) if config is not None]

    def errors(self) -> list[str]:
        return [str(error) for config in self.loaded() for error in config.errors]

    def summaries(self) -> list[ConfigSummary]:
        drift = self.drift_source
        found = []
        for config in self.loaded():
            uses = ["names"]
            if config is drift:
                uses.append("drift")
            if config is self.topology:
                uses.append("a (add)")
            if config is self.keepalived:
                uses += ["VRRP", "reload warnings"]
            label = "topology" if config is self.topology else "keepalived.conf"
            found.append(
                ConfigSummary(label, config.path, len(config.services), ", ".join(uses),
                              tuple(str(error) for error in config.errors))
            )  # fmt: skip
        return found


def _read(read: Callable[[str], Configuration], source: str, path: str) -> Configuration:
    try:
        return read(path)
    except Exception as exc:  # the parsers report bad input as errors; this is for the unexpected
        log.exception("reading %s failed", path)
        return Configuration(source, path, errors=(ConfigError(path, 0, f"cannot read: {exc}"),))


def load_configurations(options: argparse.Namespace, demo: bool) -> Configurations:
    """Read --topology and --keepalived (default: /etc/keepalived/keepalived.conf when present,
    never in the demo, whose made-up director it does not describe)."""
    topology_path = getattr(options, "topology", None)
    keepalived_path = getattr(options, "keepalived", None) or (None if demo else keepalived.default_path())
    return Configurations(
        topology=_read(topology.read_topology, "topology", topology_path) if topology_path else None,
        keepalived=_read(keepalived.read_keepalived, "keepalived", keepalived_path) if keepalived_path else None,
    )


def make_names(
    options: argparse.Namespace, demo: bool, on_update: Callable[[], None], configs: Configurations
) -> names_module.Names:
    """Names from the configurations, /etc/hosts and reverse DNS (never in the demo: its addresses are
    made up); shown unless --no-resolve."""
    resolver = names_module.NameResolver(lookup=None if demo else names_module.reverse_dns, on_update=on_update)
    names = names_module.Names(resolver, show=not getattr(options, "no_resolve", False))
    for config in configs.loaded():
        names.add_configuration(config)
    return names
