"""ipvsman: a terminal dashboard for Linux IPVS (LVS) directors."""

__version__ = "0.1.0"
