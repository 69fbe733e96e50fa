"""The kernel backend: IPVS over generic netlink (pyroute2) and the connection table from /proc."""
