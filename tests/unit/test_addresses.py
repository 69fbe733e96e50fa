"""Addresses and ports as operators type them: ADDR:PORT, [ADDR6]:PORT, and the ambiguous fd00::1:80."""

from __future__ import annotations

import pytest

from ipvsman.model import split_host_port
from ipvsman.ui.views.connections import parse_endpoint


def test_an_unbracketed_ipv6_address_with_a_port_is_ambiguous_and_a_filter_reads_it_as_an_address():
    with pytest.raises(ValueError, match=r"ambiguous.*write \[fd00::1\]:80"):
        split_host_port("fd00::1:80")
    assert split_host_port("[fd00::1]:80") == ("fd00::1", 80)
    assert split_host_port("10.0.0.1:80") == ("10.0.0.1", 80)
    assert parse_endpoint("fd00::1:80") == ("fd00::1:80", None)
