"""Memory probe: a process that polls the IPVS of its namespace like the dashboard and keeps what it shows.

Run as `python -m ipvsman.bench.memory` inside the namespace to measure (the connections
benchmark does). It polls twice through the Poller (the dashboard holds the last snapshot while
the next one is built), applies each snapshot to a headless Dashboard, renders every view at
200x60 and ends on the connection view; then it prints one JSON line: RSS before the first
poll, peak RSS, and the sizes it held.
"""

from __future__ import annotations

import argparse
import json
import sys

from ipvsman.bench import current_rss_mb, peak_rss_mb
from ipvsman.kernel.backend import KernelBackend
from ipvsman.poller import Poller
from ipvsman.ui.app import Dashboard
from ipvsman.ui.audit import AuditLog

SIZE = (200, 60)


def headless_options(**overrides) -> argparse.Namespace:
    """The options the dashboard reads, as `ipvsman --no-resolve` would set them."""
    values = dict(read_only=True, weight_step=1, audit_log=None, colors=None, no_resolve=True, topology=None,
                  keepalived=None, interval=1.0, connections=True, netns=None)  # fmt: skip
    values.update(overrides)
    return argparse.Namespace(**values)


def main() -> int:
    before = current_rss_mb()
    backend = KernelBackend()
    backend.open()
    try:
        poller = Poller(backend, on_snapshot=lambda snapshot: None)
        dashboard = Dashboard(headless_options(), backend=backend, audit=AuditLog(None))
        snapshot = None
        for _ in range(2):
            snapshot = poller.poll_once()
            if snapshot.error:
                print(f"poll failed: {snapshot.error}", file=sys.stderr)
                return 1
            dashboard.apply_snapshot(snapshot)
            for view in dashboard.views:
                dashboard.show_view(view)
                dashboard.top.render(SIZE, focus=True)
        dashboard.show_view(dashboard.view_named("connections"))
        dashboard.top.render(SIZE, focus=True)
    finally:
        backend.close()
    print(json.dumps({
        "before_mb": before,
        "peak_mb": peak_rss_mb(),
        "rss_mb": current_rss_mb(),
        "services": len(snapshot.services),
        "dests": sum(len(service.dests) for service in snapshot.services),
        "connections": len(snapshot.connections),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
