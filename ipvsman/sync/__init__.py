"""Connection sync: the kernel's multicast sync protocol, resync of the table, sync test and monitor."""
